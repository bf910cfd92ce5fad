"""The trainer service against a real broker and a real gRPC server: runs from a dataset file
and from a job's curated examples (auto-start), progress streaming, cancel, ModelReady."""

import json
import threading
import time
from pathlib import Path

import grpc
import pytest
from kafka import KafkaConsumer
from sentence_transformers import SentenceTransformer

from embedforge.v1 import messages_pb2 as pb
from embedforge.v1 import trainer_pb2 as api
from embedforge.v1 import trainer_pb2_grpc as api_grpc
from libs import topics
from libs.corpus import chunk_messages, read_documents
from libs.grpc import GrpcServer
from libs.kafka import ProtoProducer, physical_name
from libs.modeling.data import read_examples
from libs.storage import service_storage
from services.trainer.service import build, run_config
from services.trainer.settings import TrainerSettings


@pytest.fixture
def trainer(kafka_settings, tmp_path, tiny_bert, more_data_roots, request):
    """The service's parts (as run_service wires them) on a free loopback port; the test's files
    and the tiny model are its data roots; an indirect parameter gives more settings."""
    settings = TrainerSettings(
        state_dir=str(tmp_path / "state"),
        kafka=kafka_settings,
        run_threads=1,
        auto_start_fraction=0.5,
        auto_start_min_examples=8,
        checkpoint_every=0,
        data={"roots": [str(tmp_path), tiny_bert, *more_data_roots]},
        **getattr(request, "param", {}),
    )
    parts = build(settings)
    server = GrpcServer(parts.grpc_services, "127.0.0.1", 0)
    server.start()
    stop = threading.Event()
    threads = [threading.Thread(target=c.run, args=(stop,), daemon=True) for c in parts.consumers]
    for thread in threads:
        thread.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    yield api_grpc.TrainerServiceStub(channel), settings
    channel.close()
    stop.set()
    for hook in parts.on_shutdown:
        hook()
    server.stop(1)
    for thread in threads:
        thread.join(timeout=10)


def spec(tiny_bert: str, **overrides) -> pb.TrainingSpec:
    return pb.TrainingSpec(base_model=tiny_bert, batch_size=8, learning_rate=1e-3, **overrides)


def test_run_from_a_dataset_file_streams_progress_and_publishes_a_loadable_model(
    trainer, tiny_bert, dataset_file, beir_folder, kafka_settings, tmp_path
):
    stub, settings = trainer
    run = stub.StartRun(
        api.StartRunRequest(dataset_path=dataset_file, spec=spec(tiny_bert, epochs=2), eval_paths=[beir_folder])
    ).run
    seen = [update.run for update in stub.WatchRun(api.WatchRunRequest(run_id=run.run_id), timeout=300)]
    final = seen[-1]
    assert final.state == api.RUN_STATE_SUCCEEDED, final.error
    assert api.RUN_STATE_TRAINING in {r.state for r in seen}
    assert final.step == final.total_steps > 0 and len(final.loss_curve) == final.total_steps
    assert {(e.dataset, e.metric) for e in final.evals} >= {("beir", "ndcg@10"), ("dev", "ndcg@10")}
    consumer = KafkaConsumer(
        physical_name(kafka_settings, topics.MODELS),
        bootstrap_servers=kafka_settings.bootstrap_servers,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
    )
    (record,) = list(consumer)
    ready = pb.ModelReady.FromString(record.value)
    assert ready.run_id == run.run_id and ready.dimensions == 32 and ready.pooling == "mean"
    folder = service_storage(settings).get_folder(ready.uri, ready.manifest_digest, tmp_path / "download")
    assert SentenceTransformer(str(folder), device="cpu").encode(["a query"]).shape == (1, 32)
    assert [m.model_id for m in stub.ListModels(api.ListModelsRequest()).models] == [ready.model_id]


