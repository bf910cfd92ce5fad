"""The curator's two consumer stages over its internal topics (declared in libs/topics.py).

1. validate (group ``curator``, any replica, any raw partition): parse, repair, check, and
   optionally score with the reference model. Rejects go to forge.examples.rejected;
   survivors go to forge.curator.candidates keyed by job_id, so all candidates of a job
   land in one partition.
2. dedup (group ``curator-dedup``): the replica that owns a candidates partition owns the
   dedup state of its jobs. Each accepted example goes to forge.examples.curated (key:
   content hash) and to forge.curator.dedup-log (key: job_id/content_hash, compacted; written
   to the partition number of its candidate). Before each batch the stage reads the log partition up to its
   end, so state survives restarts and follows partitions between replicas: a replica
   that takes over a partition, or restarts with no local state, rebuilds it from the log.

Delivery is at-least-once: after a crash the uncommitted candidates are processed again.
A replayed example whose content hash is already in the log under the same example id is
re-emitted to the curated topic with the same key and value (it may have been lost), so
the curated topic can hold the same record twice but never two keys for one example or
two examples that are duplicates of each other. Consumers dedup by key (content_hash).
"""

import logging

from kafka import TopicPartition
from opentelemetry import metrics

from embedforge.v1 import messages_pb2 as pb
from libs import topics
from libs.kafka import Outgoing, Received, physical_name
from libs.settings import KafkaSettings
from services.curator.consistency import ConsistencyScorer
from services.curator.dedup import DedupIndex, Signature
from services.curator.reading import plain_consumer, read_to_end
from services.curator.validation import Rejection, Validator

log = logging.getLogger(__name__)
meter = metrics.get_meter("embedforge.curator")
outcomes = meter.create_counter("curator.examples", description="Examples by stage and outcome (accepted or reject reason)")


def rejected(
    example_id: str, job_id: str, reason: str, detail: str, payload: bytes, provenance: pb.Provenance | None = None
) -> Outgoing:
    outcomes.add(1, {"outcome": reason})
    message = pb.RejectedExample(
        example_id=example_id, job_id=job_id, reason=reason, detail=detail, original_payload=payload, provenance=provenance
    )
    return Outgoing(topics.EXAMPLES_REJECTED, topics.rejected_key(message), message)


class ValidateStage:
    def __init__(self, validator: Validator, scorer: ConsistencyScorer | None = None):
        self.validator = validator
        self.scorer = scorer

    def handle(self, records: list[Received]) -> list[Outgoing]:
        outputs: list[Outgoing] = []
        kept: list[tuple[Received, pb.CuratedExample]] = []
        results = self.validator.curate_many([record.message for record in records])
        for record, result in zip(records, results):
            raw: pb.RawExample = record.message
            example_id = raw.example_id or record.key
            if isinstance(result, Rejection):
                provenance = pb.Provenance(
                    example_id=example_id, task_id=raw.task_id, template_id=raw.template_id, chunk_id=raw.chunk_id
                )
                outputs.append(rejected(example_id, raw.job_id, result.reason, result.detail, record.value, provenance))
            else:
                kept.append((record, result))
        if self.scorer is not None and kept:
            self.scorer.score([example for _, example in kept])
        for record, example in kept:
            if self.scorer is not None and self.scorer.inconsistent(example):
                detail = f"negative scores {example.negative_score:.3f} > positive {example.positive_score:.3f}"
                outputs.append(
                    rejected(
                        example.provenance.example_id,
                        example.job_id,
                        "negative_above_positive",
                        detail,
                        record.value,
                        example.provenance,
                    )
                )
                continue
            outputs.append(
                Outgoing(
                    topics.CURATOR_CANDIDATES,
                    example.job_id,
                    pb.CurationCandidate(example=example, original_payload=record.value),
                )
            )
        passed = sum(1 for o in outputs if o.topic == topics.CURATOR_CANDIDATES)
        log.info(
            "validated batch",
            extra={"partitions": sorted({r.partition for r in records}), "records": len(records), "passed": passed},
        )
        return outputs


class DedupLogReader:
    """Reads dedup-log partitions into the index, remembering how far each was read."""

    def __init__(self, settings: KafkaSettings, index: DedupIndex):
        self.index = index
        self.topic = physical_name(settings, topics.CURATOR_DEDUP_LOG)
        self.consumer = plain_consumer(settings)
        self.positions: dict[int, int] = {}

    def catch_up(self, partition: int) -> int:
        """Apply the partition's new log entries; returns how many were read."""
        tp = TopicPartition(self.topic, partition)
        self.consumer.assign([tp])
        self.consumer.seek(tp, self.positions.get(partition, 0))
        read, entries = 0, []
        for record in read_to_end(self.consumer, [tp]):
            entries.append(pb.CuratedExample.FromString(record.value))
            read += 1
            if len(entries) >= 1000:
                self.index.add_many(entries)
                entries = []
        self.index.add_many(entries)
        self.positions[partition] = self.consumer.position(tp)
        if read:
            log.info(
                "dedup state caught up", extra={"partition": partition, "entries": read, "offset": self.positions[partition]}
            )
        return read

    def close(self) -> None:
        self.consumer.close()


class DedupStage:
    def __init__(self, index: DedupIndex, reader: DedupLogReader):
        self.index = index
        self.reader = reader

    def handle(self, records: list[Received]) -> list[Outgoing]:
        for partition in sorted({r.partition for r in records}):
            self.reader.catch_up(partition)
        outputs: list[Outgoing] = []
        signatures = self.index.signatures([record.message.example for record in records])
        for record, signature in zip(records, signatures):
            outputs.extend(self.decide(record.message, record.partition, signature))
        accepted = sum(1 for o in outputs if o.topic == topics.EXAMPLES_CURATED)
        log.info(
            "deduplicated batch",
            extra={"partitions": sorted({r.partition for r in records}), "records": len(records), "accepted": accepted},
        )
        return outputs

    def decide(self, candidate: pb.CurationCandidate, partition: int, signature: Signature | None = None) -> list[Outgoing]:
        """The outputs of one candidate read from candidates ``partition``; ``signature`` is its
        index.signature() when already computed."""
        example = candidate.example
        example_id = example.provenance.example_id
        job = self.index.job(example.job_id)
        if job.accepted.get(example.content_hash) == example_id:  # a replay after a crash
            return [Outgoing(topics.EXAMPLES_CURATED, topics.curated_key(example), example)]
        if example_id in job.example_ids:
            detail = f"example {example_id} was already curated as {job.example_ids[example_id]} (regenerated upstream)"
            return [rejected(example_id, example.job_id, "duplicate", detail, candidate.original_payload, example.provenance)]
        if signature is None:
            signature = self.index.signature(example)
        verdict = job.check(example.content_hash, signature)
        if verdict.reason:
            detail = f"of {verdict.duplicate_of} (estimated Jaccard {verdict.similarity:.2f})"
            return [rejected(example_id, example.job_id, verdict.reason, detail, candidate.original_payload, example.provenance)]
        job.add(example.content_hash, example_id, signature)
        outcomes.add(1, {"outcome": "accepted"})
        log_entry = Outgoing(topics.CURATOR_DEDUP_LOG, topics.curated_key(example), example, partition)
        return [Outgoing(topics.EXAMPLES_CURATED, topics.curated_key(example), example), log_entry]
