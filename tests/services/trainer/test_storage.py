"""The trainer with object storage on moto's S3 server (a real HTTP endpoint; boto3 reaches it
through AWS_ENDPOINT_URL, which the s3_server fixture sets for this process and the service
processes it starts): a trainer that lost its disk resumes its run from the last stored
checkpoint, and its model reaches an embedder through S3, never through a shared disk."""

import json
import time
from pathlib import Path

from google.protobuf import json_format
from kafka import KafkaConsumer

from embedforge.v1 import embedder_pb2 as eapi
from embedforge.v1 import messages_pb2 as pb
from embedforge.v1 import trainer_pb2 as api
from embedforge.v1 import trainer_pb2_grpc as api_grpc
from libs import topics
from libs.kafka import physical_name
from libs.local.runtime import LocalRuntime
from libs.modeling.data import write_examples
from libs.modeling.embedder import ModelConfig
from libs.modeling.trainer import CHECKPOINT_FILE, TrainConfig
from libs.settings import StorageSettings
from libs.storage import Storage
from services.embedder.service import build_servicer
from services.embedder.settings import EmbedderSettings
from services.trainer.pipeline import MINED_FILE, RunConfig, save_run_config, store_checkpoint
from services.trainer.runs import RunManager

CHECKPOINT_EVERY = 5


def start_trainer(
    broker, kafka_settings, run_dir: Path, storage_uri: str, tiny_bert: str
) -> tuple[LocalRuntime, api_grpc.TrainerServiceStub]:
    """``python -m services.trainer`` as its container runs it, state in ``run_dir``; the test's
    files (beside ``run_dir``) and the tiny model are its data roots."""
    runtime = LocalRuntime(
        run_dir,
        services=("trainer",),
        topic_prefix=kafka_settings.topic_prefix,
        storage_uri=storage_uri,
        data_roots=(run_dir.parent, Path(tiny_bert)),
        extra_env={"TRAINER_CHECKPOINT_EVERY": str(CHECKPOINT_EVERY), "TRAINER_RUN_THREADS": "1", "TRAINER_MINE_NEGATIVES": "0"},
    )
    runtime.start_broker(broker)
    runtime.start_service("trainer")
    runtime.wait_healthy("trainer")
    return runtime, api_grpc.TrainerServiceStub(runtime.channel("trainer"))


def events(run_dir: Path, run_id: str) -> list[dict]:
    path = run_dir / "state" / "trainer" / "trainer" / "runs" / run_id / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_for(condition, timeout_s: float = 240.0):
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)
    return value


def training_spec(tiny_bert: str, **fields) -> pb.TrainingSpec:
    return pb.TrainingSpec(base_model=tiny_bert, batch_size=4, learning_rate=1e-3, **fields)


def test_a_trainer_restarted_with_an_empty_state_dir_resumes_its_run_from_the_last_stored_checkpoint(
    broker, kafka_settings, s3_uri, tiny_bert, make_examples, tmp_path
):
    dataset = tmp_path / "train.jsonl"
    write_examples(dataset, make_examples(48))
    first, stub = start_trainer(broker, kafka_settings, tmp_path / "first", s3_uri, tiny_bert)
    try:
        run = stub.StartRun(
            api.StartRunRequest(dataset_path=str(dataset), run_id="r1", spec=training_spec(tiny_bert, epochs=40))
        ).run
        storage = Storage(s3_uri)
        wait_for(lambda: (storage.read_json("trainer/runs/r1/checkpoint.json") or {}).get("step", 0) >= 2 * CHECKPOINT_EVERY)
        # The pod goes away: the service and its run process die at once, with the state dir.
        first.kill_service_and_children("trainer")
    finally:
        first.stop()
    reached = max(e["step"] for e in events(tmp_path / "first", "r1") if "step" in e)
    total = next(e["total_steps"] for e in events(tmp_path / "first", "r1") if "total_steps" in e)
    assert reached < total, "the run finished before it was killed; give it more steps"

    second, stub = start_trainer(broker, kafka_settings, tmp_path / "second", s3_uri, tiny_bert)
    try:
        assert stub.GetRun(api.GetRunRequest(run_id="r1")).run.state != api.RUN_STATE_QUEUED  # known from storage, not restarted
        final = list(stub.WatchRun(api.WatchRunRequest(run_id=run.run_id), timeout=600))[-1].run
    finally:
        second.stop()
    assert final.state == api.RUN_STATE_SUCCEEDED, final.error
    resumed_from = next(e["resumed_from"] for e in events(tmp_path / "second", "r1") if "resumed_from" in e)
    assert 0 < resumed_from <= reached and reached - resumed_from <= CHECKPOINT_EVERY, (reached, resumed_from)
    assert final.step == final.total_steps == total
    assert len(Storage(s3_uri).list("trainer/runs/r1/checkpoints")) == 1  # older checkpoints are dropped


