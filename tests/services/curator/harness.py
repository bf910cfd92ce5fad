"""Curator test harness: topics, an in-process curator (real consumer loops, real gRPC server),
and readers that wait for every example's outcome on the curated/rejected topics."""

import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from kafka import KafkaConsumer

from embedforge.v1 import curator_pb2_grpc as api_grpc
from embedforge.v1 import messages_pb2 as pb
from libs import topics
from libs.grpc import GrpcServer, traced_channel
from libs.kafka import ProtoProducer, ensure_topics, physical_name
from libs.service import ServiceParts
from libs.settings import KafkaSettings
from libs.topics import Topic
from services.curator.service import build
from services.curator.settings import CuratorSettings

PARTITIONS = 3


def isolated_kafka(broker) -> KafkaSettings:
    settings = KafkaSettings(
        bootstrap_servers=broker.bootstrap,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        topic_prefix=f"t{uuid.uuid4().hex[:8]}.",
    )
    ensure_topics(settings, partitions=PARTITIONS)
    return settings


def curator_settings(kafka: KafkaSettings, state_dir, **overrides) -> CuratorSettings:
    return CuratorSettings(kafka=kafka, state_dir=str(state_dir), grpc_host="127.0.0.1", grpc_port=0, **overrides)


@dataclass
class RunningCurator:
    settings: CuratorSettings
    parts: ServiceParts
    server: GrpcServer

    def stub(self) -> api_grpc.CuratorServiceStub:
        return api_grpc.CuratorServiceStub(traced_channel(f"127.0.0.1:{self.server.port}"))


class InProcessCurator:
    """The service's own parts (build()), run in threads the way libs.service runs them."""

    def __init__(self, settings: CuratorSettings):
        self.parts = build(settings)
        self.server = GrpcServer(self.parts.grpc_services, settings.grpc_host, settings.grpc_port)
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=c.run, args=(self.stop,), daemon=True) for c in self.parts.consumers]
        self.running = RunningCurator(settings, self.parts, self.server)

    def __enter__(self) -> RunningCurator:
        self.server.start()
        self.server.set_serving(True)
        for thread in self.threads:
            thread.start()
        for consumer in self.parts.consumers:
            assert consumer.ready.wait(60), f"{consumer.group_id} got no partitions"
        return self.running

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)
        self.server.stop(0)
        for hook in self.parts.on_shutdown:
            hook()
        self.parts.producer.close()


def send(kafka: KafkaSettings, examples: Iterable[pb.RawExample]) -> None:
    producer = ProtoProducer(kafka, client_id="test")
    for example in examples:
        producer.send(topics.EXAMPLES_RAW, example.example_id, example)
    producer.flush()
    producer.close()


class TopicReader:
    """Accumulates (key, message) of a topic from the beginning, across calls."""

    def __init__(self, kafka: KafkaSettings, topic: Topic):
        self.topic = topic
        self.consumer = KafkaConsumer(
            physical_name(kafka, topic),
            bootstrap_servers=kafka.bootstrap_servers,
            auto_offset_reset="earliest",
            consumer_timeout_ms=300,
            fetch_max_bytes=kafka.max_message_bytes,
            max_partition_fetch_bytes=kafka.max_message_bytes,
        )
        self.records: list[tuple[str, object]] = []

    def read(self) -> list[tuple[str, object]]:
        for record in self.consumer:
            self.records.append((record.key.decode(), self.topic.message_type.FromString(record.value)))
        return self.records


class Outcomes:
    """Per example id: "accepted" or the reject reason, read from the output topics."""

    def __init__(self, kafka: KafkaSettings):
        self.curated = TopicReader(kafka, topics.EXAMPLES_CURATED)
        self.rejected = TopicReader(kafka, topics.EXAMPLES_REJECTED)

    def read(self) -> dict[str, list[str]]:
        outcomes: dict[str, list[str]] = {}
        for _, example in self.curated.read():
            outcomes.setdefault(example.provenance.example_id, []).append("accepted")
        for _, example in self.rejected.read():
            outcomes.setdefault(example.example_id, []).append(example.reason)
        return outcomes

    def wait_for(self, example_ids: Iterable[str], timeout_s: float = 60.0) -> dict[str, list[str]]:
        wanted, deadline = set(example_ids), time.monotonic() + timeout_s
        while True:
            outcomes = self.read()
            missing = wanted - set(outcomes)
            if not missing:
                return outcomes
            assert time.monotonic() < deadline, f"no outcome for {len(missing)} examples, e.g. {sorted(missing)[:3]}"
            time.sleep(0.2)
