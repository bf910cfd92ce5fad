"""The cluster's guarantees, measured on this machine with real processes.

handoff: model handoff through object storage, from a finished export of all-MiniLM-L6-v2 to every
embedder replica serving it. The upload (libs.storage, sha256 manifest) goes to S3 on moto's
server (a real HTTP endpoint on loopback), ModelReady goes through a real tansu broker, and each
replica is its own ``python -m services.embedder`` process with its own state dir: it downloads
the folder into its cache, verifies every digest, loads the model and swaps.

resume: a trainer (``python -m services.trainer``, state in S3 on moto's server) fine-tunes
all-MiniLM-L6-v2 on xquad-en question/passage pairs; its process and the run's process are
SIGKILLed between two checkpoints, and a new trainer with an empty state dir resumes the run:
``trainer_resume_lost_steps`` = steps reached before the kill - step resumed from.

settings: a service started with a misspelt variable under its prefix must exit 2 naming the
variable and the closest field (``unknown_setting_refused``).

Writes (merges) the keys into benchmarks/results/cluster.json.
Run: PYTHONPATH=.:gen .venv/bin/python benchmarks/cluster.py [handoff] [resume] [settings]
(all three by default; BENCH_REPLICAS, default 2)
"""

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path


from embedforge.v1 import embedder_pb2 as api
from embedforge.v1 import embedder_pb2_grpc as api_grpc
from embedforge.v1 import messages_pb2 as pb
from embedforge.v1 import trainer_pb2, trainer_pb2_grpc
from libs import topics
from libs.kafka import ProtoProducer
from libs.local.broker import TansuBroker
from libs.local.objectstore import MotoS3
from libs.local.runtime import LocalRuntime, python_env
from libs.modeling.data import TrainExample, write_examples
from libs.storage import Storage
from services.embedder.service import default_model_path

REPLICAS = int(os.environ.get("BENCH_REPLICAS", "2"))
RESULTS = Path(__file__).with_name("results") / "cluster.json"
XQUAD = Path(__file__).resolve().parents[2] / "shared" / "data" / "xquad-en"
CHECKPOINT_EVERY = 10


def serving(stub: api_grpc.EmbedderServiceStub) -> str:
    return stub.GetModelInfo(api.GetModelInfoRequest(), timeout=5).model_id


def model_handoff() -> dict:
    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    export = work / "export"
    shutil.copytree(default_model_path(), export)  # the trainer's exported folder
    model_id = f"minilm-{uuid.uuid4().hex[:6]}"
    with TansuBroker(log_path=work / "broker.log") as broker, MotoS3() as s3:
        uri = s3.bucket() + "/embedforge"
        runtimes = []
        try:
            for i in range(REPLICAS):
                runtime = LocalRuntime(
                    work / f"replica-{i}",
                    services=("embedder",),
                    topic_prefix="bench.",
                    storage_uri=uri,
                    extra_env={"EMBEDDER_REPLICA_ID": f"replica-{i}", "EMBEDDER_TORCH_THREADS": "1"},
                )
                runtime.start_broker(broker)
                runtime.start_service("embedder")
                runtimes.append(runtime)
            for runtime in runtimes:
                runtime.wait_healthy("embedder", timeout_s=300)
            stubs = [api_grpc.EmbedderServiceStub(r.channel("embedder")) for r in runtimes]
            producer = ProtoProducer(runtimes[0].kafka_settings, client_id="bench")
            time.sleep(8)  # every replica's forge.models group has its assignment

            started = time.perf_counter()  # export finished
            stored = Storage(uri).put_folder(export, f"models/{model_id}")
            uploaded = time.perf_counter() - started
            producer.send_and_wait(
                topics.MODELS,
                model_id,
                pb.ModelReady(
                    model_id=model_id,
                    uri=stored.uri,
                    manifest_digest=stored.digest,
                    dimensions=384,
                    pooling="mean",
                    max_length=256,
                ),
            )
            serving_after = {}
            while len(serving_after) < REPLICAS:
                for i, stub in enumerate(stubs):
                    if i not in serving_after and serving(stub) == model_id:
                        serving_after[i] = time.perf_counter() - started
                assert time.perf_counter() - started < 600, "replicas did not swap in 10 minutes"
                time.sleep(0.05)
            producer.close()
        finally:
            for runtime in runtimes:
                runtime.stop()
    size = sum(p.stat().st_size for p in export.rglob("*") if p.is_file())
    shutil.rmtree(work, ignore_errors=True)
    return {
        "model_handoff_s": round(max(serving_after.values()), 3),
        "model_handoff_upload_s": round(uploaded, 3),
        "model_handoff_per_replica_s": [round(serving_after[i], 3) for i in range(REPLICAS)],
        "model_handoff_replicas": REPLICAS,
        "model_handoff_model": "all-MiniLM-L6-v2",
        "model_handoff_model_bytes": size,
        "model_handoff_storage": "s3 (moto server on loopback)",
        "model_handoff_machine": f"{platform.machine()}, {os.cpu_count()} cpus",
    }


