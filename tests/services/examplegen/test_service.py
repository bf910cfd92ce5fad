"""examplegen against the real broker: its build() with real consumer loops, producer and
loopback gRPC. LLMs: a recorded-response provider registered in litellm (recorded.py) and a
real OpenAI-compatible HTTP server injecting faults (tests/libs/llm/fault_server.py); the
local SmolLM2 provider runs in tests/services/taskgen/test_job_to_examples.py."""

import json
import time
import uuid

import pytest

from embedforge.v1 import examplegen_pb2 as api
from embedforge.v1 import examplegen_pb2_grpc as api_grpc
from embedforge.v1 import messages_pb2 as pb
from libs import topics
from services.examplegen.generation import example_id
from services.examplegen.service import Examplegen, build
from services.examplegen.settings import ExamplegenSettings
from tests.libs.llm.fault_server import FaultServer, Reply
from tests.services.examplegen.harness import Running, TopicReader, send
from tests.services.examplegen.recorded import register_recorded

RETRIEVAL_ANSWER = {"user_query": "q", "positive_document": "p", "hard_negative_document": "n"}


def settings_for(kafka_settings, state_dir, **overrides) -> ExamplegenSettings:
    llm = {"model": "recorded/generator", "backoff_initial_s": 0.01, "backoff_max_s": 0.05, **overrides.pop("llm", {})}
    return ExamplegenSettings(kafka=kafka_settings.model_dump(), state_dir=str(state_dir), llm=llm, **overrides)


def task(
    category=pb.CATEGORY_RETRIEVAL,
    description="Retrieve tenancy rulings that answer a tenant's question",
    num_examples=2,
    **fields,
) -> pb.Task:
    job_id = fields.pop("job_id", "job-" + uuid.uuid4().hex[:6])
    return pb.Task(
        task_id=uuid.uuid4().hex,
        job_id=job_id,
        category=category,
        description=description,
        num_examples=num_examples,
        seed=3,
        **fields,
    )


@pytest.fixture
def raw_reader(kafka_settings):
    reader = TopicReader(kafka_settings, topics.EXAMPLES_RAW)
    yield reader
    reader.close()


def test_task_examples_are_published_with_full_provenance(kafka_settings, tmp_path, raw_reader):
    register_recorded()
    sent = task(
        languages=[pb.LanguageWeight(language="zh", weight=1), pb.LanguageWeight(language="en", weight=1)], num_examples=3
    )
    with Running(build(settings_for(kafka_settings, tmp_path))):
        send(kafka_settings, topics.TASKS, sent.task_id, sent)
        raws = raw_reader.wait_for(lambda m: len(m) >= 3)
    assert sorted(r.example_id for r in raws) == sorted(example_id(sent.task_id, i) for i in range(3))
    for raw in raws:
        assert (raw.job_id, raw.task_id, raw.category, raw.task_description) == (
            sent.job_id,
            sent.task_id,
            sent.category,
            sent.description,
        )
        assert (raw.template_id, raw.template_version) == ("retrieval", "2")
        assert raw.attributes["language"] in ("zh", "en")
        assert {"query_type", "query_length", "clarity", "num_words", "difficulty"} <= set(raw.attributes)
        answer = json.loads(raw.raw_output)
        assert (raw.query, list(raw.positives)) == (answer["user_query"], [answer["positive_document"]])
        assert list(raw.negatives) == [answer["hard_negative_document"]]
        assert (raw.source, raw.language) == ("generated", raw.attributes["language"])
        assert raw.HasField("query_words") and raw.HasField("document_words")
        assert (raw.usage.model, raw.usage.calls, raw.error) == ("recorded/generator", 1, "")
        assert raw.usage.prompt_tokens > 0 and raw.usage.latency_s > 0
        assert raw.created_at.seconds > 0


