"""Reading a topic's partitions from a position up to their current end.

Tansu (the local broker) answers ListOffsets(latest) with the last batch's base offset + 1,
not the high watermark, so a reader must not stop at ``end_offsets`` alone: it reads until
its position reaches both that answer and the high watermark reported by fetches.
"""

from collections.abc import Iterator

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from libs.settings import KafkaSettings


def plain_consumer(settings: KafkaSettings) -> KafkaConsumer:
    """A consumer without a group (assign/seek only), able to fetch the largest messages."""
    return KafkaConsumer(
        **settings.client_kwargs(),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_bytes=settings.max_message_bytes,
        max_partition_fetch_bytes=settings.max_message_bytes,
    )


def partitions_of(consumer: KafkaConsumer, name: str) -> list[TopicPartition]:
    partitions = consumer.partitions_for_topic(name)
    if not partitions:
        raise RuntimeError(f"topic {name} does not exist")
    return [TopicPartition(name, p) for p in sorted(partitions)]


def read_to_end(consumer: KafkaConsumer, tps: list[TopicPartition]) -> Iterator[ConsumerRecord]:
    """Every record from the assigned partitions' current positions to their end at call time."""
    ends = consumer.end_offsets(tps)

    def done(tp: TopicPartition) -> bool:
        position = consumer.position(tp)
        return position >= ends[tp] and (ends[tp] == 0 or position >= (consumer.highwater(tp) or 0))

    remaining = {tp for tp in tps if not done(tp)}
    while remaining:
        for tp, records in consumer.poll(timeout_ms=1000).items():
            yield from records
            if tp in remaining and done(tp):
                remaining.discard(tp)
                consumer.pause(tp)
    consumer.resume(*tps)
