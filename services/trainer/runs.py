"""Runs as child processes: start, follow their progress events, cancel, resume after a restart.

Each run lives in ``<runs>/<run_id>/``: run.json (the RunConfig), events.jsonl (progress the
child writes), stderr.log, checkpoint.pt, and state.json (the Run message). Training happens in
``python -m services.trainer.cli run`` so the gRPC server stays responsive, a cancel is a
signal to the child's process group, and a restarted service relaunches unfinished runs,
which resume from their last checkpoint.

Object storage holds each run under ``trainer/runs/<run_id>/``: its input (run.json, the job's
dataset snapshot and the chunks it mines from, a manifest folder), state.json (the Run at its last state change) and the last
checkpoint the run process stored. A service whose state dir lacks a run that storage has
rebuilds its folder from there, so a trainer rescheduled with an empty disk resumes the run from
its last stored checkpoint.
"""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from google.protobuf import json_format
from opentelemetry import metrics, trace

from embedforge.v1 import messages_pb2 as pb
from embedforge.v1 import trainer_pb2 as api
from libs.storage import Storage
from services.trainer.pipeline import RunConfig, load_run_config, relocate, run_key, save_run_config
from services.trainer.store import CHUNKS_FILE

log = logging.getLogger(__name__)
tracer = trace.get_tracer("embedforge.trainer")
meter = metrics.get_meter("embedforge.trainer")
runs_counter = meter.create_counter("trainer.runs", description="Runs finished, by final state")

STATES = {
    "queued": api.RUN_STATE_QUEUED,
    "mining": api.RUN_STATE_MINING,
    "training": api.RUN_STATE_TRAINING,
    "evaluating": api.RUN_STATE_EVALUATING,
    "exporting": api.RUN_STATE_EXPORTING,
    "succeeded": api.RUN_STATE_SUCCEEDED,
}
REPO_ROOT = Path(__file__).resolve().parents[2]
STUBS_ROOT = Path(api.__file__).resolve().parents[2]
TERMINAL = {api.RUN_STATE_SUCCEEDED, api.RUN_STATE_FAILED, api.RUN_STATE_CANCELLED}


class RunHandle:
    def __init__(self, run: api.Run, folder: Path):
        self.run = run
        self.folder = folder
        self.process: subprocess.Popen | None = None
        self.cancelled = False
        self.events_read = 0
        self.transitions: list[api.Run] = []  # the run as it entered each state, in order
        input_file = folder / "input.json"
        self.input: dict = (
            json.loads(input_file.read_text()) if input_file.exists() else {}
        )  # the stored input folder: uri, digest


