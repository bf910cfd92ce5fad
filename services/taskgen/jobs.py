"""Job state: the spec, the tasks already published, and progress, kept in ``state_dir`` so a
restarted taskgen resumes each job where it stopped.

Layout: ``<state_dir>/jobs/<sha256(job_id)[:32]>/job.pb`` (the Job), ``tasks.jsonl`` (one line
per published task, appended after the broker acknowledged it), ``outcomes.txt`` (the key of
every downstream record counted, ``<counter> <key>`` per line) and ``progress.json`` (state and
counters). Progress counts distinct keys, so records replayed after a consumer restart (at-least-
once delivery) never count twice, also across taskgen restarts.
"""

import hashlib
import json
import os
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import json_format

from embedforge.v1 import messages_pb2 as pb
from embedforge.v1 import taskgen_pb2 as api
from libs.grpc import NotFound
from libs.limits import paginate

TERMINAL = (api.JOB_STATE_SUCCEEDED, api.JOB_STATE_FAILED)
COUNTERS = ("examples_generated", "examples_failed", "examples_accepted", "examples_rejected")


def folder_name(job_id: str) -> str:
    return hashlib.sha256(job_id.encode()).hexdigest()[:32]


def _newest_first(job: api.JobStatus) -> str:
    """Sort key (and page token) of a job: newest first, then by id."""
    return f"{2**63 - job.created_at.ToNanoseconds():019d}/{job.job_id}"


@dataclass
class JobRecord:
    job: pb.Job
    tasks: dict[str, tuple[int, str]] = field(default_factory=dict)  # task_id -> (category, description)
    state: int = api.JOB_STATE_QUEUED
    error: str = ""
    model_id: str = ""
    examples_generated: int = 0
    examples_failed: int = 0
    examples_accepted: int = 0
    examples_rejected: int = 0
    usage: dict[str, pb.LlmUsage] = field(default_factory=dict)
    counted: dict[str, set[str]] = field(default_factory=lambda: {c: set() for c in COUNTERS})  # counter -> keys
    pending: list[str] = field(default_factory=list)  # outcomes.txt lines not yet written

    def tasks_in(self, category: int) -> list[str]:
        return [description for cat, description in self.tasks.values() if cat == category]

    @property
    def examples_target(self) -> int:
        spec = self.job.spec
        return sum(c.num_tasks * c.examples_per_task for c in spec.categories) + spec.corpus_queries

    def status(self) -> api.JobStatus:
        spec = self.job.spec
        status = api.JobStatus(
            job_id=self.job.job_id,
            spec=spec,
            state=self.state,
            tasks_target=sum(c.num_tasks for c in spec.categories),
            tasks_published=len(self.tasks),
            examples_target=self.examples_target,
            examples_generated=self.examples_generated,
            examples_accepted=self.examples_accepted,
            examples_rejected=self.examples_rejected,
            model_id=self.model_id,
            error=self.error,
            created_at=self.job.created_at,
        )
        status.usage.extend(self.usage[m] for m in sorted(self.usage))
        status.updated_at.GetCurrentTime()
        return status


