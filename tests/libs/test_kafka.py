"""The Kafka layer against a real tansu broker: serde, headers, dead-letter path."""

import threading
import time
import uuid

import pytest
from kafka import KafkaConsumer, KafkaProducer

from embedforge.v1 import messages_pb2 as pb
from libs import topics
from libs.kafka import (
    HEADER_MESSAGE_TYPE,
    HEADER_SCHEMA_VERSION,
    ConsumerLoop,
    MissingTopicsError,
    Outgoing,
    ProtoProducer,
    Received,
    Subscription,
    decode_headers,
    decode_value,
    ensure_topics,
    per_message,
    physical_name,
    require_topics,
)
from libs.topics import ConsumerGroup

SAMPLES = {
    topics.JOBS: pb.Job(
        job_id="j1", spec=pb.JobSpec(domain="clinical trials", languages=[pb.LanguageWeight(language="en", weight=1.0)])
    ),
    topics.TASKS: pb.Task(
        task_id="t1", job_id="j1", category=pb.CATEGORY_RETRIEVAL, description="Find trial protocols", num_examples=4
    ),
    topics.CORPUS_CHUNKS: pb.CorpusChunk(chunk_id="c1", job_id="j1", doc_id="d1", text="Aspirin lowers fever.", num_queries=2),
    topics.EXAMPLES_RAW: pb.RawExample(
        example_id="e1",
        job_id="j1",
        attributes={"language": "en"},
        raw_output='{"user_query": "q"}',
        usage=pb.LlmUsage(model="local/x", prompt_tokens=10),
    ),
    topics.EXAMPLES_CURATED: pb.CuratedExample(
        content_hash="h1", job_id="j1", query="q", positives=["p"], negatives=["n1", "n2"], language="zh"
    ),
    topics.EXAMPLES_REJECTED: pb.RejectedExample(
        example_id="e2", job_id="j1", reason="invalid_json", original_payload=b"\x00\xff"
    ),
    topics.MODELS: pb.ModelReady(
        model_id="m1",
        uri="s3://bucket/models/m1",
        manifest_digest="ab" * 32,
        dimensions=384,
        evals=[pb.EvalResult(dataset="dev", metric="ndcg@10", base=0.5, tuned=0.6)],
    ),
    topics.DOCUMENTS: pb.Document(
        doc_id="d1", collection="docs", text="Paris is the capital of France.", metadata={"lang": "en"}
    ),
    topics.DEAD_LETTER: pb.DeadLetter(source_topic="forge.tasks", reason="undecodable", value=b"junk"),
    topics.CURATOR_CANDIDATES: pb.CurationCandidate(
        example=pb.CuratedExample(content_hash="h1", job_id="j1", query="q"), original_payload=b"{}"
    ),
    topics.CURATOR_DEDUP_LOG: pb.CuratedExample(content_hash="h1", job_id="j1", query="q", positives=["p"]),
}


def consume_all(settings, topic, expected: int, timeout_s: float = 20.0):
    consumer = KafkaConsumer(
        physical_name(settings, topic),
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        consumer_timeout_ms=500,
    )
    records, deadline = [], time.monotonic() + timeout_s
    while len(records) < expected and time.monotonic() < deadline:
        records.extend(consumer)
    consumer.close()
    return records


def test_every_topic_message_type_has_a_sample():
    assert set(SAMPLES) == set(topics.ALL_TOPICS)


@pytest.mark.parametrize("topic", topics.ALL_TOPICS, ids=lambda t: t.name)
def test_message_round_trips_through_the_broker_with_type_and_version_headers(kafka_settings, topic):
    producer = ProtoProducer(kafka_settings, client_id="test")
    producer.send_and_wait(topic, "key-1", SAMPLES[topic])
    (record,) = consume_all(kafka_settings, topic, expected=1)
    headers = decode_headers(record.headers)
    assert headers[HEADER_MESSAGE_TYPE] == topic.message_type.DESCRIPTOR.full_name
    assert headers[HEADER_SCHEMA_VERSION] == "1"
    assert record.key == b"key-1"
    assert decode_value(topic, headers, record.value) == SAMPLES[topic]


