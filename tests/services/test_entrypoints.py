"""Every service process starts from its container entry point (`python -m services.NAME`),
answers grpc.health.v1 SERVING, lists its API through reflection, dead-letters malformed
records on each of its input topics, and drains cleanly on SIGTERM."""

import socket
import time

import pytest
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from kafka import KafkaConsumer, KafkaProducer

from embedforge.v1 import messages_pb2 as pb
from libs import topics
from libs.kafka import physical_name
from libs.local.runtime import SERVICES, LocalRuntime

INPUT_TOPICS = {
    "taskgen": [topics.JOBS],
    "examplegen": [topics.TASKS, topics.CORPUS_CHUNKS],
    "curator": [topics.EXAMPLES_RAW],
    "trainer": [topics.EXAMPLES_CURATED],
    "embedder": [topics.MODELS, topics.DOCUMENTS],
}
API = {
    "taskgen": "embedforge.v1.TaskgenService",
    "examplegen": "embedforge.v1.ExamplegenService",
    "curator": "embedforge.v1.CuratorService",
    "trainer": "embedforge.v1.TrainerService",
    "embedder": "embedforge.v1.EmbedderService",
}


@pytest.fixture(scope="module")
def runtime(broker, tmp_path_factory):
    local = LocalRuntime(tmp_path_factory.mktemp("run"), topic_prefix="entry.")
    local.start_broker(broker)
    for name in SERVICES:
        local.start_service(name)
    yield local
    for name in list(local.processes):
        local.stop_service(name)


def test_every_service_has_an_entry_point_and_an_api():
    assert set(SERVICES) == set(INPUT_TOPICS) == set(API)


@pytest.mark.parametrize("name", SERVICES)
def test_service_reports_serving_and_reflects_its_api(runtime, name):
    runtime.wait_healthy(name)
    with runtime.channel(name) as channel:
        listed = ProtoReflectionDescriptorDatabase(channel).get_services()
    assert API[name] in listed
    assert "grpc.health.v1.Health" in listed


def test_malformed_records_on_every_input_topic_are_dead_lettered_by_their_consumer(runtime):
    for name in SERVICES:
        runtime.wait_healthy(name)
    settings = runtime.kafka_settings
    raw = KafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    expected = set()
    for name, inputs in INPUT_TOPICS.items():
        for topic in inputs:
            for attempt in ("first", "second"):  # the second proves the consumer kept going
                key = f"{name}:{topic.name}:{attempt}"
                raw.send(physical_name(settings, topic), key=key.encode(), value=b"\x08\x96\x01 not a protobuf of this type")
                # Consumer groups are prefixed like topics; each embedder replica reads model events in its own group.
                group = f"embedder-models-{socket.gethostname()}" if (name, topic) == ("embedder", topics.MODELS) else name
                expected.add((settings.topic_prefix + group, key))
    raw.flush()
    consumer = KafkaConsumer(physical_name(settings, topics.DEAD_LETTER), bootstrap_servers=settings.bootstrap_servers, auto_offset_reset="earliest", consumer_timeout_ms=500)
    seen, deadline = set(), time.monotonic() + 90
    while not expected <= seen and time.monotonic() < deadline:
        for record in consumer:
            letter = pb.DeadLetter.FromString(record.value)
            assert letter.reason == "missing_message_type" and letter.detail
            seen.add((letter.consumer_group, record.key.decode()))
    assert expected <= seen


@pytest.mark.parametrize("name", SERVICES)
def test_service_exits_cleanly_on_sigterm(runtime, name):
    runtime.wait_healthy(name)
    assert runtime.stop_service(name) == 0
