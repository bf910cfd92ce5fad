"""Read models over the curator's output topics, correct with any number of replicas.

Every replica reads the whole curated and rejected topics (not its own share), counting
each key once, so GetDatasetStats answers the same on every replica and after restarts.
Export and ListRejected scan the topic at request time up to its current end.
"""

import logging
import threading
import time
from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

from kafka import TopicPartition

from embedforge.v1 import curator_pb2 as api
from embedforge.v1 import messages_pb2 as pb
from libs import topics
from libs.kafka import physical_name
from libs.settings import KafkaSettings
from libs.topics import Topic
from libs.words import word_count
from services.curator.reading import partitions_of, plain_consumer, read_to_end

log = logging.getLogger(__name__)
HISTOGRAM_BOUNDS = (5, 10, 15, 20, 30, 50, 100, 200, 300, 500, 1000, 2**31 - 1)


def category_name(category: int) -> str:
    return pb.Category.Name(category).removeprefix("CATEGORY_").lower()


def scan(settings: KafkaSettings, topic: Topic) -> Iterator[object]:
    """The message of every record now in the topic, in partition order."""
    consumer = plain_consumer(settings)
    try:
        tps = partitions_of(consumer, physical_name(settings, topic))
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        for record in read_to_end(consumer, tps):
            yield topic.message_type.FromString(record.value)
    finally:
        consumer.close()


@dataclass
class JobStats:
    accepted: set[str] = field(default_factory=set)
    rejected: set[str] = field(default_factory=set)
    rejected_by_reason: Counter = field(default_factory=Counter)
    by_language: Counter = field(default_factory=Counter)
    by_category: Counter = field(default_factory=Counter)
    query_words: Counter = field(default_factory=Counter)
    positive_words: Counter = field(default_factory=Counter)

    def response(self, job_id: str) -> api.GetDatasetStatsResponse:
        def buckets(counts: Counter) -> list[api.HistogramBucket]:
            return [api.HistogramBucket(upper_bound=b, count=counts[b]) for b in HISTOGRAM_BOUNDS]

        return api.GetDatasetStatsResponse(
            job_id=job_id,
            accepted=len(self.accepted),
            rejected=len(self.rejected),
            rejected_by_reason=dict(self.rejected_by_reason),
            accepted_by_language=dict(self.by_language),
            accepted_by_category=dict(self.by_category),
            query_words=buckets(self.query_words),
            positive_words=buckets(self.positive_words),
        )


def bucket(words: float) -> int:
    return HISTOGRAM_BOUNDS[min(bisect_left(HISTOGRAM_BOUNDS, words), len(HISTOGRAM_BOUNDS) - 1)]


class OutcomeView:
    """Tails the curated and rejected topics from the start: per-job stats and outcomes by example id."""

    def __init__(self, settings: KafkaSettings):
        self.settings = settings
        self.lock = threading.Condition()
        self.jobs: dict[str, JobStats] = defaultdict(JobStats)
        self.outcomes: dict[str, dict[str, str]] = {}  # awaited example ids -> "accepted" / reason, per waiter
        self.positions: dict[TopicPartition, int] = {}
        self.highwaters: dict[TopicPartition, int] = {}
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="curator-view", daemon=True)
        self._offsets = plain_consumer(settings)
        self._offsets_lock = threading.Lock()

    def start(self) -> "OutcomeView":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=10)
        with self._offsets_lock:
            self._offsets.close()

    def _run(self) -> None:
        consumer = plain_consumer(self.settings)
        curated = physical_name(self.settings, topics.EXAMPLES_CURATED)
        try:
            tps = partitions_of(consumer, curated) + partitions_of(
                consumer, physical_name(self.settings, topics.EXAMPLES_REJECTED)
            )
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            while not self.stop_event.is_set():
                polled = consumer.poll(timeout_ms=200)
                with self.lock:
                    for tp, records in polled.items():
                        for record in records:
                            if tp.topic == curated:
                                self._curated(pb.CuratedExample.FromString(record.value))
                            else:
                                self._rejected(pb.RejectedExample.FromString(record.value))
                    for tp in tps:
                        self.positions[tp] = consumer.position(tp)
                        self.highwaters[tp] = consumer.highwater(tp) or 0
                    self.lock.notify_all()
        except Exception:  # noqa: BLE001 - the view is best effort; RPCs report it as unavailable
            log.exception("outcome view stopped")
        finally:
            consumer.close()

    def _curated(self, example: pb.CuratedExample) -> None:
        key = topics.curated_key(example)  # from the message: records written under older key formats count once too
        stats = self.jobs[example.job_id]
        self._resolve(example.provenance.example_id, "accepted")
        if key in stats.accepted:
            return
        stats.accepted.add(key)
        stats.by_language[example.language or "und"] += 1
        stats.by_category[category_name(example.category)] += 1
        stats.query_words[bucket(word_count(example.query))] += 1
        stats.positive_words[bucket(word_count(example.positives[0]) if example.positives else 0)] += 1

    def _rejected(self, example: pb.RejectedExample) -> None:
        key = topics.rejected_key(example)
        stats = self.jobs[example.job_id]
        self._resolve(example.example_id, example.reason)
        if key in stats.rejected:
            return
        stats.rejected.add(key)
        stats.rejected_by_reason[example.reason] += 1

    def _resolve(self, example_id: str, outcome: str) -> None:
        for awaited in self.outcomes.values():
            if example_id in awaited:
                awaited[example_id] = outcome

    def wait_caught_up(self, timeout_s: float) -> None:
        """Block until the view has read everything that was in its topics when called.

        See reading.py: the broker's end offset can point inside the last batch, so the view
        must also have reached the high watermark its own fetches report.
        """
        names = [physical_name(self.settings, t) for t in (topics.EXAMPLES_CURATED, topics.EXAMPLES_REJECTED)]
        with self._offsets_lock:
            tps = [tp for name in names for tp in partitions_of(self._offsets, name)]
            ends = self._offsets.end_offsets(tps)
        deadline = time.monotonic() + timeout_s
        with self.lock:
            while any(self.positions.get(tp, 0) < max(end, self.highwaters.get(tp, 0) if end else 0) for tp, end in ends.items()):
                left = deadline - time.monotonic()
                if left <= 0 or not self.thread.is_alive():
                    raise TimeoutError("the curated/rejected view is behind its topics")
                self.lock.wait(timeout=min(left, 0.5))

    def stats(self, job_id: str, timeout_s: float) -> api.GetDatasetStatsResponse:
        self.wait_caught_up(timeout_s)
        with self.lock:
            return self.jobs[job_id].response(job_id) if job_id in self.jobs else api.GetDatasetStatsResponse(job_id=job_id)

    def expect(self, waiter: str, example_ids: list[str]) -> None:
        with self.lock:
            self.outcomes[waiter] = dict.fromkeys(example_ids, "")

    def await_outcomes(self, waiter: str, timeout_s: float) -> dict[str, str]:
        """Outcomes of the expected ids ("" where none arrived within the timeout)."""
        deadline = time.monotonic() + timeout_s
        with self.lock:
            awaited = self.outcomes[waiter]
            while not all(awaited.values()) and time.monotonic() < deadline and self.thread.is_alive():
                self.lock.wait(timeout=0.5)
            return self.outcomes.pop(waiter)
