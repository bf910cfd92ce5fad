"""Kafka layer: protobuf values, keyed idempotent producer, consumer groups that commit
only after their outputs are acknowledged, trace context in headers, and a dead-letter path.

Delivery is at-least-once: a consumer that crashes before committing reprocesses the
uncommitted records, so outputs carry idempotent keys and downstream dedups by key.
"""

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from google.protobuf import message as protobuf_message
from google.protobuf.message import Message
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import CommitFailedError, TopicAlreadyExistsError
from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.trace import Link, SpanKind

from embedforge.v1 import messages_pb2 as pb
from libs import topics
from libs.settings import KafkaSettings
from libs.topics import ConsumerGroup, Topic

log = logging.getLogger(__name__)
tracer = trace.get_tracer("embedforge.kafka")
meter = metrics.get_meter("embedforge.kafka")
consumed_counter = meter.create_counter("kafka.consumer.messages", description="Messages consumed, by topic and outcome")
produced_counter = meter.create_counter("kafka.producer.messages", description="Messages produced, by topic")
batch_seconds = meter.create_histogram("kafka.consumer.batch.duration", unit="s", description="Poll-to-commit time")

CONTENT_TYPE = "application/x-protobuf"
SCHEMA_VERSION = "1"
HEADER_CONTENT_TYPE = "content-type"
HEADER_MESSAGE_TYPE = "message-type"
HEADER_SCHEMA_VERSION = "schema-version"


class DecodeError(Exception):
    """A record that is not the protobuf message its topic carries."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class TransientError(Exception):
    """Raised by a handler when the failure is not the record's fault (a dependency is down):
    the loop stops without committing, so the record is processed again after a restart."""


@dataclass(frozen=True)
class Outgoing:
    """A message a handler wants produced: topic, idempotency key and value; ``partition``
    places it explicitly (default: by key)."""

    topic: Topic
    key: str
    message: Message
    partition: int | None = None


@dataclass(frozen=True)
class Received:
    """A decoded record with its origin."""

    topic: Topic
    key: str
    partition: int
    offset: int
    message: Message
    headers: dict[str, str] = field(default_factory=dict)
    value: bytes = b""

    def trace_context(self) -> otel_context.Context:
        return propagate.extract(self.headers)


def physical_name(settings: KafkaSettings, topic: Topic) -> str:
    return settings.topic_prefix + topic.name


def encode_headers(message: Message) -> list[tuple[str, bytes]]:
    """Type, schema version and the active W3C trace context (traceparent/tracestate)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    headers = [
        (HEADER_CONTENT_TYPE, CONTENT_TYPE.encode()),
        (HEADER_MESSAGE_TYPE, message.DESCRIPTOR.full_name.encode()),
        (HEADER_SCHEMA_VERSION, SCHEMA_VERSION.encode()),
    ]
    headers.extend((k, v.encode()) for k, v in carrier.items())
    return headers


def decode_headers(raw_headers: Sequence[tuple[str, bytes]] | None) -> dict[str, str]:
    return {k: (v or b"").decode("utf-8", errors="replace") for k, v in raw_headers or ()}


def decode_value(topic: Topic, headers: dict[str, str], value: bytes | None) -> Message:
    """Parse a record value as the topic's message type, or raise DecodeError with a reason."""
    expected = topic.message_type.DESCRIPTOR.full_name
    declared = headers.get(HEADER_MESSAGE_TYPE)
    if declared is None:
        raise DecodeError("missing_message_type", f"no '{HEADER_MESSAGE_TYPE}' header; expected {expected}")
    if declared != expected:
        raise DecodeError("wrong_message_type", f"header says {declared}, topic {topic.name} carries {expected}")
    version = headers.get(HEADER_SCHEMA_VERSION, "")
    if version != SCHEMA_VERSION:
        raise DecodeError("unsupported_schema_version", f"schema-version {version!r}, this consumer reads {SCHEMA_VERSION}")
    if not value:  # every message on every topic carries at least its id
        raise DecodeError("undecodable", "empty value (a tombstone, or a message with no field set)")
    try:
        message = topic.message_type.FromString(value)
    except protobuf_message.DecodeError as exc:
        raise DecodeError("undecodable", f"not a valid {expected}: {exc}") from exc
    # Same schema version, so every field is known: unknown ones mean another type's bytes
    # (protobuf would otherwise parse them into a half-empty message of this type).
    known = topic.message_type()
    known.CopyFrom(message)
    known.DiscardUnknownFields()
    if known.ByteSize() != message.ByteSize():
        raise DecodeError("undecodable", f"fields unknown to {expected} (schema {SCHEMA_VERSION}): not a {expected}")
    return message


