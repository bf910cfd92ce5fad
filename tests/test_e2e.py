"""End to end: a tiny job through every real service (`make run`'s path), then the report's
numbers checked against what is in Kafka and in Qdrant.

Real parts only: the tansu broker, the five service processes started as their containers
start them, the local generator server (llama.cpp serving Qwen2.5-Coder-0.5B-Instruct, reached
through litellm as `hosted_vllm/...`; no remote API; the brainstorm at temperature 0), the
all-MiniLM-L6-v2 base model, and Qdrant's embedded on-disk mode. Evaluation uses a small
BEIR-layout folder cut from ../shared/data/xquad-en (its test questions are never trained on).
"""

import json
import uuid
from collections import Counter
from pathlib import Path

import pytest
from kafka import KafkaConsumer
from qdrant_client import QdrantClient
from rich.console import Console
from sentence_transformers import SentenceTransformer

from embedforge.v1 import messages_pb2 as pb
from libs import topics
from libs.jobspec import job_spec_from_dict
from libs.kafka import physical_name
from libs.local.pipeline import progress_bars, run_job
from libs.local.report import write_report
from libs.local.runtime import LocalRuntime, job_data_roots
from libs.storage import Storage

DEMO_DOCS = Path(__file__).resolve().parents[1] / "examples" / "demo" / "docs"


def read_topic(runtime: LocalRuntime, topic: topics.Topic, job_id: str) -> list[tuple[str, object]]:
    """Every (key, message) of the job on a topic, from the beginning to the current end."""
    consumer = KafkaConsumer(
        physical_name(runtime.kafka_settings, topic),
        bootstrap_servers=runtime.kafka_settings.bootstrap_servers,
        auto_offset_reset="earliest",
        consumer_timeout_ms=2000,
    )
    records = [(r.key.decode(), topic.message_type.FromString(r.value)) for r in consumer]
    consumer.close()
    return [(key, message) for key, message in records if message.job_id == job_id]


def small_beir_folder(source: Path, target: Path, queries: int = 20) -> Path:
    """The first ``queries`` questions of a BEIR folder with their relevant documents plus distractors."""
    (target / "qrels").mkdir(parents=True)
    qrels = [line.split("\t") for line in (source / "qrels" / "test.tsv").read_text().splitlines()[1:]]
    wanted = {}
    for query_id, doc_id, score in qrels:
        if len(wanted) < queries or query_id in wanted:
            wanted.setdefault(query_id, []).append((doc_id, score.strip()))
    docs = {d for pairs in wanted.values() for d, _ in pairs}
    corpus = [json.loads(line) for line in (source / "corpus.jsonl").read_text().splitlines()]
    kept = [doc for doc in corpus if doc["_id"] in docs] + [doc for doc in corpus if doc["_id"] not in docs][:30]
    (target / "corpus.jsonl").write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in kept))
    questions = [json.loads(line) for line in (source / "queries.jsonl").read_text().splitlines()]
    (target / "queries.jsonl").write_text(
        "".join(json.dumps(q, ensure_ascii=False) + "\n" for q in questions if q["_id"] in wanted)
    )
    (target / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{s}\n" for q, pairs in wanted.items() for d, s in pairs)
    )
    return target


@pytest.fixture
def tiny_job(tmp_path, shared_data) -> pb.JobSpec:
    return job_spec_from_dict(
        {
            "name": "e2e-tiny",
            "domain": "Customer support for the Helios H5 home battery: status lights, error codes and the companion app.",
            "languages": {"en": 1.0},
            "categories": {"classification": {"tasks": 1, "examples_per_task": 3}},
            "corpus_path": str(DEMO_DOCS),
            "corpus_queries": 8,
            "collection": f"e2e-{uuid.uuid4().hex[:6]}",
            "sample_query": "the battery ring is red",
            "eval_paths": [str(small_beir_folder(shared_data / "xquad-en", tmp_path / "xquad-small"))],
            "training": {"max_steps": 3, "batch_size": 4},
        }
    )


