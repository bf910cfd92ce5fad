"""Indexing into embedded Qdrant: idempotent re-ingest, updates and deletes replace chunks,
known-query search (dense and hybrid) on xquad-en, state across a restart, re-index on swap."""

import json
import logging
import threading
from pathlib import Path

import pytest

from embedforge.v1 import embedder_pb2 as api
from embedforge.v1 import messages_pb2 as pb
from libs.storage import service_storage
from services.embedder.service import build_servicer
from services.embedder.vectorstore import point_id

LONG = " ".join(f"Sentence {i} tells about the history of river number {i}." for i in range(120))


def index(servicer, documents):
    return servicer.indexer.apply(documents, servicer.current, servicer.settings.collection)


def count(servicer, collection="documents"):
    return servicer.store.count(collection)


def test_reingesting_the_same_documents_leaves_the_point_count_unchanged(servicer):
    documents = [
        pb.Document(doc_id="long", text=LONG, title="Rivers"),
        pb.Document(doc_id="short", text="Lakes are still water."),
    ]
    first = index(servicer, documents)
    before = count(servicer)
    index(servicer, documents)
    assert first.chunks > 2
    assert count(servicer) == before == first.chunks


def test_point_ids_are_uuid5_of_document_and_chunk(servicer):
    index(servicer, [pb.Document(doc_id="d1", text=LONG)])
    physical = servicer.store.resolve("documents")
    records = servicer.store.client.retrieve(physical, ids=[point_id("d1", 0), point_id("d1", 1)], with_payload=True)
    assert [(r.payload["doc_id"], r.payload["chunk_index"]) for r in records] == [("d1", 0), ("d1", 1)]


def test_updating_a_document_replaces_its_chunks(servicer):
    index(servicer, [pb.Document(doc_id="d1", text=LONG), pb.Document(doc_id="other", text="Unrelated text about bread.")])
    index(servicer, [pb.Document(doc_id="d1", text="Now it is one short paragraph about mountains.")])
    assert count(servicer) == 2
    hits = servicer.Search(api.SearchRequest(query="mountains", top_k=5), None).hits
    texts = {h.text for h in hits if h.doc_id == "d1"}
    assert texts == {"Now it is one short paragraph about mountains."}


def test_deleting_a_document_removes_all_its_chunks(servicer):
    index(servicer, [pb.Document(doc_id="d1", text=LONG), pb.Document(doc_id="keep", text="Kept document.")])
    stats = index(servicer, [pb.Document(doc_id="d1", deleted=True)])
    assert stats.deleted == 1
    assert count(servicer) == 1
    assert {h.doc_id for h in servicer.Search(api.SearchRequest(query="river history"), None).hits} == {"keep"}


def test_the_last_version_of_a_document_in_one_batch_wins(servicer):
    index(servicer, [pb.Document(doc_id="d", text="first version"), pb.Document(doc_id="d", text="second version")])
    (hit,) = servicer.Search(api.SearchRequest(query="version"), None).hits
    assert hit.text == "second version"


def test_a_document_is_cut_into_the_chunks_examplegen_would_publish(servicer):
    from libs.corpus import DEFAULT_CHUNK_WORDS, SourceDocument, chunk_messages

    index(servicer, [pb.Document(doc_id="long", title="Rivers", text=LONG)])
    records, _ = servicer.store.client.scroll(servicer.store.resolve("documents"), limit=100, with_payload=True)
    expected = chunk_messages("", SourceDocument("long", "Rivers", LONG), DEFAULT_CHUNK_WORDS)
    points = sorted((r.payload["chunk_index"], r.payload["chunk_id"], r.payload["text"]) for r in records)
    assert points == [(c.chunk_index, c.chunk_id, c.text) for c in expected]


def test_republished_chunks_of_a_shorter_version_replace_the_longer_one(servicer):
    def chunks(count: int, version: str) -> list[pb.CorpusChunk]:
        return [
            pb.CorpusChunk(chunk_id=f"c{i}", job_id="j", doc_id="d", text=f"{version} part {i}", chunk_index=i, chunk_count=count)
            for i in range(count)
        ]

    servicer.indexer.apply_chunks(chunks(3, "old"), servicer.current, "documents")
    assert count(servicer) == 3
    stats = servicer.indexer.apply_chunks(chunks(1, "new"), servicer.current, "documents")
    assert (stats.documents, stats.chunks, count(servicer)) == (1, 1, 1)
    (hit,) = servicer.Search(api.SearchRequest(query="part"), None).hits
    assert hit.text == "new part 0"


def test_a_chunk_without_text_or_outside_its_documents_count_is_refused(servicer):
    def apply(chunks):
        servicer.indexer.apply_chunks(chunks, servicer.current, "documents")

    with pytest.raises(ValueError, match="needs chunk_id, doc_id and text"):
        apply([pb.CorpusChunk(chunk_id="c", doc_id="d", text=" ", chunk_count=1)])
    with pytest.raises(ValueError, match="not within chunk_count"):
        apply([pb.CorpusChunk(chunk_id="c", doc_id="d", text="t", chunk_index=1, chunk_count=1)])


def test_a_document_without_text_or_id_is_refused_with_the_reason(servicer):
    with pytest.raises(ValueError, match="no text"):
        index(servicer, [pb.Document(doc_id="empty", text="  ")])
    with pytest.raises(ValueError, match="no doc_id"):
        index(servicer, [pb.Document(text="orphan")])