class RunManager:
    """Owns the runs; ``on_success(run, event)`` is called once when a run's model is exported."""

    def __init__(
        self, root: Path, storage: Storage, max_concurrent: int, run_threads: int, on_success: Callable[[api.Run, dict], None]
    ):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.storage = storage
        self.max_concurrent = max_concurrent
        self.run_threads = run_threads
        self.on_success = on_success
        self.changed = threading.Condition()
        self.runs: dict[str, RunHandle] = {}
        self.stopping = threading.Event()
        for run_id in storage.list("trainer/runs"):
            if not (self.root / run_id / "state.json").exists():
                self._restore(run_id)
        for state_file in sorted(self.root.glob("[!.]*/state.json")):
            run = json_format.Parse(state_file.read_text(), api.Run())
            handle = RunHandle(run, state_file.parent)
            events = state_file.parent / "events.jsonl"
            handle.events_read = len(events.read_text(encoding="utf-8").splitlines()) if events.exists() else 0
            self.runs[run.run_id] = handle
        self.monitor = threading.Thread(target=self._monitor, name="trainer-runs", daemon=True)
        self.monitor.start()

    # ----- API used by the servicer

    def start(self, run: api.Run, config: RunConfig) -> api.Run:
        """Register and queue a run; an existing run id returns the existing run (idempotent)."""
        with self.changed:
            if run.run_id in self.runs:
                return self._copy(self.runs[run.run_id].run)
            folder = Path(config.run_dir)
            folder.mkdir(parents=True, exist_ok=True)
            save_run_config(config, folder / "run.json")
            names = [n for n in ("run.json", "dataset.jsonl", "snapshot.json", CHUNKS_FILE) if (folder / n).exists()]
            stored = self.storage.put_folder(folder, f"{run_key(run.run_id)}/input", names)
            (folder / "input.json").write_text(json.dumps({"uri": stored.uri, "digest": stored.digest}))
            run.state = api.RUN_STATE_QUEUED
            run.created_at.GetCurrentTime()
            handle = RunHandle(run, folder)
            self.runs[run.run_id] = handle
            self._persist(handle)
            self.changed.notify_all()
            return self._copy(run)

    def get(self, run_id: str) -> api.Run | None:
        with self.changed:
            handle = self.runs.get(run_id)
            return self._copy(handle.run) if handle else None

    def cancel(self, run_id: str) -> api.Run:
        with self.changed:
            handle = self.runs[run_id]
            if handle.run.state in TERMINAL:
                return self._copy(handle.run)
            handle.cancelled = True
            if handle.process is not None and handle.process.poll() is None:
                os.killpg(handle.process.pid, signal.SIGTERM)
            else:
                self._finish(handle, api.RUN_STATE_CANCELLED, "cancelled")
            self.changed.notify_all()
        while True:  # wait for the child to go away
            with self.changed:
                if handle.run.state in TERMINAL:
                    return self._copy(handle.run)
                self.changed.wait(0.2)

    def watch(self, run_id: str, is_active: Callable[[], bool]) -> Iterator[api.Run]:
        """The run now, then each time it changes, until it ends (or the caller goes away).
        Progress updates may be coalesced, but every state the run enters is delivered, as
        the run looked when it entered it (a fast run must not skip TRAINING for its watcher)."""
        last = None
        with self.changed:
            delivered = len(self.runs[run_id].transitions)
        while is_active():
            with self.changed:
                handle = self.runs[run_id]
                run = handle.run
                if last is not None and run.updated_at == last.updated_at and run.state == last.state:
                    self.changed.wait(1.0)
                    continue
                missed = [
                    self._copy(r)
                    for r in handle.transitions[delivered:]
                    if r.state not in (run.state, last.state if last is not None else None)
                ]
                delivered = len(handle.transitions)
                last = self._copy(run)
            yield from missed
            yield last
            if last.state in TERMINAL:
                return

    def stop(self) -> None:
        """Service shutdown: stop the children; unfinished runs resume when the service restarts."""
        self.stopping.set()
        with self.changed:
            for handle in self.runs.values():
                if handle.process is not None and handle.process.poll() is None:
                    os.killpg(handle.process.pid, signal.SIGTERM)
        self.monitor.join(timeout=10)

    # ----- the monitor thread: launch queued runs, follow events, reap children

    def _monitor(self) -> None:
        while not self.stopping.is_set():
            with self.changed:
                for handle in list(self.runs.values()):
                    self._follow(handle)
                self._launch_queued()
                self.changed.wait(0.5)

    def _launch_queued(self) -> None:
        active = [h for h in self.runs.values() if h.process is not None and h.process.poll() is None]
        waiting = [h for h in self.runs.values() if h.process is None and h.run.state not in TERMINAL and not h.cancelled]
        waiting.sort(key=lambda h: h.run.created_at.ToNanoseconds())
        for handle in waiting[: max(0, self.max_concurrent - len(active))]:
            env = {
                **os.environ,
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), str(STUBS_ROOT), os.environ.get("PYTHONPATH", "")])),
            }
            if self.run_threads:
                env["OMP_NUM_THREADS"] = str(self.run_threads)
            command = [
                sys.executable,
                "-m",
                "services.trainer.cli",
                "run",
                "--config",
                str(handle.folder / "run.json"),
                "--events",
                str(handle.folder / "events.jsonl"),
            ]
            try:
                with open(handle.folder / "stderr.log", "ab") as stderr:
                    handle.process = subprocess.Popen(
                        command, stdout=subprocess.DEVNULL, stderr=stderr, env=env, start_new_session=True
                    )
            except OSError as exc:  # the run fails; the monitor and every other run go on
                log.exception("run process could not start", extra={"run_id": handle.run.run_id})
                self._finish(handle, api.RUN_STATE_FAILED, f"run process could not start: {exc}")
                continue
            log.info("run started", extra={"run_id": handle.run.run_id, "pid": handle.process.pid})

    def _follow(self, handle: RunHandle) -> None:
        if handle.process is None:
            return
        events_file = handle.folder / "events.jsonl"
        if events_file.exists():
            lines = events_file.read_text(encoding="utf-8").splitlines()
            complete = lines[: len(lines) - (0 if events_file.read_bytes().endswith(b"\n") else 1)]
            for line in complete[handle.events_read :]:
                self._apply(handle, json.loads(line))
            handle.events_read = len(complete)
        code = handle.process.poll()
        if code is None or handle.run.state in TERMINAL:
            return
        if handle.cancelled:
            self._finish(handle, api.RUN_STATE_CANCELLED, "cancelled")
        elif self.stopping.is_set():
            return
        else:
            tail = (handle.folder / "stderr.log").read_text(errors="replace")[-2000:]
            self._finish(handle, api.RUN_STATE_FAILED, f"run process exited with {code}: {tail}")

    def _apply(self, handle: RunHandle, event: dict) -> None:
        run = handle.run
        state = STATES.get(event.get("state", ""))
        if state is not None and not handle.cancelled:
            run.state = state
        if "step" in event:
            run.step, run.total_steps = event["step"], event["total_steps"]
            if not any(p.step == event["step"] for p in run.loss_curve[-3:]):
                run.loss_curve.add(step=event["step"], loss=event["loss"])
        if "train_examples" in event:
            run.train_examples, run.dev_examples = event["train_examples"], event["dev_examples"]
        if "evals" in event:
            del run.evals[:]
            run.evals.extend(pb.EvalResult(**e) for e in event["evals"])
        if event.get("state") == "succeeded":
            run.model_id, run.model_uri, run.manifest_digest = event["model_id"], event["model_uri"], event["manifest_digest"]
            self._persist(handle)
            try:
                self.on_success(self._copy(run), event)
            except Exception as exc:  # noqa: BLE001 - the run failed to publish; say so
                log.exception("publishing the model failed", extra={"run_id": run.run_id})
                self._finish(handle, api.RUN_STATE_FAILED, f"model exported but not published: {exc}")
                return
            runs_counter.add(1, {"state": "succeeded"})
        self._persist(handle)

    def _finish(self, handle: RunHandle, state: int, error: str) -> None:
        handle.run.state = state
        handle.run.error = error
        runs_counter.add(1, {"state": api.RunState.Name(state)})
        log.info("run ended", extra={"run_id": handle.run.run_id, "state": api.RunState.Name(state)})
        self._persist(handle)

    def _persist(self, handle: RunHandle) -> None:
        handle.run.updated_at.GetCurrentTime()
        if not handle.transitions or handle.transitions[-1].state != handle.run.state:
            handle.transitions.append(self._copy(handle.run))
            self._store_state(handle.run, handle.input)
        (handle.folder / "state.json").write_text(json_format.MessageToJson(handle.run))
        self.changed.notify_all()

    def _store_state(self, run: api.Run, input_folder: dict) -> None:
        """The run and its stored input folder, as ``_restore`` reads them back."""
        self.storage.write_json(
            f"{run_key(run.run_id)}/state.json", {"run": json_format.MessageToDict(run), "input": input_folder}
        )

    def _restore(self, run_id: str) -> None:
        """Rebuild a run's folder from storage: its state, and for an unfinished run its input and
        last stored checkpoint (verified downloads), with paths moved into this state dir."""
        key = run_key(run_id)
        state = self.storage.read_json(f"{key}/state.json")
        if state is None:
            return
        run = json_format.ParseDict(state["run"], api.Run())
        checkpoint = self.storage.read_json(f"{key}/checkpoint.json") if run.state not in TERMINAL else None
        parts = [] if run.state in TERMINAL else [state["input"], *([checkpoint] if checkpoint else [])]
        staging = self.root / f".restore-{run_id}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        for n, part in enumerate(parts):
            downloaded = self.storage.get_folder(part["uri"], part["digest"], staging / f".part{n}")
            for file in downloaded.iterdir():
                os.replace(file, staging / file.name)
            downloaded.rmdir()
        if parts:
            try:
                config = load_run_config(staging / "run.json")
            except (ValueError, TypeError) as exc:  # stored by a trainer version with other settings
                run.state, run.error = api.RUN_STATE_FAILED, f"the stored run config does not load in this trainer version: {exc}"
                run.updated_at.GetCurrentTime()
                self._store_state(run, state["input"])
                log.error("stored run not resumable", extra={"run_id": run_id, "error": run.error})
            else:
                save_run_config(relocate(config, str(self.root / run_id)), staging / "run.json")
        (staging / "input.json").write_text(json.dumps(state["input"]))
        (staging / "state.json").write_text(json_format.MessageToJson(run))
        os.replace(staging, self.root / run_id)
        log.info(
            "run restored from storage",
            extra={
                "run_id": run_id,
                "state": api.RunState.Name(run.state),
                "checkpoint_step": checkpoint["step"] if checkpoint else 0,
            },
        )

    @staticmethod
    def _copy(run: api.Run) -> api.Run:
        copy = api.Run()
        copy.CopyFrom(run)
        return copy