def test_job_run_auto_starts_at_target_and_records_its_snapshot(trainer, tiny_bert, kafka_settings, make_examples, tmp_path):
    """A job whose documents came on forge.documents (no corpus_path): its chunks, as examplegen
    published them on forge.corpus.chunks, are its mining corpus."""
    stub, settings = trainer
    producer = ProtoProducer(kafka_settings, client_id="test")
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("harbour", "castle"):
        (docs / f"{name}.md").write_text(
            f"# The {name}\n\n" + "\n\n".join(f"The {name} paragraph {i} " + "stone " * 20 for i in range(3))
        )
    job = pb.Job(
        job_id="job1",
        spec=pb.JobSpec(
            domain="places",
            categories=[pb.CategoryTarget(category=pb.CATEGORY_RETRIEVAL, num_tasks=1, examples_per_task=40)],
            training=spec(tiny_bert, auto_start=True, max_steps=2),
            corpus_chunk_words=30,
        ),
    )
    chunks = [c for d in read_documents(docs) for c in chunk_messages("job1", d, 30)]
    assert len(chunks) == 6  # per document: the heading with paragraph 0, paragraph 1, paragraph 2 (23 words each)
    for chunk in chunks + chunks[:2]:  # at-least-once: two delivered twice
        producer.send(topics.CORPUS_CHUNKS, chunk.chunk_id, chunk)
    producer.send_and_wait(topics.JOBS, job.job_id, job)
    deadline = time.monotonic() + 30
    while len(service_storage(settings).list("trainer/chunks/job1")) == 0 and time.monotonic() < deadline:
        time.sleep(0.2)  # the chunks are stored before the examples that start the run arrive
    for example in make_examples(24):
        message = pb.CuratedExample(
            content_hash=example.content_hash,
            job_id="job1",
            instruction="Find the place",
            query=example.query,
            positives=[example.positive],
            negatives=list(example.negatives),
        )
        producer.send(topics.EXAMPLES_CURATED, message.content_hash, message)
    producer.flush()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            run = stub.GetRun(api.GetRunRequest(run_id="job1-auto")).run
            break
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.NOT_FOUND
            time.sleep(0.3)
    else:
        pytest.fail("no run auto-started")
    assert run.job_id == "job1"
    assert json.loads(run.dataset_manifest)["examples"] >= 20  # target: 50% of the 40 planned examples
    final = list(stub.WatchRun(api.WatchRunRequest(run_id=run.run_id), timeout=300))[-1].run
    assert final.state == api.RUN_STATE_SUCCEEDED, final.error
    assert stub.ListModels(api.ListModelsRequest(job_id="job1")).models[0].dataset_manifest == run.dataset_manifest
    # Negatives are mined from the job's chunks as published (once each), not from documents cut again.
    run_dir = Path(settings.state_dir) / "trainer" / "runs" / "job1-auto"
    corpus = [json.loads(line) for line in (run_dir / "corpus_chunks.jsonl").read_text().splitlines()]
    assert sorted((row["_id"], row["text"]) for row in corpus) == sorted((c.chunk_id, c.text) for c in chunks)
    assert json.loads((run_dir / "run.json").read_text())["corpus_path"] == str(run_dir / "corpus_chunks.jsonl")
    mined = [n for e in read_examples(run_dir / "train.mined.jsonl") for n in e.negatives]
    written = {n for e in make_examples(24) for n in e.negatives}
    assert set(mined) & {c.text for c in chunks} and set(mined) <= {c.text for c in chunks} | written


