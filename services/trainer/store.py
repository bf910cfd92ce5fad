"""The trainer's consumed state in object storage (libs.storage), written before the consumer
commits its offsets, so a trainer rescheduled with an empty disk loses nothing: curated examples,
rejected ids and corpus chunks per job as one segment object per consumed batch, jobs as one
object each. Plus snapshots that record exactly which examples a run used (topic partition/offset
and content hash).
"""

import hashlib
import json
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import json_format

from embedforge.v1 import messages_pb2 as pb
from libs.ids import is_valid
from libs.modeling.data import TrainExample, write_examples
from libs.storage import Storage


@dataclass(frozen=True)
class StoredExample:
    partition: int
    offset: int
    example: TrainExample


def to_train_example(message: pb.CuratedExample) -> TrainExample:
    if not message.positives:
        raise ValueError("curated example without a positive")
    return TrainExample(
        query=message.query,
        positive=message.positives[0],
        negatives=tuple(n for n in message.negatives if n.strip()),
        instruction=message.instruction,
        content_hash=message.content_hash,
    )


def segment_name(partition: int, offset: int, suffix: str) -> str:
    """A batch's segment is named by its first record, so a redelivered batch rewrites the same object."""
    return f"{partition:04d}-{offset:015d}{suffix}"


class CuratedStore:
    """Curated examples per job, deduplicated by content hash (at-least-once input); persisted
    as JSONL segments ``trainer/curated/<job>/<partition>-<offset>.jsonl``."""

    def __init__(self, storage: Storage):
        self.storage = storage
        self.lock = threading.Lock()
        self.examples: dict[str, dict[str, StoredExample]] = {}
        for job_id in storage.list("trainer/curated"):
            job = self.examples.setdefault(job_id, {})
            for name in storage.list(f"trainer/curated/{job_id}"):
                for line in storage.read_bytes(f"trainer/curated/{job_id}/{name}").decode().splitlines():
                    row = json.loads(line)
                    example = TrainExample.from_json(row["example"])
                    job.setdefault(example.content_hash, StoredExample(row["partition"], row["offset"], example))

    def add_batch(self, records: list[tuple[int, int, pb.CuratedExample]]) -> set[str]:
        """Store a consumed batch of (partition, offset, example), one segment per job, before
        the caller commits; repeats are ignored. Returns the jobs that gained examples."""
        rows: dict[str, list[StoredExample]] = {}
        for partition, offset, message in records:
            if not is_valid(message.job_id):
                raise ValueError(f"invalid job id {message.job_id!r}")
            rows.setdefault(message.job_id, []).append(StoredExample(partition, offset, to_train_example(message)))
        changed = set()
        with self.lock:
            for job_id, batch in rows.items():
                job = self.examples.setdefault(job_id, {})
                new = [s for s in batch if s.example.content_hash not in job]
                if not new:
                    continue
                lines = [
                    json.dumps({"partition": s.partition, "offset": s.offset, "example": s.example.to_json()}, ensure_ascii=False)
                    for s in new
                ]
                self.storage.write_bytes(
                    f"trainer/curated/{job_id}/{segment_name(new[0].partition, new[0].offset, '.jsonl')}",
                    ("\n".join(lines) + "\n").encode(),
                )
                for stored in new:
                    job.setdefault(stored.example.content_hash, stored)
                changed.add(job_id)
        return changed

    def count(self, job_id: str) -> int:
        with self.lock:
            return len(self.examples.get(job_id, {}))

    def snapshot(self, job_id: str, folder: Path, topic: str) -> tuple[Path, str]:
        """Write the job's examples (in topic order) and a manifest; return (dataset path, manifest summary)."""
        with self.lock:
            stored = sorted(self.examples.get(job_id, {}).values(), key=lambda s: (s.partition, s.offset))
        if not stored:
            raise ValueError(f"job {job_id!r} has no curated examples yet")
        folder.mkdir(parents=True, exist_ok=True)
        dataset = folder / "dataset.jsonl"
        write_examples(dataset, [s.example for s in stored])
        offsets: dict[int, list[int]] = {}
        for s in stored:
            offsets.setdefault(s.partition, []).append(s.offset)
        hashes = sorted(s.example.content_hash for s in stored)
        summary = {
            "job_id": job_id,
            "topic": topic,
            "examples": len(stored),
            "partitions": {
                str(p): {"first_offset": min(o), "last_offset": max(o), "count": len(o)} for p, o in sorted(offsets.items())
            },
            "content_hashes_sha256": hashlib.sha256("\n".join(hashes).encode()).hexdigest(),
            "instructions": dict(Counter(s.example.instruction for s in stored).most_common(5)),
        }
        records = [{"partition": s.partition, "offset": s.offset, "content_hash": s.example.content_hash} for s in stored]
        (folder / "snapshot.json").write_text(json.dumps({**summary, "records": records}, indent=1))
        return dataset, json.dumps(summary, ensure_ascii=False)