def test_llm_faults_are_retried_then_published_as_failed_and_the_pipeline_continues(
    kafka_settings, tmp_path, raw_reader, monkeypatch
):
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")

    def choose(body):
        prompt = body["messages"][-1]["content"]
        if "RATE" in prompt:
            return Reply(429, retry_after="0")
        if "BROKEN" in prompt:
            return Reply(500)
        if "SLOW" in prompt:
            return Reply(text=json.dumps(RETRIEVAL_ANSWER), delay_s=2.0)
        if "GARBLED" in prompt:
            return Reply(text='{"user_query": "q", "positive_document": ')
        return Reply(text=json.dumps(RETRIEVAL_ANSWER))

    with FaultServer([], choose=choose) as server:
        settings = settings_for(
            kafka_settings, tmp_path, llm={"model": "openai/fault", "api_base": server.api_base, "attempts": 2, "timeout_s": 0.5}
        )
        words = ["RATE", "BROKEN", "SLOW", "GARBLED", "FINE"]
        sent = {w: task(description=f"Retrieve {w} documents for tenants", num_examples=1) for w in words}
        with Running(build(settings)) as running:
            for t in sent.values():
                send(kafka_settings, topics.TASKS, t.task_id, t)
            raws = raw_reader.wait_for(lambda m: len(m) >= len(words))
            stats = api_grpc.ExamplegenServiceStub(running.channel()).GetGenerationStats(api.GetGenerationStatsRequest())
    by_task = {r.task_id: r for r in raws}
    errors = {w: by_task[t.task_id].error.split(":", 1)[0] for w, t in sent.items()}
    assert errors == {"RATE": "rate_limited", "BROKEN": "server_error", "SLOW": "timeout", "GARBLED": "invalid_json", "FINE": ""}
    assert all(by_task[sent[w].task_id].usage.calls == 2 for w in ("RATE", "BROKEN", "SLOW", "GARBLED"))
    fine = by_task[sent["FINE"].task_id]
    assert json.loads(fine.raw_output) == RETRIEVAL_ANSWER
    assert (fine.query, list(fine.positives), list(fine.negatives)) == ("q", ["p"], ["n"])
    assert (stats.succeeded, stats.failed) == (1, 4)
    assert dict(stats.failures_by_reason) == {"rate_limited": 1, "server_error": 1, "timeout": 1, "invalid_json": 1}


def test_job_corpus_is_chunked_and_each_chunk_gets_grounded_queries(kafka_settings, tmp_path, raw_reader):
    register_recorded()
    corpus = tmp_path / "beir"
    corpus.mkdir()
    docs = [{"_id": f"d{i}", "title": f"Doc {i}", "text": f"Paragraph about topic {i}. " * 5} for i in range(3)]
    (corpus / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in docs))
    task = "Given a question about dune erosion, retrieve engineering reports that answer it"
    examples = ["how fast do dunes erode"]
    spec = pb.JobSpec(
        domain="coastal engineering", task=task, example_queries=examples, corpus_path=str(corpus), corpus_queries=4, seed=1
    )
    job = pb.Job(job_id="job-corpus-" + uuid.uuid4().hex[:6], spec=spec)
    chunk_reader = TopicReader(kafka_settings, topics.CORPUS_CHUNKS)
    with Running(build(settings_for(kafka_settings, tmp_path / "state", data={"roots": [str(corpus)]}))):
        send(kafka_settings, topics.JOBS, job.job_id, job)
        chunks = chunk_reader.wait_for(lambda m: len(m) >= 3)
        raws = raw_reader.wait_for(lambda m: len(m) >= 4)
    chunk_reader.close()
    assert sorted(c.num_queries for c in chunks) == [1, 1, 2]
    assert all(c.task_description == task and list(c.example_queries) == examples for c in chunks)
    texts = {c.chunk_id: c.text for c in chunks}
    for raw in raws:
        assert (raw.category, raw.template_id, raw.job_id) == (pb.CATEGORY_CORPUS_GROUNDED, "corpus_query", job.job_id)
        assert raw.chunk_text == texts[raw.chunk_id]
        assert raw.attributes["doc_id"] in {"d0", "d1", "d2"} and raw.attributes["title"] == f"Doc {raw.attributes['doc_id'][1:]}"
        assert (raw.query, list(raw.positives), raw.source) == (json.loads(raw.raw_output)["query"], [raw.chunk_text], "corpus")