class JobStore:
    """Every job this replica knows, persisted; changes wake WatchJob streams."""

    def __init__(self, state_dir: Path):
        self.root = state_dir / "jobs"
        self.root.mkdir(parents=True, exist_ok=True)
        self._jobs: dict[str, JobRecord] = {}
        self._changed = threading.Condition()
        self._version = 0
        for folder in sorted(self.root.iterdir()):
            if (folder / "job.pb").is_file():
                record = self._load(folder)
                if folder.name != folder_name(record.job.job_id):  # named by the raw id before ids were hashed
                    folder.rename(self._folder(record.job.job_id))
                self._jobs[record.job.job_id] = record

    def _load(self, folder: Path) -> JobRecord:
        record = JobRecord(pb.Job.FromString((folder / "job.pb").read_bytes()))
        tasks_file = folder / "tasks.jsonl"
        if tasks_file.is_file():
            for line in tasks_file.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    row = json.loads(line)
                    record.tasks[row["task_id"]] = (row["category"], row["description"])
        progress = folder / "progress.json"
        if progress.is_file():
            data = json.loads(progress.read_text(encoding="utf-8"))
            record.state = data.get("state", record.state)
            record.error = data.get("error", "")
            record.model_id = data.get("model_id", "")
            for key in COUNTERS:
                setattr(record, key, data.get(key, 0))
            record.usage = {m: json_format.ParseDict(u, pb.LlmUsage()) for m, u in data.get("usage", {}).items()}
        outcomes = folder / "outcomes.txt"
        if outcomes.is_file():
            for line in outcomes.read_text(encoding="utf-8").splitlines():
                counter, _, key = line.partition(" ")
                if counter in record.counted:
                    record.counted[counter].add(key)
            for counter, keys in record.counted.items():
                setattr(record, counter, len(keys))
        return record

    def _folder(self, job_id: str) -> Path:
        return self.root / folder_name(job_id)

    def _save_progress(self, record: JobRecord) -> None:
        """Persist a job's progress; a generating job that trains automatically moves to
        TRAINING here once every planned example has a curator outcome."""
        curated = record.examples_accepted + record.examples_rejected >= record.examples_target
        if record.state == api.JOB_STATE_GENERATING and record.job.spec.training.auto_start and curated:
            record.state = api.JOB_STATE_TRAINING
        data = {
            "state": record.state,
            "error": record.error,
            "model_id": record.model_id,
            "examples_generated": record.examples_generated,
            "examples_failed": record.examples_failed,
            "examples_accepted": record.examples_accepted,
            "examples_rejected": record.examples_rejected,
            "usage": {m: json_format.MessageToDict(u) for m, u in record.usage.items()},
        }
        folder = self._folder(record.job.job_id)
        if record.pending:
            with open(folder / "outcomes.txt", "a", encoding="utf-8") as out:
                out.write("".join(line + "\n" for line in record.pending))
            record.pending.clear()
        path = folder / "progress.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, path)

    def _notify(self) -> None:
        self._version += 1
        self._changed.notify_all()

    def add(self, job: pb.Job) -> tuple[api.JobStatus, bool]:
        """Register a job (idempotent by job_id); returns its status and whether it is new."""
        with self._changed:
            if job.job_id in self._jobs:
                return self._jobs[job.job_id].status(), False
            folder = self._folder(job.job_id)
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / "job.pb.tmp"
            tmp.write_bytes(job.SerializeToString())
            os.replace(tmp, folder / "job.pb")
            record = JobRecord(job)
            self._jobs[job.job_id] = record
            self._save_progress(record)
            self._notify()
            return record.status(), True

    def discard(self, job_id: str) -> None:
        """Forget a job that was just added (its submission failed later)."""
        with self._changed:
            self._jobs.pop(job_id, None)
            shutil.rmtree(self._folder(job_id), ignore_errors=True)
            self._notify()

    def record(self, job_id: str) -> JobRecord:
        with self._changed:
            if job_id not in self._jobs:
                raise NotFound(f"job {job_id!r} not found")
            return self._jobs[job_id]

    def get(self, job_id: str) -> api.JobStatus:
        with self._changed:
            return self.record(job_id).status()

    def list_jobs(self, page_size: int, page_token: str) -> tuple[list[api.JobStatus], str]:
        """A page of jobs, newest first (see libs.limits.paginate), and the next page's token."""
        with self._changed:
            statuses = sorted((r.status() for r in self._jobs.values()), key=_newest_first)
        return paginate(statuses, _newest_first, page_size, page_token)

    def unfinished(self) -> list[str]:
        """Jobs whose brainstorming is not complete (resumed after a restart)."""
        with self._changed:
            return [j for j, r in self._jobs.items() if r.state in (api.JOB_STATE_QUEUED, api.JOB_STATE_BRAINSTORMING)]

    def add_task(self, task: pb.Task) -> None:
        """Remember a published (acknowledged) task."""
        with self._changed:
            record = self._jobs[task.job_id]
            if task.task_id in record.tasks:
                return
            record.tasks[task.task_id] = (task.category, task.description)
            with open(self._folder(task.job_id) / "tasks.jsonl", "a", encoding="utf-8") as out:
                out.write(
                    json.dumps({"task_id": task.task_id, "category": task.category, "description": task.description}) + "\n"
                )
            self._notify()

    def update(self, job_id: str, **changes) -> None:
        with self._changed:
            record = self._jobs.get(job_id)
            if record is None:
                return
            for key, value in changes.items():
                setattr(record, key, value)
            self._save_progress(record)
            self._notify()

    def add_usage(self, job_id: str, usage: pb.LlmUsage) -> None:
        with self._changed:
            record = self._jobs.get(job_id)
            if record is None or not usage.model:
                return
            total = record.usage.setdefault(usage.model, pb.LlmUsage(model=usage.model))
            total.prompt_tokens += usage.prompt_tokens
            total.completion_tokens += usage.completion_tokens
            total.cost_usd += usage.cost_usd
            total.latency_s += usage.latency_s
            total.calls += usage.calls or 1

    def count(self, job_id: str, counter: str, key: str) -> bool:
        """Count the record ``key`` under ``counter`` (e.g. examples_generated) once; False for
        unknown jobs and keys already counted. Written by the next flush()."""
        with self._changed:
            record = self._jobs.get(job_id)
            if record is None or key in record.counted[counter]:
                return False
            record.counted[counter].add(key)
            record.pending.append(f"{counter} {key}")
            setattr(record, counter, getattr(record, counter) + 1)
            return True

    def flush(self, job_ids) -> None:
        """Persist counters of these jobs and wake watchers."""
        with self._changed:
            for job_id in job_ids:
                if job_id in self._jobs:
                    self._save_progress(self._jobs[job_id])
            self._notify()

    def wait_for_change(self, timeout_s: float) -> None:
        with self._changed:
            self._changed.wait(timeout_s)
