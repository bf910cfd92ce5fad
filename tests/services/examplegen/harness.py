"""Running a service in-process against the real broker (its build(): real consumer loops
and producer), and reading what it published."""

import threading
import time
from collections.abc import Callable

from kafka import KafkaConsumer

from libs.grpc import GrpcServer, traced_channel
from libs.kafka import ProtoProducer, physical_name
from libs.service import ServiceParts
from libs.settings import KafkaSettings
from libs.topics import Topic


class Running:
    """A service's gRPC server (loopback) and consumer loops on threads until stop()."""

    def __init__(self, parts: ServiceParts):
        self.parts = parts
        self.server = GrpcServer(parts.grpc_services, "127.0.0.1", 0)
        self.stop_event = threading.Event()
        self.threads = [threading.Thread(target=c.run, args=(self.stop_event,), daemon=True) for c in parts.consumers]

    def channel(self):
        return traced_channel(f"127.0.0.1:{self.server.port}")

    def __enter__(self) -> "Running":
        self.server.start()
        for thread in self.threads:
            thread.start()
        deadline = time.monotonic() + 60
        while not all(c.ready.is_set() for c in self.parts.consumers):
            assert time.monotonic() < deadline, "consumers did not join their group"
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        self.stop_event.set()
        for hook in self.parts.on_stop:
            hook()
        self.server.stop(1.0)
        for thread in self.threads:
            thread.join(timeout=30)
        for hook in self.parts.on_shutdown:
            hook()
        if self.parts.producer is not None:
            self.parts.producer.flush()
            self.parts.producer.close()

    def __exit__(self, *exc) -> None:
        self.stop()


class TopicReader:
    """Reads a topic from the beginning and keeps every (key, message)."""

    def __init__(self, settings: KafkaSettings, topic: Topic):
        self.topic = topic
        self.consumer = KafkaConsumer(
            physical_name(settings, topic),
            **settings.client_kwargs(),
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
        )
        self.items: list[tuple[str, object]] = []

    def poll(self) -> None:
        for records in self.consumer.poll(timeout_ms=200).values():
            for record in records:
                self.items.append((record.key.decode(), self.topic.message_type.FromString(record.value)))

    def wait_for(self, done: Callable[[list], bool], timeout_s: float = 120.0) -> list:
        deadline = time.monotonic() + timeout_s
        while not done(self.messages()):
            assert time.monotonic() < deadline, f"timed out waiting on {self.topic.name}; have {len(self.items)}"
            self.poll()
        return self.messages()

    def settle(self, seconds: float = 2.0) -> list:
        """Everything that arrives within ``seconds`` (to check nothing more comes)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.poll()
        return self.messages()

    def messages(self) -> list:
        return [m for _, m in self.items]

    def close(self) -> None:
        self.consumer.close()


def send(settings: KafkaSettings, topic: Topic, key: str, message) -> None:
    producer = ProtoProducer(settings, client_id="test")
    producer.send_and_wait(topic, key, message)
    producer.close()