class ProtoProducer:
    """Keyed producer of protobuf messages: acks=all, idempotent, trace context in headers."""

    def __init__(self, settings: KafkaSettings, client_id: str):
        self.settings = settings
        self._producer = KafkaProducer(
            **settings.client_kwargs(),
            client_id=client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            max_request_size=settings.max_message_bytes,
        )

    def send(self, topic: Topic, key: str, message: Message, partition: int | None = None):
        """Queue one message (to ``partition``, else by key); returns kafka-python's future (``.get()`` waits for the ack)."""
        if not isinstance(message, topic.message_type):
            raise TypeError(f"{topic.name} carries {topic.message_type.DESCRIPTOR.full_name}, got {type(message).__name__}")
        produced_counter.add(1, {"topic": topic.name})
        return self._producer.send(
            physical_name(self.settings, topic),
            key=key.encode(),
            value=message.SerializeToString(),
            headers=encode_headers(message),
            partition=partition,
        )

    def send_and_wait(self, topic: Topic, key: str, message: Message, timeout_s: float = 30.0):
        return self.send(topic, key, message).get(timeout=timeout_s)

    def flush(self, timeout_s: float | None = None) -> None:
        self._producer.flush(timeout=timeout_s)

    def close(self) -> None:
        self._producer.close()


BatchHandler = Callable[[list[Received]], Iterable[Outgoing]]


@dataclass(frozen=True)
class Subscription:
    """A topic and what to do with its records.

    ``handle`` receives a list of records and returns the messages to produce. With
    ``batch=False`` it gets one record at a time inside a span that continues the
    producer's trace; with ``batch=True`` it gets every record of the topic from one poll
    (a span linked to each producer's trace), and if it raises, each record is retried
    alone so only the bad ones are dead-lettered.
    """

    topic: Topic
    handle: BatchHandler
    batch: bool = False