def test_a_job_without_a_task_gets_the_short_default_task_not_its_whole_domain(tmp_path):
    (tmp_path / "manual.txt").write_text("The inverter restarts after a fault. " * 20)
    settings = ExamplegenSettings(state_dir=str(tmp_path / "state"), data={"roots": [str(tmp_path)]})
    examplegen = Examplegen(settings, producer=None, writer=None, published=None)
    domain = "Service manuals for solar inverters. They cover faults, restarts, firmware and wiring in great detail."
    job = pb.Job(job_id="job-task", spec=pb.JobSpec(domain=domain, corpus_path=str(tmp_path), corpus_queries=1))
    (chunk,) = examplegen.corpus_chunks(job)
    assert chunk.task_description == "Given a search query, retrieve relevant passages about Service manuals for solar inverters"


def test_a_job_can_ask_for_finer_chunks_than_the_default(tmp_path):
    paragraphs = "\n\n".join(f"Paragraph {i} " + "word " * 29 for i in range(6))  # 6 paragraphs of 31 words
    (tmp_path / "manual.txt").write_text(paragraphs)
    examplegen = Examplegen(
        ExamplegenSettings(state_dir=str(tmp_path / "state"), data={"roots": [str(tmp_path)]}),
        producer=None,
        writer=None,
        published=None,
    )

    def chunk_count(**fields) -> int:
        job = pb.Job(
            job_id="job-chunks", spec=pb.JobSpec(domain="manuals", corpus_path=str(tmp_path), corpus_queries=50, **fields)
        )
        return len(examplegen.corpus_chunks(job))

    assert chunk_count() == 1  # the default (DEFAULT_CHUNK_WORDS, 200): one chunk holds the whole document
    assert chunk_count(corpus_chunk_words=62) == 3  # two paragraphs each


def test_every_chunk_of_the_corpus_is_published_and_the_queries_go_to_a_seeded_sample(tmp_path):
    (tmp_path / "manual.txt").write_text("\n\n".join(f"Paragraph {i} " + "word " * 29 for i in range(6)))  # 6 chunks of 31 words
    settings = ExamplegenSettings(state_dir=str(tmp_path / "state"), data={"roots": [str(tmp_path)]})
    examplegen = Examplegen(settings, producer=None, writer=None, published=None)

    def chunks(corpus_queries: int) -> list[pb.CorpusChunk]:
        spec = pb.JobSpec(domain="manuals", corpus_path=str(tmp_path), corpus_queries=corpus_queries, corpus_chunk_words=31)
        spec.collection = "manuals"
        return examplegen.corpus_chunks(pb.Job(job_id="job-all", spec=spec))

    some = chunks(3)
    positions = [(c.doc_id, c.chunk_index, c.chunk_count, c.collection) for c in some]
    assert positions == [("manual.txt", i, 6, "manuals") for i in range(6)]
    assert sorted(c.num_queries for c in some) == [0, 0, 0, 1, 1, 1]
    assert [bool(c.task_description) for c in some] == [bool(c.num_queries) for c in some]
    assert [c.chunk_id for c in chunks(0)] == [c.chunk_id for c in some] and not any(c.num_queries for c in chunks(0))


def test_chunks_without_queries_are_not_generated_for(kafka_settings, tmp_path, raw_reader):
    provider = register_recorded()
    calls = len(provider.prompts)
    indexing_only = pb.CorpusChunk(chunk_id="c-none", job_id="job-none", doc_id="d", text="A passage to index.", chunk_count=1)
    asked = pb.CorpusChunk(chunk_id="c-one", job_id="job-none", doc_id="d2", text="A passage to ask about.", num_queries=1)
    with Running(build(settings_for(kafka_settings, tmp_path))):
        send(kafka_settings, topics.CORPUS_CHUNKS, indexing_only.chunk_id, indexing_only)
        send(kafka_settings, topics.CORPUS_CHUNKS, asked.chunk_id, asked)
        raw_reader.wait_for(lambda m: len(m) >= 1)
        raws = raw_reader.settle(2.0)
    assert [r.chunk_id for r in raws] == ["c-one"] and len(provider.prompts) == calls + 1