def test_storing_a_checkpoint_drops_every_older_one_even_one_a_killed_trainer_left_behind(s3_uri, tmp_path):
    run_dir = tmp_path / "r2"
    run_dir.mkdir()
    config = RunConfig(
        dataset_path="",
        run_dir=str(run_dir),
        model=ModelConfig(base_model="m"),
        train=TrainConfig(output_dir=""),
        storage_uri=s3_uri,
    )
    storage = Storage(s3_uri)
    for step in (5, 10):
        (run_dir / CHECKPOINT_FILE).write_text(f"state at {step}")
        (run_dir / MINED_FILE).write_text("")
        store_checkpoint(config, step)
    assert storage.list("trainer/runs/r2/checkpoints") == ["00000010"]
    # A trainer died after pointing checkpoint.json at step 15 and before deleting step 10.
    stored = storage.put_folder(run_dir, "trainer/runs/r2/checkpoints/00000015", [CHECKPOINT_FILE, MINED_FILE])
    storage.write_json("trainer/runs/r2/checkpoint.json", {"step": 15, "uri": stored.uri, "digest": stored.digest})
    (run_dir / CHECKPOINT_FILE).write_text("state at 20")
    store_checkpoint(config, 20)
    assert storage.list("trainer/runs/r2/checkpoints") == ["00000020"]
    assert storage.read_json("trainer/runs/r2/checkpoint.json")["step"] == 20


def test_a_stored_run_whose_config_this_version_cannot_load_is_restored_as_failed_beside_the_others(tmp_path):
    storage = Storage("", tmp_path / "store")
    for run_id, extra in (("r-old", {"setting_this_version_lacks": 1}), ("r-ok", {})):
        folder = tmp_path / run_id
        folder.mkdir()
        save_run_config(RunConfig("", str(folder), ModelConfig(base_model="m"), TrainConfig(output_dir="")), folder / "run.json")
        (folder / "run.json").write_text(json.dumps(json.loads((folder / "run.json").read_text()) | extra))
        stored = storage.put_folder(folder, f"trainer/runs/{run_id}/input")
        run = json_format.MessageToDict(api.Run(run_id=run_id, state=api.RUN_STATE_TRAINING))
        storage.write_json(
            f"trainer/runs/{run_id}/state.json", {"run": run, "input": {"uri": stored.uri, "digest": stored.digest}}
        )
    manager = RunManager(tmp_path / "runs", storage, max_concurrent=0, run_threads=1, on_success=lambda run, event: None)
    try:
        old, ok = manager.get("r-old"), manager.get("r-ok")
    finally:
        manager.stop()
    assert old.state == api.RUN_STATE_FAILED and "setting_this_version_lacks" in old.error
    assert ok.state == api.RUN_STATE_TRAINING and (tmp_path / "runs" / "r-ok" / "run.json").exists()
    stored_state = storage.read_json("trainer/runs/r-old/state.json")["run"]
    assert stored_state["state"] == "RUN_STATE_FAILED"  # a later restore does not try again


def test_a_model_reaches_an_embedder_through_s3_and_is_verified_into_its_own_cache(
    broker, kafka_settings, s3_uri, tiny_bert, dataset_file, tmp_path
):
    runtime, stub = start_trainer(broker, kafka_settings, tmp_path / "trainer", s3_uri, tiny_bert)
    try:
        run = stub.StartRun(api.StartRunRequest(dataset_path=dataset_file, spec=training_spec(tiny_bert, max_steps=3))).run
        final = list(stub.WatchRun(api.WatchRunRequest(run_id=run.run_id), timeout=300))[-1].run
    finally:
        runtime.stop()
    assert final.state == api.RUN_STATE_SUCCEEDED, final.error
    consumer = KafkaConsumer(
        physical_name(kafka_settings, topics.MODELS),
        bootstrap_servers=kafka_settings.bootstrap_servers,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
    )
    (record,) = list(consumer)
    ready = pb.ModelReady.FromString(record.value)
    assert ready.uri == f"{s3_uri}/models/{final.model_id}" and (ready.uri, ready.manifest_digest) == (
        final.model_uri,
        final.manifest_digest,
    )

    state = tmp_path / "embedder"
    embedder = build_servicer(EmbedderSettings(state_dir=str(state), model_path=tiny_bert, storage=StorageSettings(uri=s3_uri)))
    try:
        embedder.swap(ready)
        assert embedder.current.spec.model_id == ready.model_id
        assert Path(embedder.current.spec.path) == state / "models" / ready.manifest_digest
        response = embedder.Embed(eapi.EmbedRequest(texts=["where is the volcano"], kind=eapi.INPUT_KIND_QUERY), None)
        assert response.model_id == ready.model_id and response.dimensions == 32
    finally:
        embedder.close()
