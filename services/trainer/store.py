"""Curated examples per job, persisted beside the consumer so a restart loses nothing, and
snapshots that record exactly which examples a run used (topic partition/offset and content hash).
"""

import hashlib
import json
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import json_format

from embedforge.v1 import messages_pb2 as pb
from libs.modeling.data import TrainExample, write_examples


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


class CuratedStore:
    """Append-only JSONL per job under ``root``; deduplicated by content hash (at-least-once input)."""

    def __init__(self, root: Path):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.examples: dict[str, dict[str, StoredExample]] = {}
        for path in sorted(self.root.glob("*.jsonl")):
            job = self.examples.setdefault(path.stem, {})
            for line in path.read_text(encoding="utf-8").splitlines():
                row = json.loads(line)
                example = TrainExample.from_json(row["example"])
                job.setdefault(example.content_hash, StoredExample(row["partition"], row["offset"], example))

    def add(self, job_id: str, partition: int, offset: int, message: pb.CuratedExample) -> int:
        """Store one example (a repeat is ignored); returns the job's example count."""
        if not job_id or "/" in job_id or job_id.startswith("."):
            raise ValueError(f"invalid job id {job_id!r}")
        example = to_train_example(message)
        with self.lock:
            job = self.examples.setdefault(job_id, {})
            if example.content_hash not in job:
                job[example.content_hash] = StoredExample(partition, offset, example)
                row = {"partition": partition, "offset": offset, "example": example.to_json()}
                with open(self.root / f"{job_id}.jsonl", "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            return len(job)

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
            "partitions": {str(p): {"first_offset": min(o), "last_offset": max(o), "count": len(o)} for p, o in sorted(offsets.items())},
            "content_hashes_sha256": hashlib.sha256("\n".join(hashes).encode()).hexdigest(),
            "instructions": dict(Counter(s.example.instruction for s in stored).most_common(5)),
        }
        records = [{"partition": s.partition, "offset": s.offset, "content_hash": s.example.content_hash} for s in stored]
        (folder / "snapshot.json").write_text(json.dumps({**summary, "records": records}, indent=1))
        return dataset, json.dumps(summary, ensure_ascii=False)


class RejectedLog:
    """Ids of each job's rejected examples (append-only text per job, deduplicated): with the
    curated count it tells when every planned example has an outcome."""

    def __init__(self, root: Path):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.ids = {p.stem: set(p.read_text(encoding="utf-8").split()) for p in self.root.glob("*.txt")}

    def add(self, job_id: str, example_id: str) -> int:
        if not job_id or "/" in job_id or job_id.startswith(".") or not example_id or any(c.isspace() for c in example_id):
            raise ValueError(f"invalid job id {job_id!r} or example id {example_id!r}")
        with self.lock:
            ids = self.ids.setdefault(job_id, set())
            if example_id not in ids:
                ids.add(example_id)
                with open(self.root / f"{job_id}.txt", "a", encoding="utf-8") as handle:
                    handle.write(example_id + "\n")
            return len(ids)

    def count(self, job_id: str) -> int:
        with self.lock:
            return len(self.ids.get(job_id, ()))


class JobStore:
    """Jobs seen on forge.jobs (their training spec, eval sets and target size), persisted as JSON."""

    def __init__(self, root: Path):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.jobs = {p.stem: json_format.Parse(p.read_text(), pb.Job()) for p in self.root.glob("*.json")}

    def add(self, job: pb.Job) -> None:
        if not job.job_id or "/" in job.job_id or job.job_id.startswith("."):
            raise ValueError(f"invalid job id {job.job_id!r}")
        self.jobs[job.job_id] = job
        (self.root / f"{job.job_id}.json").write_text(json_format.MessageToJson(job))

    def get(self, job_id: str) -> pb.Job | None:
        return self.jobs.get(job_id)


def planned_examples(spec: pb.JobSpec) -> int:
    """How many examples a job asks for: tasks x examples per task, plus corpus queries."""
    return sum(c.num_tasks * c.examples_per_task for c in spec.categories) + spec.corpus_queries
