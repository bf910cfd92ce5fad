"""Consumes raw examples; counts them per job."""

import threading
from collections import Counter

from embedforge.v1 import curator_pb2 as api
from embedforge.v1 import curator_pb2_grpc as api_grpc
from libs import topics
from libs.grpc import GrpcService
from libs.kafka import ConsumerLoop, Outgoing, ProtoProducer, Received, Subscription, per_message
from libs.service import ServiceParts
from services.curator.settings import CuratorSettings


class CuratorServicer(api_grpc.CuratorServiceServicer):
    def __init__(self):
        self.received: Counter[str] = Counter()
        self.lock = threading.Lock()

    def record_raw(self, record: Received) -> list[Outgoing]:
        with self.lock:
            self.received[record.message.job_id] += 1
        return []

    def GetDatasetStats(self, request: api.GetDatasetStatsRequest, context) -> api.GetDatasetStatsResponse:
        return api.GetDatasetStatsResponse(job_id=request.job_id)


def build(settings: CuratorSettings) -> ServiceParts:
    producer = ProtoProducer(settings.kafka, client_id="curator")
    servicer = CuratorServicer()
    return ServiceParts(
        grpc_services=[GrpcService(api_grpc.add_CuratorServiceServicer_to_server, servicer, api.DESCRIPTOR.services_by_name["CuratorService"].full_name)],
        consumers=[ConsumerLoop(settings.kafka, "curator", [Subscription(topics.EXAMPLES_RAW, per_message(servicer.record_raw))], producer)],
        producer=producer,
    )