def test_a_redelivered_task_does_not_regenerate_published_examples(kafka_settings, tmp_path, raw_reader):
    provider = register_recorded()
    sent = task(num_examples=2)
    with Running(build(settings_for(kafka_settings, tmp_path))):
        send(kafka_settings, topics.TASKS, sent.task_id, sent)
        raw_reader.wait_for(lambda m: len(m) >= 2)
    calls = len(provider.prompts)
    with Running(build(settings_for(kafka_settings, tmp_path))):
        send(kafka_settings, topics.TASKS, sent.task_id, sent)
        follow_up = task(num_examples=1)
        send(kafka_settings, topics.TASKS, follow_up.task_id, follow_up)
        raws = raw_reader.wait_for(lambda m: any(r.task_id == follow_up.task_id for r in m))
    assert len(provider.prompts) == calls + 1
    assert [r.task_id for r in raws].count(sent.task_id) == 2


def test_stopping_mid_generation_publishes_nothing_half_done_and_a_restart_writes_each_example_once(
    kafka_settings, tmp_path, raw_reader
):
    slow = register_recorded(delay_s=3.0)
    sent = task(num_examples=3)
    running = Running(build(settings_for(kafka_settings, tmp_path))).__enter__()
    send(kafka_settings, topics.TASKS, sent.task_id, sent)
    deadline = time.monotonic() + 30
    while len(slow.prompts) < 3 and time.monotonic() < deadline:  # all three calls in flight
        time.sleep(0.05)
    running.stop()
    assert raw_reader.settle(4.0) == []  # the slow answers arrive after the stop: none is published
    register_recorded()
    with Running(build(settings_for(kafka_settings, tmp_path))):
        raw_reader.wait_for(lambda m: len(m) >= 3)
        raws = raw_reader.settle(2.0)
    assert sorted(r.example_id for r in raws) == sorted(example_id(sent.task_id, i) for i in range(3))


def test_a_task_that_cannot_be_planned_is_dead_lettered_with_the_reason(kafka_settings, tmp_path):
    register_recorded()
    bad = task(category=pb.CATEGORY_CORPUS_GROUNDED)
    dead = TopicReader(kafka_settings, topics.DEAD_LETTER)
    with Running(build(settings_for(kafka_settings, tmp_path))):
        send(kafka_settings, topics.TASKS, bad.task_id, bad)
        letters = dead.wait_for(lambda m: len(m) >= 1)
    dead.close()
    assert letters[0].reason == "handler_error"
    assert "corpus-grounded" in letters[0].detail


@pytest.mark.parametrize("corpus_path", ["missing", "/etc", "../../../../etc", "link-out"])
def test_a_job_whose_corpus_is_missing_or_outside_the_data_roots_is_dead_lettered_and_nothing_is_read(
    kafka_settings, tmp_path, corpus_path
):
    """A job put on forge.jobs directly (past taskgen's checks) cannot make examplegen read a file."""
    register_recorded()
    (tmp_path / "data").mkdir()
    (tmp_path / "secret.txt").write_text("secret " * 50)
    (tmp_path / "data" / "link-out").symlink_to(tmp_path / "secret.txt")
    path = corpus_path if corpus_path.startswith(("/", "..")) else str(tmp_path / "data" / corpus_path)
    job = pb.Job(job_id="job-nocorpus", spec=pb.JobSpec(domain="law", corpus_path=path, corpus_queries=2))
    dead, chunks = TopicReader(kafka_settings, topics.DEAD_LETTER), TopicReader(kafka_settings, topics.CORPUS_CHUNKS)
    with Running(build(settings_for(kafka_settings, tmp_path / "state", data={"roots": [str(tmp_path / "data")]}))):
        send(kafka_settings, topics.JOBS, job.job_id, job)
        letters = dead.wait_for(lambda m: len(m) >= 1)
        published = chunks.settle(1.0)
    dead.close()
    chunks.close()
    assert letters[0].reason == "handler_error"
    assert "spec.corpus_path is not a regular file or folder under the data roots" in letters[0].detail
    assert published == []
