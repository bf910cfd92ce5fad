"""Consumes tasks and corpus chunks; counts what it is asked to generate."""

import threading
from collections import Counter

from embedforge.v1 import examplegen_pb2 as api
from embedforge.v1 import examplegen_pb2_grpc as api_grpc
from libs import topics
from libs.grpc import GrpcService
from libs.kafka import ConsumerLoop, Outgoing, ProtoProducer, Received, Subscription, per_message
from libs.service import ServiceParts
from services.examplegen.settings import ExamplegenSettings


class ExamplegenServicer(api_grpc.ExamplegenServiceServicer):
    def __init__(self):
        self.requested: Counter[str] = Counter()
        self.lock = threading.Lock()

    def record_request(self, record: Received) -> list[Outgoing]:
        with self.lock:
            self.requested[record.message.job_id] += max(1, getattr(record.message, "num_examples", 0) or getattr(record.message, "num_queries", 0))
        return []

    def GetGenerationStats(self, request: api.GetGenerationStatsRequest, context) -> api.GetGenerationStatsResponse:
        with self.lock:
            requested = self.requested[request.job_id] if request.job_id else sum(self.requested.values())
        return api.GetGenerationStatsResponse(job_id=request.job_id, requested=requested)


def build(settings: ExamplegenSettings) -> ServiceParts:
    producer = ProtoProducer(settings.kafka, client_id="examplegen")
    servicer = ExamplegenServicer()
    subscriptions = [Subscription(t, per_message(servicer.record_request)) for t in (topics.TASKS, topics.CORPUS_CHUNKS)]
    return ServiceParts(
        grpc_services=[GrpcService(api_grpc.add_ExamplegenServiceServicer_to_server, servicer, api.DESCRIPTOR.services_by_name["ExamplegenService"].full_name)],
        consumers=[ConsumerLoop(settings.kafka, "examplegen", subscriptions, producer)],
        producer=producer,
    )