def xquad_pairs(count: int) -> list[TrainExample]:
    """(question, passage) pairs of xquad-en, one question per passage."""
    corpus = {doc["_id"]: doc["text"] for doc in map(json.loads, (XQUAD / "corpus.jsonl").read_text().splitlines())}
    queries = {q["_id"]: q["text"] for q in map(json.loads, (XQUAD / "queries.jsonl").read_text().splitlines())}
    pairs, seen = [], set()
    for line in (XQUAD / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        query_id, doc_id, _ = line.split("\t")
        if doc_id not in seen:
            seen.add(doc_id)
            pairs.append(TrainExample(query=queries[query_id], positive=corpus[doc_id]))
    return pairs[:count]


def start_trainer(broker: TansuBroker, run_dir: Path, uri: str) -> tuple[LocalRuntime, trainer_pb2_grpc.TrainerServiceStub]:
    """The trainer with the benchmark's work folder (beside ``run_dir``) as its data root."""
    runtime = LocalRuntime(
        run_dir,
        services=("trainer",),
        topic_prefix="bench.",
        storage_uri=uri,
        extra_env={"TRAINER_CHECKPOINT_EVERY": str(CHECKPOINT_EVERY), "TRAINER_MINE_NEGATIVES": "0"},
        data_roots=(run_dir.parent,),
    )
    runtime.start_broker(broker)
    runtime.start_service("trainer")
    runtime.wait_healthy("trainer", timeout_s=300)
    return runtime, trainer_pb2_grpc.TrainerServiceStub(runtime.channel("trainer"))


def trainer_resume() -> dict:
    """Kill the trainer's pod (service and run process) between checkpoints; resume on an empty node."""
    work = Path(tempfile.mkdtemp(prefix="bench-resume-"))
    dataset = work / "train.jsonl"
    write_examples(dataset, xquad_pairs(400))
    kill_at = CHECKPOINT_EVERY * 2 - 2  # just before the next checkpoint: the most a kill can cost
    spec = pb.TrainingSpec(batch_size=16, max_steps=40, epochs=5, max_length=128)
    with TansuBroker(log_path=work / "broker.log") as broker, MotoS3() as s3:
        uri = s3.bucket() + "/embedforge"
        first, stub = start_trainer(broker, work / "first", uri)
        try:
            run = stub.StartRun(trainer_pb2.StartRunRequest(dataset_path=str(dataset), run_id="resume-bench", spec=spec)).run
            while run.step < kill_at:
                assert run.state not in (trainer_pb2.RUN_STATE_FAILED, trainer_pb2.RUN_STATE_SUCCEEDED), run
                time.sleep(0.05)
                run = stub.GetRun(trainer_pb2.GetRunRequest(run_id=run.run_id)).run
            killed_at = time.perf_counter()
            first.kill_service_and_children("trainer")
        finally:
            first.stop()
        reached = run.step
        second, stub = start_trainer(broker, work / "second", uri)
        try:
            resumed = stub.GetRun(trainer_pb2.GetRunRequest(run_id=run.run_id)).run
            while resumed.step <= reached and resumed.state != trainer_pb2.RUN_STATE_SUCCEEDED:
                time.sleep(0.05)
                resumed = stub.GetRun(trainer_pb2.GetRunRequest(run_id=run.run_id)).run
            back_past_kill_s = time.perf_counter() - killed_at
            final = list(stub.WatchRun(trainer_pb2.WatchRunRequest(run_id=run.run_id), timeout=1800))[-1].run
        finally:
            second.stop()
        events = [
            json.loads(line)
            for line in (work / "second" / "state" / "trainer" / "trainer" / "runs" / run.run_id / "events.jsonl")
            .read_text()
            .splitlines()
        ]
    resumed_from = next(e["resumed_from"] for e in events if "resumed_from" in e)
    assert final.state == trainer_pb2.RUN_STATE_SUCCEEDED, final.error
    shutil.rmtree(work, ignore_errors=True)
    return {
        "trainer_resume_lost_steps": reached - resumed_from,
        "trainer_resume_checkpoint_every": CHECKPOINT_EVERY,
        "trainer_resume_killed_at_step": reached,
        "trainer_resume_resumed_from_step": resumed_from,
        "trainer_resume_back_past_kill_s": round(back_past_kill_s, 1),
        "trainer_resume_final_step": final.step,
        "trainer_resume_model": "all-MiniLM-L6-v2, batch 16, storage s3 (moto server on loopback)",
    }


def unknown_setting() -> dict:
    """A misspelt variable (LLM__MODLE) under taskgen's prefix must stop it at start, named."""
    env = {**python_env(), "TASKGEN_LLM__MODLE": "openai/gpt-4o-mini"}
    result = subprocess.run([sys.executable, "-m", "services.taskgen"], env=env, capture_output=True, text=True, timeout=120)
    named = "TASKGEN_LLM__MODLE" in result.stderr and "TASKGEN_LLM__MODEL" in result.stderr
    return {"unknown_setting_refused": result.returncode == 2 and named, "unknown_setting_exit_code": result.returncode}


MEASUREMENTS = {"handoff": model_handoff, "resume": trainer_resume, "settings": unknown_setting}


def main() -> None:
    chosen = sys.argv[1:] or list(MEASUREMENTS)
    figures = {}
    for name in chosen:
        figures.update(MEASUREMENTS[name]())
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results.update(figures)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
