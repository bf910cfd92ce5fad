"""Consumes model-ready events and documents; counts them."""

import threading
from collections import Counter

from embedforge.v1 import embedder_pb2 as api
from embedforge.v1 import embedder_pb2_grpc as api_grpc
from libs import topics
from libs.grpc import GrpcService
from libs.kafka import ConsumerLoop, Outgoing, ProtoProducer, Received, Subscription, per_message
from libs.service import ServiceParts
from services.embedder.settings import EmbedderSettings


class EmbedderServicer(api_grpc.EmbedderServiceServicer):
    def __init__(self):
        self.received: Counter[str] = Counter()
        self.lock = threading.Lock()

    def record(self, record: Received) -> list[Outgoing]:
        with self.lock:
            self.received[record.topic.name] += 1
        return []


def build(settings: EmbedderSettings) -> ServiceParts:
    producer = ProtoProducer(settings.kafka, client_id="embedder")
    servicer = EmbedderServicer()
    subscriptions = [Subscription(t, per_message(servicer.record)) for t in (topics.MODELS, topics.DOCUMENTS)]
    return ServiceParts(
        grpc_services=[GrpcService(api_grpc.add_EmbedderServiceServicer_to_server, servicer, api.DESCRIPTOR.services_by_name["EmbedderService"].full_name)],
        consumers=[ConsumerLoop(settings.kafka, "embedder", subscriptions, producer)],
        producer=producer,
    )
