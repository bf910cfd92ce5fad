"""At-least-once delivery: a forwarding consumer SIGKILLed between producing and committing
loses nothing; after idempotent-key dedup every input appears exactly once."""

import subprocess
import sys
import time
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition

from embedforge.v1 import messages_pb2 as pb
from libs import topics
from libs.kafka import ProtoProducer, physical_name
from libs.local.runtime import python_env

INPUTS = 300
FORWARDER = Path(__file__).with_name("forwarder.py")


def start_forwarder(settings, delay_s: float) -> subprocess.Popen:
    env = {**python_env(), "FORWARDER_DELAY_S": str(delay_s)}
    return subprocess.Popen([sys.executable, str(FORWARDER), settings.model_dump_json()], env=env)


class CommittedOffsets:
    """Reads the forwarder group's committed offsets without joining the group."""

    def __init__(self, settings):
        self.consumer = KafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers, group_id=settings.topic_prefix + "forwarder", enable_auto_commit=False
        )
        name = physical_name(settings, topics.TASKS)
        self.partitions = [TopicPartition(name, p) for p in self.consumer.partitions_for_topic(name)]

    def total(self) -> int:
        return sum(self.consumer.committed(tp) or 0 for tp in self.partitions)


class OutputReader:
    def __init__(self, settings):
        self.consumer = KafkaConsumer(
            physical_name(settings, topics.EXAMPLES_RAW),
            bootstrap_servers=settings.bootstrap_servers,
            auto_offset_reset="earliest",
            consumer_timeout_ms=100,
        )
        self.keys: list[str] = []

    def read(self) -> list[str]:
        self.keys.extend(r.key.decode() for r in self.consumer)
        return self.keys


def test_sigkilled_consumer_resumes_from_committed_offset_without_loss(kafka_settings):
    producer = ProtoProducer(kafka_settings, client_id="test")
    inputs = [f"task-{i:03d}" for i in range(INPUTS)]
    for task_id in inputs:
        producer.send(topics.TASKS, task_id, pb.Task(task_id=task_id))
    producer.flush()
    settings = kafka_settings.model_copy(update={"max_poll_records": 40})
    outputs = OutputReader(settings)
    committed = CommittedOffsets(settings)

    forwarder = start_forwarder(settings, delay_s=0.05)
    deadline = time.monotonic() + 60
    while True:  # kill once outputs exist that are not yet covered by a commit
        assert forwarder.poll() is None, "forwarder exited early"
        produced, committed_now = len(outputs.read()), committed.total()
        if produced >= 60 and produced > committed_now:
            forwarder.kill()
            forwarder.wait()
            break
        assert time.monotonic() < deadline, f"no kill point seen (produced={produced}, committed={committed_now})"
    committed_at_kill = committed.total()
    assert committed_at_kill < INPUTS, "the kill must happen mid-stream"

    forwarder = start_forwarder(settings, delay_s=0)
    try:
        deadline = time.monotonic() + 90
        while set(outputs.read()) != set(inputs):
            assert time.monotonic() < deadline, f"missing after restart: {len(set(inputs) - set(outputs.keys))}"
            time.sleep(0.2)
    finally:
        forwarder.kill()
        forwarder.wait()

    assert len(outputs.keys) >= INPUTS  # at-least-once: replays are allowed ...
    assert sorted(set(outputs.keys)) == sorted(inputs)  # ... and idempotent keys make it exactly once
    assert len(outputs.keys) - INPUTS <= INPUTS - committed_at_kill  # only uncommitted records replay