def test_job_run_auto_starts_once_every_planned_example_has_an_outcome(trainer, tiny_bert, kafka_settings, make_examples):
    """Most examples rejected: the accepted share never reaches its target, but no more data can come."""
    stub, _ = trainer
    producer = ProtoProducer(kafka_settings, client_id="test")
    job = pb.Job(
        job_id="job2",
        spec=pb.JobSpec(
            domain="places",
            categories=[pb.CategoryTarget(category=pb.CATEGORY_RETRIEVAL, num_tasks=1, examples_per_task=30)],
            training=spec(tiny_bert, auto_start=True, max_steps=1),
        ),
    )
    producer.send_and_wait(topics.JOBS, job.job_id, job)
    for example in make_examples(6):
        message = pb.CuratedExample(
            content_hash=example.content_hash,
            job_id="job2",
            query=example.query,
            positives=[example.positive],
            negatives=list(example.negatives),
        )
        producer.send(topics.EXAMPLES_CURATED, message.content_hash, message)
    rejected = [pb.RejectedExample(example_id=f"r{i}", job_id="job2", reason="invalid_json") for i in range(24)]
    for message in rejected[:-1] + rejected[:5]:  # one outcome still missing; some delivered twice
        producer.send(topics.EXAMPLES_REJECTED, message.example_id, message)
    producer.flush()
    time.sleep(3)
    with pytest.raises(grpc.RpcError) as missing:
        stub.GetRun(api.GetRunRequest(run_id="job2-auto"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    producer.send_and_wait(topics.EXAMPLES_REJECTED, rejected[-1].example_id, rejected[-1])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            run = stub.GetRun(api.GetRunRequest(run_id="job2-auto")).run
            break
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.NOT_FOUND
            time.sleep(0.3)
    else:
        pytest.fail("no run auto-started with every outcome in")
    assert json.loads(run.dataset_manifest)["examples"] == 6


def test_a_run_asked_for_min_examples_waits_until_the_trainer_has_read_them_all(
    trainer, tiny_bert, kafka_settings, make_examples
):
    stub, _ = trainer
    request = api.StartRunRequest(job_id="job3", spec=spec(tiny_bert, max_steps=1), run_id="job3-run", min_examples=6)
    with pytest.raises(grpc.RpcError) as early:
        stub.StartRun(request)
    assert early.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "0 of 6" in early.value.details()
    producer = ProtoProducer(kafka_settings, client_id="test")
    for example in make_examples(6):
        message = pb.CuratedExample(
            content_hash=example.content_hash,
            job_id="job3",
            query=example.query,
            positives=[example.positive],
            negatives=list(example.negatives),
        )
        producer.send(topics.EXAMPLES_CURATED, message.content_hash, message)
    producer.flush()
    deadline = time.monotonic() + 60
    while True:
        try:
            run = stub.StartRun(request).run
            break
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and time.monotonic() < deadline
            time.sleep(0.2)
    assert json.loads(run.dataset_manifest)["examples"] == 6
    stub.CancelRun(api.CancelRunRequest(run_id="job3-run"))


WORDS = (
    "apple river stone castle harbour garden engine violin forest desert island bridge tower candle pepper marble silver copper "
    "rocket planet ocean valley mountain glacier lantern mirror carpet window ladder hammer pencil rubber cotton leather paper "
    "tiger eagle salmon spider rabbit horse camel donkey falcon turtle dolphin lizard violet purple orange yellow crimson "
    "scarlet golden bronze basket bottle button cheese butter bread coffee sugar honey lemon cherry banana tomato potato onion "
    "garlic walnut"
).split()


@pytest.mark.parametrize("trainer", [{"round_trip_k": 1}], indirect=True)
def test_queries_whose_passage_the_base_ranks_low_are_round_trip_rejects(trainer, tiny_bert, kafka_settings, tmp_path):
    stub, settings = trainer
    docs = tmp_path / "docs"
    docs.mkdir()
    vocab = [WORDS[6 * i : 6 * i + 6] for i in range(12)]  # twelve passages with words of their own
    for i, words in enumerate(vocab):
        (docs / f"d{i:02d}.txt").write_text(" ".join(words * 5))
    messages = [c for d in read_documents(docs) for c in chunk_messages("job4", d, 30)]
    chunks = [c.text for c in messages]
    job = pb.Job(job_id="job4", spec=pb.JobSpec(domain="things", corpus_chunk_words=30, corpus_queries=24))
    producer = ProtoProducer(kafka_settings, client_id="test")
    for chunk in messages:  # the job's mining corpus, as examplegen publishes it
        producer.send(topics.CORPUS_CHUNKS, chunk.chunk_id, chunk)
    producer.send_and_wait(topics.JOBS, job.job_id, job)
    deadline = time.monotonic() + 30
    while len(service_storage(settings).list("trainer/chunks/job4")) == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    # From each passage: a query in its own words, and one in the next passage's words (which ranks that one first).
    matched = {f"m{i:02d}": (" ".join(vocab[i][:4]), chunk) for i, chunk in enumerate(chunks)}
    mismatched = {f"x{i:02d}": (" ".join(vocab[(i + 1) % 12][:4]), chunk) for i, chunk in enumerate(chunks)}
    for content_hash, (query, positive) in (matched | mismatched).items():
        message = pb.CuratedExample(content_hash=content_hash, job_id="job4", query=query, positives=[positive])
        producer.send(topics.EXAMPLES_CURATED, message.content_hash, message)
    producer.flush()
    request = api.StartRunRequest(job_id="job4", spec=spec(tiny_bert, max_steps=1), run_id="job4-run", min_examples=24)
    deadline = time.monotonic() + 60
    while True:
        try:
            stub.StartRun(request)
            break
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and time.monotonic() < deadline
            time.sleep(0.2)
    final = list(stub.WatchRun(api.WatchRunRequest(run_id="job4-run"), timeout=300))[-1].run
    assert final.state == api.RUN_STATE_SUCCEEDED, final.error
    topic = physical_name(kafka_settings, topics.EXAMPLES_REJECTED)
    consumer = KafkaConsumer(
        topic, bootstrap_servers=kafka_settings.bootstrap_servers, auto_offset_reset="earliest", consumer_timeout_ms=5000
    )
    rejects = [pb.RejectedExample.FromString(r.value) for r in consumer]
    round_trip = {r.example_id for r in rejects if r.job_id == "job4" and r.reason == "round_trip"}
    run_dir = Path(settings.state_dir) / "trainer" / "runs" / "job4-run"
    trained = {e.content_hash for e in read_examples(run_dir / "train.mined.jsonl")}
    assert round_trip | trained == {e.content_hash for e in read_examples(run_dir / "train.jsonl")} and not round_trip & trained
    assert round_trip & set(mismatched) and trained & set(matched)
    assert len(round_trip & set(mismatched)) > len(round_trip & set(matched))


def test_cancel_stops_a_running_run(trainer, tiny_bert, dataset_file):
    stub, _ = trainer
    run = stub.StartRun(api.StartRunRequest(dataset_path=dataset_file, spec=spec(tiny_bert, epochs=500))).run
    for update in stub.WatchRun(api.WatchRunRequest(run_id=run.run_id), timeout=120):
        if update.run.state == api.RUN_STATE_TRAINING and update.run.step > 0:
            break
    cancelled = stub.CancelRun(api.CancelRunRequest(run_id=run.run_id), timeout=60).run
    assert cancelled.state == api.RUN_STATE_CANCELLED
    assert stub.GetRun(api.GetRunRequest(run_id=run.run_id)).run.step < cancelled.total_steps


def test_start_run_is_idempotent_by_run_id(trainer, tiny_bert, dataset_file):
    stub, _ = trainer
    request = api.StartRunRequest(dataset_path=dataset_file, spec=spec(tiny_bert, max_steps=1), run_id="same")
    first, second = stub.StartRun(request).run, stub.StartRun(request).run
    assert first.run_id == second.run_id == "same" and first.created_at == second.created_at
    stub.CancelRun(api.CancelRunRequest(run_id="same"))


@pytest.mark.parametrize(
    "request_kwargs, message",
    [
        ({}, "either job_id"),
        ({"dataset_path": "/nonexistent.jsonl"}, "dataset_path is not a regular file under the data roots"),
        ({"job_id": "unknown-job"}, "no curated examples"),
        ({"job_id": "unknown-job", "min_examples": -1}, "min_examples"),
        ({"dataset_path": "/nonexistent.jsonl", "min_examples": 3}, "needs job_id"),
    ],
)
def test_bad_start_requests_are_invalid_argument(trainer, request_kwargs, message):
    stub, _ = trainer
    with pytest.raises(grpc.RpcError) as error:
        stub.StartRun(api.StartRunRequest(**request_kwargs))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in error.value.details()


def test_a_bad_dev_fraction_is_invalid_argument(trainer, tiny_bert, dataset_file):
    stub, _ = trainer
    with pytest.raises(grpc.RpcError) as error:
        stub.StartRun(api.StartRunRequest(dataset_path=dataset_file, spec=spec(tiny_bert, dev_fraction=1.0)))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "dev_fraction must be in [0, 1)" in error.value.details()


def test_a_job_sets_its_dev_fraction_or_gets_the_service_default(tiny_bert, tmp_path):
    settings = TrainerSettings(state_dir=str(tmp_path), dev_fraction=0.1)

    def dev_fraction(**fields) -> float:
        return run_config(
            settings, spec(tiny_bert, **fields), tmp_path / "run", tmp_path / "data.jsonl", [], "", "Find it"
        ).dev_fraction

    assert dev_fraction() == 0.1
    assert dev_fraction(dev_fraction=0.25) == 0.25


def test_unknown_run_is_not_found(trainer):
    stub, _ = trainer
    with pytest.raises(grpc.RpcError) as error:
        stub.GetRun(api.GetRunRequest(run_id="nope"))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