class RejectedLog:
    """Ids of each job's rejected examples (deduplicated; segments ``trainer/rejected/<job>/<partition>-<offset>.txt``):
    with the curated count it tells when every planned example has an outcome."""

    def __init__(self, storage: Storage):
        self.storage = storage
        self.lock = threading.Lock()
        self.ids: dict[str, set[str]] = {}
        for job_id in storage.list("trainer/rejected"):
            ids = self.ids.setdefault(job_id, set())
            for name in storage.list(f"trainer/rejected/{job_id}"):
                ids.update(storage.read_bytes(f"trainer/rejected/{job_id}/{name}").decode().split())

    def add_batch(self, records: list[tuple[int, int, str, str]]) -> set[str]:
        """Store a consumed batch of (partition, offset, job id, example id); returns the jobs that changed."""
        rows: dict[str, list[tuple[int, int, str]]] = {}
        for partition, offset, job_id, example_id in records:
            if not is_valid(job_id) or not is_valid(example_id):
                raise ValueError(f"invalid job id {job_id!r} or example id {example_id!r}")
            rows.setdefault(job_id, []).append((partition, offset, example_id))
        changed = set()
        with self.lock:
            for job_id, batch in rows.items():
                ids = self.ids.setdefault(job_id, set())
                new = [r for r in batch if r[2] not in ids]
                if not new:
                    continue
                self.storage.write_bytes(
                    f"trainer/rejected/{job_id}/{segment_name(new[0][0], new[0][1], '.txt')}",
                    "".join(r[2] + "\n" for r in new).encode(),
                )
                ids.update(r[2] for r in new)
                changed.add(job_id)
        return changed

    def count(self, job_id: str) -> int:
        with self.lock:
            return len(self.ids.get(job_id, ()))


# The job's chunks in a run folder: the corpus its hard negatives are mined from.
CHUNKS_FILE = "corpus_chunks.jsonl"


class ChunkStore:
    """Each job's corpus chunks (forge.corpus.chunks), the passages its hard negatives are mined
    from: segments ``trainer/chunks/<job>/<partition>-<offset>.jsonl`` of ``{"_id", "text"}`` rows
    (the text alone, as the positives written from it), read back only when a run starts
    (deduplicated by chunk id: at-least-once input)."""

    def __init__(self, storage: Storage):
        self.storage = storage

    def add_batch(self, records: list[tuple[int, int, pb.CorpusChunk]]) -> None:
        """Store a consumed batch of (partition, offset, chunk), one segment per job, before the caller commits."""
        rows: dict[str, list[tuple[int, int, pb.CorpusChunk]]] = {}
        for partition, offset, chunk in records:
            if not is_valid(chunk.job_id) or not chunk.chunk_id or not chunk.text.strip():
                raise ValueError(f"corpus chunk needs a valid job id, a chunk id and text (job {chunk.job_id!r})")
            rows.setdefault(chunk.job_id, []).append((partition, offset, chunk))
        for job_id, batch in rows.items():
            lines = [json.dumps({"_id": c.chunk_id, "text": c.text}, ensure_ascii=False) for _, _, c in batch]
            name = segment_name(batch[0][0], batch[0][1], ".jsonl")
            self.storage.write_bytes(f"trainer/chunks/{job_id}/{name}", ("\n".join(lines) + "\n").encode())

    def write_corpus(self, job_id: str, path: Path) -> int:
        """Write the job's chunks, one per chunk id, in chunk-id order, as a JSONL corpus; returns how many."""
        chunks = {}
        for name in self.storage.list(f"trainer/chunks/{job_id}"):
            for line in self.storage.read_bytes(f"trainer/chunks/{job_id}/{name}").decode().splitlines():
                row = json.loads(line)
                chunks[row["_id"]] = line
        if chunks:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(chunks[i] + "\n" for i in sorted(chunks)), encoding="utf-8")
        return len(chunks)


class JobStore:
    """Jobs seen on forge.jobs (their training spec, eval sets and target size), one object each: ``trainer/jobs/<job>.json``."""

    def __init__(self, storage: Storage):
        self.storage = storage
        self.jobs = {}
        for name in storage.list("trainer/jobs"):
            job = json_format.Parse(storage.read_bytes(f"trainer/jobs/{name}").decode(), pb.Job())
            self.jobs[job.job_id] = job

    def add(self, job: pb.Job) -> None:
        if not is_valid(job.job_id):
            raise ValueError(f"invalid job id {job.job_id!r}")
        self.storage.write_bytes(f"trainer/jobs/{job.job_id}.json", json_format.MessageToJson(job).encode())
        self.jobs[job.job_id] = job

    def get(self, job_id: str) -> pb.Job | None:
        return self.jobs.get(job_id)


def planned_examples(spec: pb.JobSpec) -> int:
    """How many examples a job asks for: tasks x examples per task, plus corpus queries."""
    return sum(c.num_tasks * c.examples_per_task for c in spec.categories) + spec.corpus_queries