def test_require_topics_names_every_missing_topic(kafka_settings):
    require_topics(kafka_settings, topics.ALL_TOPICS)
    empty = kafka_settings.model_copy(update={"topic_prefix": f"missing{uuid.uuid4().hex[:6]}."})
    ensure_topics(empty, [topics.JOBS])
    with pytest.raises(MissingTopicsError) as refused:
        require_topics(empty, [topics.JOBS, topics.TASKS, topics.MODELS])
    assert refused.value.missing == [physical_name(empty, topics.TASKS), physical_name(empty, topics.MODELS)]
    assert physical_name(empty, topics.TASKS) in str(refused.value) and "python -m libs.local topics" in str(refused.value)


def test_ensure_topics_creates_each_missing_topic_once_with_its_declared_partitions(kafka_settings):
    fresh = kafka_settings.model_copy(update={"topic_prefix": f"fresh{uuid.uuid4().hex[:6]}."})
    assert ensure_topics(fresh) == [physical_name(fresh, t) for t in topics.ALL_TOPICS]
    assert ensure_topics(fresh) == []
    consumer = KafkaConsumer(bootstrap_servers=fresh.bootstrap_servers)
    try:
        counts = {t: len(consumer.partitions_for_topic(physical_name(fresh, t))) for t in topics.ALL_TOPICS}
    finally:
        consumer.close()
    assert counts == {t: t.partitions for t in topics.ALL_TOPICS}


def test_a_consumer_loop_refuses_subscriptions_other_than_its_groups_topics(kafka_settings):
    producer = ProtoProducer(kafka_settings, client_id="test")
    with pytest.raises(ValueError, match=r"group g reads \['forge.tasks'\]"):
        ConsumerLoop(
            kafka_settings, ConsumerGroup("g", (topics.TASKS,)), [Subscription(topics.JOBS, per_message(lambda r: []))], producer
        )
    with pytest.raises(ValueError):
        ConsumerLoop(
            kafka_settings, topics.EMBEDDER_MODELS_GROUP, [Subscription(topics.MODELS, per_message(lambda r: []))], producer
        )


@pytest.mark.parametrize("batch", [False, True])
def test_an_outgoing_message_with_a_partition_goes_to_that_partition_whatever_its_key(kafka_settings, batch):
    producer = ProtoProducer(kafka_settings, client_id="test")
    for n in range(5):
        producer.send_and_wait(topics.TASKS, f"task-{n}", pb.Task(task_id=f"task-{n}"))

    def handle(records: list[Received]):
        return [Outgoing(topics.EXAMPLES_RAW, r.key, pb.RawExample(example_id=r.key), partition=2) for r in records]

    stop = threading.Event()
    loop = ConsumerLoop(
        kafka_settings,
        ConsumerGroup("partition-test", (topics.TASKS,)),
        [Subscription(topics.TASKS, handle, batch=batch)],
        producer,
    )
    thread = threading.Thread(target=loop.run, args=(stop,))
    thread.start()
    try:
        outputs = consume_all(kafka_settings, topics.EXAMPLES_RAW, expected=5)
    finally:
        stop.set()
        thread.join()
    assert sorted(r.key for r in outputs) == [f"task-{n}".encode() for n in range(5)]
    assert {r.partition for r in outputs} == {2}


def test_producer_refuses_a_message_of_the_wrong_type_for_the_topic(kafka_settings):
    producer = ProtoProducer(kafka_settings, client_id="test")
    with pytest.raises(TypeError, match="forge.tasks carries embedforge.v1.Task"):
        producer.send(topics.TASKS, "k", pb.Job(job_id="j"))