def test_a_tiny_job_runs_through_every_service_and_its_report_matches_kafka_and_qdrant(broker, llm_server, tmp_path, tiny_job):
    runtime = LocalRuntime(
        tmp_path / "run",
        topic_prefix=f"e2e{uuid.uuid4().hex[:6]}.",
        extra_env={
            "{PREFIX}TELEMETRY__LOG_LEVEL": "INFO",
            "TASKGEN_BRAINSTORM_TEMPERATURE": "0",
            "TASKGEN_BRAINSTORM_MAX_TOKENS": "96",
        },
        data_roots=job_data_roots(tiny_job),
    )
    runtime.start_broker(broker)
    runtime.start_llm_server(llm_server)
    try:
        for name in runtime.services:
            runtime.start_service(name)
        for name in runtime.services:
            runtime.wait_healthy(name, timeout_s=300)
        with progress_bars(Console(file=open(tmp_path / "progress.txt", "w"))) as progress:
            report = run_job(runtime, tiny_job, progress, stall_timeout_s=900)
        paths = write_report(report, tmp_path / "report")
        job_id = report["job"]["job_id"]

        raw = read_topic(runtime, topics.EXAMPLES_RAW, job_id)
        curated = dict(read_topic(runtime, topics.EXAMPLES_CURATED, job_id))  # consumers dedup by content hash
        rejections = [message for _, message in read_topic(runtime, topics.EXAMPLES_REJECTED, job_id)]
        # The curator's rejects, and the trainer's round_trip ones (by content hash).
        rejected = {message.example_id: message.reason for message in rejections if message.reason != "round_trip"}
        round_trip = {message.example_id for message in rejections if message.reason == "round_trip"}
        tasks = read_topic(runtime, topics.TASKS, job_id)
        models = [m for _, m in read_topic(runtime, topics.MODELS, job_id)]
        chunks = {c.chunk_id: c for _, c in read_topic(runtime, topics.CORPUS_CHUNKS, job_id)}
    finally:
        codes = runtime.stop()
    assert codes == dict.fromkeys(runtime.services, 0)

    # Data: every generated example has exactly one outcome, and the report counts them right.
    generation, curation = report["generation"], report["curation"]
    assert len({r.example_id for _, r in raw}) == generation["succeeded"] + generation["failed"] == 3 + 8
    assert len({t.task_id for _, t in tasks}) == report["job"]["tasks"] == 1
    assert len(curated) == curation["accepted"] > 0
    assert len(rejected) == curation["rejected"]
    assert dict(Counter(rejected.values())) == {k: v for k, v in curation["rejected_by_reason"].items() if v}
    assert {e.provenance.example_id for e in curated.values()}.isdisjoint(rejected)
    assert dict(Counter(e.language for e in curated.values())) == curation["accepted_by_language"]
    # Token usage: the examples stage's totals are the sums over the raw examples it published.
    examples_usage = [u for u in report["usage"] if u["stage"] == "examples"]
    assert (
        sum(u["completion_tokens"] for u in examples_usage)
        == sum(r.usage.completion_tokens for _, r in {r.example_id: (k, r) for k, r in raw}.values())
        > 0
    )
    job_total = [u for u in report["usage"] if u["stage"] == "job total"]
    assert sum(u["completion_tokens"] for u in job_total) > sum(
        u["completion_tokens"] for u in examples_usage
    )  # brainstorm tokens on top

    # Training and evaluation: the run used the curated set, base and tuned were both measured.
    training = report["training"]
    assert training["train_examples"] + training["dev_examples"] == len(curated)
    # The round-trip filter left these curated training examples out (published when the model was).
    assert round_trip <= {e.content_hash for e in curated.values()} and len(round_trip) < training["train_examples"]
    assert report["job"]["task"]  # drafted by taskgen: the job gives none
    assert 1 <= training["steps"] <= 3  # max_steps caps the run; a smaller curated set ends it sooner
    assert [step for step, _ in training["loss_curve"]] == list(range(1, training["steps"] + 1))
    datasets = {e["dataset"] for e in report["evaluation"]}
    assert {"dev", "xquad-small"} <= datasets, datasets
    assert all(0.0 <= e["base"] <= 1.0 and 0.0 <= e["tuned"] <= 1.0 for e in report["evaluation"])
    assert all(e["difference_se"] >= 0.0 for e in report["evaluation"])
    xquad = next(e for e in report["evaluation"] if e["dataset"] == "xquad-small" and e["metric"] == "ndcg@10")
    assert xquad["base"] > 0.5  # all-MiniLM-L6-v2 ranks these English passages well; a broken eval would not
    assert [m.model_id for m in models] == [report["model"]["model_id"]]
    # Trainer and embedder share local mode's storage (file://<run dir>/storage): fetch it as the embedder does.
    folder = Storage((tmp_path / "run" / "storage").as_uri()).get_folder(
        report["model"]["uri"], report["model"]["manifest_digest"], tmp_path / "model"
    )
    model = SentenceTransformer(str(folder), device="cpu")
    assert model.encode(["status lights"]).shape == (1, models[0].dimensions)

    # Chunks cut once: the run mined from the very chunks examplegen published (corpus-grounded
    # queries were written for some of them), and the embedder serves exactly those passages.
    assert sum(c.num_queries for c in chunks.values()) == 8
    run_folder = tmp_path / "run" / "state" / "trainer" / "trainer" / "runs" / training["run_id"]
    mined_from = [json.loads(line) for line in (run_folder / "corpus_chunks.jsonl").read_text().splitlines()]
    assert sorted((row["_id"], row["text"]) for row in mined_from) == sorted((c.chunk_id, c.text) for c in chunks.values())
    # Index: the embedder serves the new model and indexed every document once; Qdrant agrees.
    documents = sorted(p.name for p in DEMO_DOCS.iterdir())
    assert report["job"]["documents"] == report["index"]["documents"] == len(documents)
    qdrant = QdrantClient(path=str(tmp_path / "run" / "state" / "embedder" / "qdrant"))
    try:
        collection = report["index"]["collection"]
        assert qdrant.count(collection, exact=True).count == report["index"]["points"] > 0
        points, _ = qdrant.scroll(collection, limit=10_000, with_payload=True)
        assert sorted({p.payload["doc_id"] for p in points}) == documents
        served = sorted((p.payload["chunk_id"], p.payload["text"]) for p in points)
        assert served == sorted((c.chunk_id, c.text) for c in chunks.values())
    finally:
        qdrant.close()
    hits = report["sample_search"]["hits"]
    assert hits and {h["doc_id"] for h in hits} <= set(documents)

    # The files a user reads.
    assert json.loads(paths["json"].read_text())["model"] == report["model"]
    assert "Sample hybrid search" in paths["markdown"].read_text()
    assert paths["loss_curve"].read_bytes()[:4] == b"\x89PNG"
