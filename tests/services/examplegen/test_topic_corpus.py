"""Chunks and corpus-grounded queries for documents from forge.documents (services.examplegen.topic_corpus):
the state alone, then through the real broker with a recorded-response LLM provider."""

import json
import uuid

from embedforge.v1 import messages_pb2 as pb
from libs import topics
from services.examplegen.service import build
from services.examplegen.topic_corpus import TopicCorpus
from tests.services.examplegen.harness import Running, TopicReader, send
from tests.services.examplegen.recorded import register_recorded
from tests.services.examplegen.test_service import settings_for

PARAGRAPH = "The inverter reports its state every minute and keeps a log of the last hundred events. "  # 17 words: one chunk each


def topic_job(job_id: str, corpus_queries: int, **fields) -> pb.Job:
    return pb.Job(
        job_id=job_id,
        spec=pb.JobSpec(domain="home batteries", corpus_queries=corpus_queries, corpus_chunk_words=20, seed=2, **fields),
    )


def document(job_id: str, doc_id: str, paragraphs: int = 1) -> pb.Document:
    return pb.Document(
        doc_id=doc_id, job_id=job_id, title=doc_id, text="\n\n".join(PARAGRAPH for _ in range(paragraphs)), collection="c"
    )


def planned(corpus: TopicCorpus, job: pb.Job, doc: pb.Document) -> list[tuple[str, int, int]]:
    return [(c.doc_id, c.chunk_index, queries) for c, queries in corpus.plan(job, [doc])]


def test_every_chunk_is_planned_and_new_ones_get_a_query_until_the_budget_is_spent(tmp_path):
    corpus = TopicCorpus(tmp_path)
    job = topic_job("j", corpus_queries=3)
    assert planned(corpus, job, document("j", "a", paragraphs=2)) == [("a", 0, 1), ("a", 1, 1)]  # 2 chunks of one paragraph
    assert planned(corpus, job, document("j", "b", paragraphs=2)) == [("b", 0, 1), ("b", 1, 0)]  # budget: 1 left
    assert planned(corpus, job, document("j", "c")) == [("c", 0, 0)]  # still published, for mining and indexing
    restarted = TopicCorpus(tmp_path)
    assert planned(restarted, job, document("j", "a", paragraphs=2)) == [("a", 0, 1), ("a", 1, 1)]  # redelivered: same chunks
    assert planned(restarted, job, document("j", "c")) == [("c", 0, 0)]
    (chunk, _), _ = corpus.plan(job, [document("j", "a", paragraphs=2)])
    assert (chunk.chunk_count, chunk.collection, chunk.title, chunk.text) == (2, "c", "a", PARAGRAPH.strip())


def test_documents_before_their_job_wait_for_it_and_are_dropped_for_a_job_with_a_corpus_path(tmp_path):
    corpus = TopicCorpus(tmp_path)
    corpus.park(document("early", "a"))
    corpus.park(document("with-path", "a"))
    assert corpus.job("early") is None
    assert [d.doc_id for d in corpus.add_job(topic_job("early", 5))] == ["a"]
    assert corpus.job("early").spec.corpus_queries == 5
    assert corpus.add_job(topic_job("with-path", 5, corpus_path="/docs")) == []
    assert corpus.add_job(topic_job("with-path", 5)) == []  # the parked copy is gone
    corpus.park(document("no-queries", "a"))
    assert [d.doc_id for d in corpus.add_job(topic_job("no-queries", 0))] == ["a"]  # chunked for mining and indexing


def test_documents_on_the_topic_become_grounded_queries_through_the_broker(kafka_settings, tmp_path):
    register_recorded()
    job_id = "job-topic-" + uuid.uuid4().hex[:6]
    chunk_reader = TopicReader(kafka_settings, topics.CORPUS_CHUNKS)
    raw_reader = TopicReader(kafka_settings, topics.EXAMPLES_RAW)
    send(kafka_settings, topics.DOCUMENTS, "early", document(job_id, "early"))  # before its job: parked
    send(kafka_settings, topics.DOCUMENTS, "other", document("another-job", "other"))
    with Running(build(settings_for(kafka_settings, tmp_path))):
        send(kafka_settings, topics.JOBS, job_id, topic_job(job_id, corpus_queries=3))
        send(kafka_settings, topics.DOCUMENTS, "later", document(job_id, "later", paragraphs=3))
        chunks = chunk_reader.wait_for(lambda m: len([c for c in m if c.job_id == job_id]) >= 4)
        raw_reader.wait_for(lambda m: len([r for r in m if r.job_id == job_id]) >= 3)
        chunks = [c for c in chunk_reader.settle(2.0) if c.job_id == job_id]
        raws = raw_reader.settle(2.0)
    chunk_reader.close()
    raw_reader.close()
    # the budget of 3: the first three chunks get a query
    assert sorted((c.doc_id, c.num_queries) for c in chunks) == [("early", 1), ("later", 0), ("later", 1), ("later", 1)]
    assert all(c.text == PARAGRAPH.strip() for c in chunks)
    ours = [r for r in raws if r.job_id == job_id]
    assert len(ours) == 3 and {r.chunk_id for r in ours} == {c.chunk_id for c in chunks if c.num_queries}
    assert all(r.category == pb.CATEGORY_CORPUS_GROUNDED and "query" in json.loads(r.raw_output) for r in ours)