def test_malformed_records_go_to_dead_letter_with_reason_and_consumer_continues(kafka_settings):
    raw = KafkaProducer(bootstrap_servers=kafka_settings.bootstrap_servers)
    tasks = physical_name(kafka_settings, topics.TASKS)
    raw.send(tasks, key=b"no-headers", value=b"not protobuf at all")
    raw.send(
        tasks,
        key=b"wrong-type",
        value=pb.Job(job_id="j").SerializeToString(),
        headers=[(HEADER_MESSAGE_TYPE, b"embedforge.v1.Job"), (HEADER_SCHEMA_VERSION, b"1")],
    )
    raw.send(
        tasks,
        key=b"garbage",
        value=b"\xff\xff\xff\xff",
        headers=[(HEADER_MESSAGE_TYPE, b"embedforge.v1.Task"), (HEADER_SCHEMA_VERSION, b"1")],
    )
    raw.flush()
    producer = ProtoProducer(kafka_settings, client_id="test")
    producer.send_and_wait(topics.TASKS, "boom", pb.Task(task_id="boom"))
    producer.send_and_wait(topics.TASKS, "good", pb.Task(task_id="good", job_id="j1"))

    def handle(record: Received):
        if record.message.task_id == "boom":
            raise RuntimeError("handler exploded")
        yield Outgoing(
            topics.EXAMPLES_RAW, record.key, pb.RawExample(example_id=record.message.task_id, job_id=record.message.job_id)
        )

    stop = threading.Event()
    loop = ConsumerLoop(
        kafka_settings, ConsumerGroup("dlq-test", (topics.TASKS,)), [Subscription(topics.TASKS, per_message(handle))], producer
    )
    thread = threading.Thread(target=loop.run, args=(stop,))
    thread.start()
    try:
        letters = consume_all(kafka_settings, topics.DEAD_LETTER, expected=4)
        outputs = consume_all(kafka_settings, topics.EXAMPLES_RAW, expected=1)
    finally:
        stop.set()
        thread.join()
    reasons = {r.key.decode(): pb.DeadLetter.FromString(r.value).reason for r in letters}
    assert reasons == {
        "no-headers": "missing_message_type",
        "wrong-type": "wrong_message_type",
        "garbage": "undecodable",
        "boom": "handler_error",
    }
    garbage = next(pb.DeadLetter.FromString(r.value) for r in letters if r.key == b"garbage")
    assert (
        garbage.value == b"\xff\xff\xff\xff"
        and garbage.source_topic == tasks
        and garbage.consumer_group == kafka_settings.topic_prefix + "dlq-test"
    )
    assert [pb.RawExample.FromString(r.value).example_id for r in outputs] == ["good"]


def test_batch_outliving_the_poll_interval_is_redelivered_and_the_consumer_keeps_running(kafka_settings, caplog):
    """The group reassigns partitions of a consumer whose batch takes longer than
    max_poll_interval_ms; its commit is refused, and the record is processed again."""
    settings = kafka_settings.model_copy(update={"max_poll_interval_ms": 3000})
    producer = ProtoProducer(settings, client_id="test")
    producer.send_and_wait(topics.TASKS, "slow", pb.Task(task_id="slow"))
    calls = []

    def handle(record: Received):
        calls.append(record.offset)
        if len(calls) == 1:
            time.sleep(8)  # outlives the poll interval: the group moves on without us
        yield Outgoing(topics.EXAMPLES_RAW, record.key, pb.RawExample(example_id=record.message.task_id))

    stop = threading.Event()
    loop = ConsumerLoop(
        settings, ConsumerGroup("slow-test", (topics.TASKS,)), [Subscription(topics.TASKS, per_message(handle))], producer
    )
    thread = threading.Thread(target=loop.run, args=(stop,))
    thread.start()
    try:
        outputs = consume_all(settings, topics.EXAMPLES_RAW, expected=2, timeout_s=60)
        assert thread.is_alive()
    finally:
        stop.set()
        thread.join()
    assert len(calls) >= 2 and len(set(calls)) == 1
    assert {r.key for r in outputs} == {b"slow"}
    assert any("commit refused" in r.getMessage() for r in caplog.records)


def test_transient_handler_failure_stops_the_loop_without_committing_or_dead_lettering(kafka_settings):
    from libs.kafka import TransientError

    producer = ProtoProducer(kafka_settings, client_id="test")
    producer.send_and_wait(topics.TASKS, "t", pb.Task(task_id="t"))

    def handle(record: Received):
        raise TransientError("dedup log unreadable")

    loop = ConsumerLoop(
        kafka_settings,
        ConsumerGroup("transient-test", (topics.TASKS,)),
        [Subscription(topics.TASKS, per_message(handle))],
        producer,
    )
    with pytest.raises(TransientError):
        loop.run(threading.Event())
    seen = []
    retry = ConsumerLoop(
        kafka_settings,
        ConsumerGroup("transient-test", (topics.TASKS,)),
        [Subscription(topics.TASKS, per_message(lambda r: seen.append(r.key) or []))],
        producer,
    )
    stop = threading.Event()
    thread = threading.Thread(target=retry.run, args=(stop,))
    thread.start()
    deadline = time.monotonic() + 30
    while not seen and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    thread.join()
    assert seen == ["t"]
    assert consume_all(kafka_settings, topics.DEAD_LETTER, expected=1, timeout_s=2) == []