def test_search_filters_on_metadata(servicer):
    index(
        servicer,
        [
            pb.Document(doc_id="en", text="The capital of France is Paris.", metadata={"lang": "en"}),
            pb.Document(doc_id="fr", text="La capitale de la France est Paris.", metadata={"lang": "fr"}),
        ],
    )
    for mode in (api.SEARCH_MODE_DENSE, api.SEARCH_MODE_HYBRID):
        hits = servicer.Search(api.SearchRequest(query="capital of France", filter={"lang": "fr"}, mode=mode), None).hits
        assert [(h.doc_id, h.metadata["lang"]) for h in hits] == [("fr", "fr")]


@pytest.fixture(scope="module")
def xquad_subset(shared_data):
    """40 passages of xquad-en and up to 2 questions for each of the first 20 (37 in all)."""
    folder = shared_data / "xquad-en"
    corpus = [json.loads(line) for line in (folder / "corpus.jsonl").read_text().splitlines()][:40]
    queries = {q["_id"]: q["text"] for q in map(json.loads, (folder / "queries.jsonl").read_text().splitlines())}
    wanted = {c["_id"] for c in corpus[:20]}
    pairs, per_doc = [], {}
    for line in (folder / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        query_id, doc_id, _ = line.split("\t")
        if doc_id in wanted and per_doc.get(doc_id, 0) < 2:
            per_doc[doc_id] = per_doc.get(doc_id, 0) + 1
            pairs.append((queries[query_id], doc_id))
    documents = [pb.Document(doc_id=c["_id"], title=c.get("title", ""), text=c["text"]) for c in corpus]
    return documents, pairs


@pytest.mark.parametrize("mode", [api.SEARCH_MODE_DENSE, api.SEARCH_MODE_HYBRID], ids=["dense", "hybrid"])
def test_search_returns_the_right_passage_for_known_xquad_questions(servicer, xquad_subset, mode):
    documents, pairs = xquad_subset
    index(servicer, documents)
    found = 0
    for question, doc_id in pairs:
        hits = servicer.Search(api.SearchRequest(query=question, top_k=3, mode=mode), None).hits
        found += doc_id in {h.doc_id for h in hits}
    assert len(pairs) == 37
    assert found >= 0.9 * len(pairs), f"right passage in the top 3 for only {found} of {len(pairs)} questions"


def test_qdrant_state_and_the_swapped_model_survive_a_restart(settings, minilm, publish_tiny, make_servicer):
    first = make_servicer(settings, minilm)
    index(
        first,
        [
            pb.Document(doc_id="d1", text="Persistent storage keeps vectors on disk."),
            pb.Document(doc_id="d2", text="Bananas are yellow."),
        ],
    )
    first.swap(publish_tiny(settings))
    first.close()

    second = build_servicer(settings)
    try:
        assert second.current.spec.model_id == "tiny"
        assert count(second) == 2
        hits = second.Search(
            api.SearchRequest(query="Persistent storage keeps vectors on disk.", mode=api.SEARCH_MODE_HYBRID), None
        ).hits
        assert hits[0].doc_id == "d1"
    finally:
        second.close()


def test_a_model_swap_reindexes_into_a_new_collection_and_moves_the_alias(servicer, publish_tiny):
    index(servicer, [pb.Document(doc_id=f"d{i}", text=f"Document number {i} about topic {i}.") for i in range(5)])
    assert servicer.store.resolve("documents") == "documents__minilm"
    servicer.swap(publish_tiny(servicer.settings))
    assert servicer.store.resolve("documents") == "documents__tiny"
    assert count(servicer, "documents__tiny") == 5
    assert servicer.Search(api.SearchRequest(query="topic 3"), None).model_id == "tiny"
    index(servicer, [pb.Document(doc_id="new", text="Indexed after the swap.")])
    assert count(servicer, "documents__tiny") == 6
    assert count(servicer, "documents__minilm") == 5


def test_a_model_event_with_the_wrong_dimensions_is_refused_and_the_old_model_keeps_serving(servicer, publish_tiny):
    with pytest.raises(ValueError, match="says 64 dimensions"):
        servicer.swap(publish_tiny(servicer.settings, dimensions=64))
    assert servicer.current.spec.model_id == "minilm"


def test_a_model_whose_stored_files_do_not_match_its_digest_is_refused_and_the_old_model_keeps_serving(
    servicer, publish_tiny, caplog
):
    event = publish_tiny(servicer.settings, dimensions=32)
    storage = service_storage(servicer.settings)
    storage.write_bytes(storage.key_of(event.uri) + "/model.safetensors", b"not the published weights")
    with caplog.at_level(logging.ERROR, logger="services.embedder.service"):
        servicer.swap(event)
    assert servicer.current.spec.model_id == "minilm" and servicer.store.resolve("documents") is None
    (record,) = [r for r in caplog.records if r.getMessage().startswith("model refused")]
    assert "model.safetensors: sha256" in record.detail and record.serving == "minilm"
    assert not any((Path(servicer.settings.state_dir) / "models").iterdir())


def test_searches_run_safely_while_documents_are_being_indexed(servicer):
    """The embedded store has no locking of its own: searches from gRPC threads and upserts
    from the consumer must not corrupt each other."""
    index(servicer, [pb.Document(doc_id="seed", text="The first document.")])
    errors: list[Exception] = []
    done = threading.Event()

    def search():
        while not done.is_set():
            try:
                servicer.Search(api.SearchRequest(query="document", top_k=5), None)
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

    threads = [threading.Thread(target=search) for _ in range(4)]
    for thread in threads:
        thread.start()
    for batch in range(5):
        index(servicer, [pb.Document(doc_id=f"b{batch}-{i}", text=f"Document {i} of batch {batch}.") for i in range(40)])
    done.set()
    for thread in threads:
        thread.join()
    assert errors == []
    assert count(servicer) == 201
