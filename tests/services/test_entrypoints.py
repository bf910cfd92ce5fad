"""Every service process starts from its container entry point (`python -m services.NAME`),
answers grpc.health.v1 SERVING, lists its API through reflection, dead-letters malformed
records on each topic its consumer groups read (six kinds of poison), and drains cleanly on SIGTERM."""

import random
import socket
import time

import pytest
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from kafka import KafkaConsumer, KafkaProducer

from embedforge.v1 import messages_pb2 as pb
from libs import topics
from libs.kafka import HEADER_MESSAGE_TYPE, HEADER_SCHEMA_VERSION, SCHEMA_VERSION, physical_name
from libs.local.runtime import SERVICES, LocalRuntime

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
    assert set(SERVICES) == set(topics.SERVICES) == set(API)


@pytest.mark.parametrize("name", SERVICES)
def test_service_reports_serving_and_reflects_its_api(runtime, name):
    runtime.wait_healthy(name)
    with runtime.channel(name) as channel:
        listed = ProtoReflectionDescriptorDatabase(channel).get_services()
    assert API[name] in listed
    assert "grpc.health.v1.Health" in listed


def poison_records(topic: topics.Topic) -> dict[str, tuple[list[tuple[str, bytes]], bytes, str]]:
    """Malformed records for a topic: (headers, value, the dead-letter reason expected)."""
    own = [
        (HEADER_MESSAGE_TYPE, topic.message_type.DESCRIPTOR.full_name.encode()),
        (HEADER_SCHEMA_VERSION, SCHEMA_VERSION.encode()),
    ]
    other_type = pb.DeadLetter if topic.message_type is not pb.DeadLetter else pb.Job
    other = other_type.DESCRIPTOR.full_name.encode()
    stranger = pb.DeadLetter(
        source_topic="x",
        partition=7,
        offset=9,
        key=b"k",
        value=b"\x00" * 40,
        consumer_group="g",
        reason="r",
        detail="d",
        headers={"a": "b"},
    )
    stranger.failed_at.GetCurrentTime()
    if other_type is pb.Job:
        stranger = pb.Job(job_id="not-a-dead-letter", spec=pb.JobSpec(domain="d" * 40, corpus_queries=3))
    valid = stranger.SerializeToString()
    return {
        "no_header": ([], b"\x08\x96\x01 not a protobuf of this type", "missing_message_type"),
        "random_bytes": (own, bytes(random.Random(topic.name).randrange(256) for _ in range(64)) + b"\x07", "undecodable"),
        "truncated": (own, valid[: len(valid) // 2 + 1], "undecodable"),
        "wrong_type_declared": (
            [(HEADER_MESSAGE_TYPE, other), (HEADER_SCHEMA_VERSION, SCHEMA_VERSION.encode())],
            valid,
            "wrong_message_type",
        ),
        "wrong_type_lying_header": (own, valid, "undecodable"),
        "empty": (own, b"", "undecodable"),
    }


def test_poison_records_on_every_consumed_topic_are_dead_lettered_by_every_consumer_alike(runtime):
    for name in SERVICES:
        runtime.wait_healthy(name)
    settings = runtime.kafka_settings
    raw = KafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    groups = [group for service in SERVICES for group in topics.SERVICES[service].groups]
    consumed = {topic for group in groups for topic in group.topics}
    assert len(consumed) >= 9, "every topic some service consumes"
    expected = {}
    for topic in consumed:
        for kind, (headers, value, reason) in poison_records(topic).items():
            key = f"{topic.name}:{kind}"
            raw.send(physical_name(settings, topic), key=key.encode(), value=value, headers=headers)
            for group in groups:
                if topic in group.topics:
                    # Groups are prefixed like topics; each embedder replica reads model events in its own group.
                    group_id = group.for_replica(socket.gethostname()).id if group.per_replica else group.id
                    expected[(settings.topic_prefix + group_id, key)] = reason
    raw.flush()
    consumer = KafkaConsumer(
        physical_name(settings, topics.DEAD_LETTER),
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        consumer_timeout_ms=500,
    )
    seen, deadline = {}, time.monotonic() + 120
    while not set(expected) <= set(seen) and time.monotonic() < deadline:
        for record in consumer:
            letter = pb.DeadLetter.FromString(record.value)
            assert letter.detail
            seen[(letter.consumer_group, record.key.decode())] = letter.reason
    missing = sorted(set(expected) - set(seen))
    assert not missing, f"{len(missing)} poison records not dead-lettered, e.g. {missing[:5]}"
    assert {k: seen[k] for k in expected} == expected