class ConsumerLoop:
    """Consume subscriptions as one consumer-group member; commit after outputs are acked.

    The subscriptions must be exactly the topics the group declares in libs/topics.py.
    A record that cannot be decoded, or whose handler raises, goes to the dead-letter
    topic with a reason and the loop continues. If producing fails, the loop raises
    without committing, so a restart reprocesses the batch.
    """

    def __init__(
        self, settings: KafkaSettings, group: ConsumerGroup, subscriptions: Sequence[Subscription], producer: ProtoProducer
    ):
        subscribed = {s.topic.name for s in subscriptions}
        if group.per_replica or subscribed != {t.name for t in group.topics}:
            raise ValueError(
                f"group {group.id} reads {sorted(t.name for t in group.topics)} (libs/topics.py), subscriptions are "
                f"{sorted(subscribed)}"
            )
        self.settings = settings
        self.group_id = settings.topic_prefix + group.id  # isolated like the topics
        self.producer = producer
        self.subscriptions = {physical_name(settings, s.topic): s for s in subscriptions}
        self.ready = threading.Event()
        self.dead_lettered = 0

    def run(self, stop: threading.Event) -> None:
        consumer = KafkaConsumer(
            **self.settings.client_kwargs(),
            group_id=self.group_id,
            client_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=self.settings.session_timeout_ms,
            heartbeat_interval_ms=self.settings.heartbeat_interval_ms,
            max_poll_records=self.settings.max_poll_records,
            max_poll_interval_ms=self.settings.max_poll_interval_ms,
            fetch_max_bytes=self.settings.max_message_bytes,
            max_partition_fetch_bytes=self.settings.max_message_bytes,
        )
        consumer.subscribe(list(self.subscriptions))
        log.info("consumer started", extra={"group": self.group_id, "topics": list(self.subscriptions)})
        try:
            self._consume(consumer, stop)
        except TransientError as exc:
            if not stop.is_set():
                raise
            log.info(
                "stopped mid-batch; the uncommitted batch is processed again after restart",
                extra={"group": self.group_id, "detail": str(exc)[:300]},
            )
        finally:
            consumer.close(autocommit=False)

    def _consume(self, consumer: KafkaConsumer, stop: threading.Event) -> None:
        while not stop.is_set():
            polled = consumer.poll(timeout_ms=200)
            if consumer.assignment():
                self.ready.set()
            if not polled:
                continue
            started = time.perf_counter()
            futures = []
            # A topic's records from all its partitions go to its handler together: a batch
            # handler (examplegen's LLM calls) gets the whole poll at once, not one partition's share.
            by_topic: dict[str, list] = {}
            for partition, records in polled.items():
                by_topic.setdefault(partition.topic, []).extend(records)
            for topic_name, records in by_topic.items():
                futures.extend(self._process(topic_name, records))
            self.producer.flush()
            for future in futures:
                future.get(timeout=30)
            try:
                consumer.commit()
            except CommitFailedError as exc:
                # The group moved on (a batch outlived max_poll_interval_ms, or a rebalance):
                # the partitions' new owner reprocesses from the last commit; keys make it idempotent.
                log.warning(
                    "commit refused after a rebalance; batch will be redelivered",
                    extra={"group": self.group_id, "detail": str(exc)[:300]},
                )
            batch_seconds.record(time.perf_counter() - started, {"group": self.group_id})

    def _process(self, topic_name: str, records) -> list:
        dead_before = self.dead_lettered
        futures = self._handle(topic_name, records)
        dead = self.dead_lettered - dead_before
        consumed_counter.add(len(records) - dead, {"topic": topic_name, "outcome": "ok"})
        if dead:
            consumed_counter.add(dead, {"topic": topic_name, "outcome": "dead_lettered"})
        return futures

    def _handle(self, topic_name: str, records) -> list:
        subscription = self.subscriptions[topic_name]
        decoded: list[Received] = []
        futures = []
        for record in records:
            headers = decode_headers(record.headers)
            key = (record.key or b"").decode("utf-8", errors="replace")
            try:
                message = decode_value(subscription.topic, headers, record.value)
            except DecodeError as exc:
                futures.append(
                    self._dead_letter(
                        topic_name, record.partition, record.offset, key, record.value, headers, exc.reason, exc.detail
                    )
                )
                continue
            decoded.append(Received(subscription.topic, key, record.partition, record.offset, message, headers, record.value))
        if subscription.batch and decoded:
            links = [Link(trace.get_current_span(r.trace_context()).get_span_context()) for r in decoded]
            with tracer.start_as_current_span(f"process {subscription.topic.name}", kind=SpanKind.CONSUMER, links=links):
                try:
                    outputs = list(subscription.handle(decoded))
                except TransientError:
                    raise
                except Exception:  # noqa: BLE001 - isolate the bad record(s) below
                    log.exception("batch handler failed; retrying records one by one", extra={"topic": topic_name})
                else:
                    return futures + self._produce(outputs)
        for received in decoded:
            futures.extend(self._process_one(subscription, received))
        return futures

    def _process_one(self, subscription: Subscription, received: Received) -> list:
        with tracer.start_as_current_span(
            f"process {subscription.topic.name}",
            context=received.trace_context(),
            kind=SpanKind.CONSUMER,
            attributes={"messaging.destination.name": subscription.topic.name, "messaging.kafka.offset": received.offset},
        ) as span:
            try:
                outputs = list(subscription.handle([received]))
            except TransientError:
                raise
            except Exception as exc:  # noqa: BLE001 - a bad message must not stop the consumer
                span.record_exception(exc)
                log.exception(
                    "handler failed; dead-lettering", extra={"topic": subscription.topic.name, "offset": received.offset}
                )
                detail = f"{type(exc).__name__}: {exc}"
                topic_name = physical_name(self.settings, received.topic)
                return [
                    self._dead_letter(
                        topic_name,
                        received.partition,
                        received.offset,
                        received.key,
                        received.value,
                        received.headers,
                        "handler_error",
                        detail,
                    )
                ]
            return self._produce(outputs)

    def _produce(self, outputs: list[Outgoing]) -> list:
        return [self.producer.send(o.topic, o.key, o.message, o.partition) for o in outputs]

    def _dead_letter(
        self,
        topic_name: str,
        partition: int,
        offset: int,
        key: str,
        value: bytes | None,
        headers: dict[str, str],
        reason: str,
        detail: str,
    ):
        self.dead_lettered += 1
        log.warning(
            "dead-lettering record", extra={"topic": topic_name, "offset": offset, "reason": reason, "detail": detail[:500]}
        )
        letter = pb.DeadLetter(
            source_topic=topic_name,
            partition=partition,
            offset=offset,
            key=key.encode(),
            value=value or b"",
            consumer_group=self.group_id,
            reason=reason,
            detail=detail,
            headers=headers,
        )
        letter.failed_at.GetCurrentTime()
        return self.producer.send(topics.DEAD_LETTER, key, letter)


