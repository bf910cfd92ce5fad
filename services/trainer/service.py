"""Consumes curated examples; counts them per job."""

import threading
from collections import Counter

from embedforge.v1 import trainer_pb2 as api
from embedforge.v1 import trainer_pb2_grpc as api_grpc
from libs import topics
from libs.grpc import GrpcService
from libs.kafka import ConsumerLoop, Outgoing, ProtoProducer, Received, Subscription, per_message
from libs.service import ServiceParts
from services.trainer.settings import TrainerSettings


class TrainerServicer(api_grpc.TrainerServiceServicer):
    def __init__(self):
        self.curated: Counter[str] = Counter()
        self.lock = threading.Lock()

    def record_curated(self, record: Received) -> list[Outgoing]:
        with self.lock:
            self.curated[record.message.job_id] += 1
        return []

    def ListModels(self, request: api.ListModelsRequest, context) -> api.ListModelsResponse:
        return api.ListModelsResponse()


def build(settings: TrainerSettings) -> ServiceParts:
    producer = ProtoProducer(settings.kafka, client_id="trainer")
    servicer = TrainerServicer()
    return ServiceParts(
        grpc_services=[GrpcService(api_grpc.add_TrainerServiceServicer_to_server, servicer, api.DESCRIPTOR.services_by_name["TrainerService"].full_name)],
        consumers=[ConsumerLoop(settings.kafka, "trainer", [Subscription(topics.EXAMPLES_CURATED, per_message(servicer.record_curated))], producer)],
        producer=producer,
    )