def per_message(handle: Callable[[Received], Iterable[Outgoing]]) -> BatchHandler:
    """Adapt a one-record handler to the list signature of :class:`Subscription`."""

    def handle_batch(records: list[Received]) -> Iterable[Outgoing]:
        for record in records:
            yield from handle(record)

    return handle_batch


class MissingTopicsError(Exception):
    """Topics a service uses do not exist: they are created by the deployment, not by services."""

    def __init__(self, missing: list[str]):
        super().__init__(
            f"missing Kafka topics {', '.join(missing)}: create them first (the chart's topic Job or Strimzi "
            "KafkaTopics; locally: python -m libs.local topics --bootstrap-servers HOST:PORT)"
        )
        self.missing = missing


def require_topics(settings: KafkaSettings, wanted: Iterable[Topic]) -> None:
    """Raise MissingTopicsError naming every topic of ``wanted`` that does not exist."""
    admin = KafkaAdminClient(**settings.client_kwargs(), client_id="embedforge-admin")
    try:
        existing = set(admin.list_topics())
    finally:
        admin.close()
    missing = [physical_name(settings, t) for t in wanted if physical_name(settings, t) not in existing]
    if missing:
        raise MissingTopicsError(missing)


def ensure_topics(
    settings: KafkaSettings,
    wanted: Iterable[Topic] = topics.ALL_TOPICS,
    partitions: int | None = None,
    replication_factor: int = 1,
) -> list[str]:
    """Create the missing topics with their declared configs (local mode and tests only) and
    return their names. ``partitions`` replaces every topic's count (shared counts stay shared)."""
    admin = KafkaAdminClient(**settings.client_kwargs(), client_id="embedforge-admin")
    try:
        existing = set(admin.list_topics())
        new = [
            NewTopic(
                physical_name(settings, t),
                num_partitions=partitions or t.partitions,
                replication_factor=replication_factor,
                topic_configs={"retention.ms": str(t.retention_ms), "cleanup.policy": t.cleanup_policy},
            )
            for t in wanted
            if physical_name(settings, t) not in existing
        ]
        if new:
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
        return [t.name for t in new]
    finally:
        admin.close()
