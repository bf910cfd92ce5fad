"""The embedder's consumer against a real tansu broker: documents of no job on forge.documents are
indexed (and deleted), a job's chunks on forge.corpus.chunks are indexed as they were cut,
malformed documents are dead-lettered with the reason while the rest are indexed, and a
forge.models event swaps the serving model of every replica."""

import threading
import time
from pathlib import Path

import pytest
from kafka import KafkaConsumer

from embedforge.v1 import embedder_pb2 as api
from embedforge.v1 import messages_pb2 as pb
from libs import topics
from libs.corpus import SourceDocument, chunk_messages
from libs.kafka import ProtoProducer, physical_name
from libs.settings import StorageSettings
from services.embedder.service import consumers


def wait_for(condition, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.2)


def point_count(servicer) -> int:
    return servicer.store.count("documents") if servicer.store.resolve("documents") else 0


def start_consumers(settings, servicer, producer, stop: threading.Event) -> list[tuple]:
    """The servicer's consumer loops (as run_service starts them), each on a thread: (loop, thread) pairs."""
    started = []
    for loop in consumers(settings, servicer, producer):
        thread = threading.Thread(target=loop.run, args=(stop,), daemon=True)
        thread.start()
        started.append((loop, thread))
    return started


@pytest.fixture
def running(kafka_settings, settings, servicer):
    """The servicer's consumer loops running, and a producer to feed them."""
    producer = ProtoProducer(kafka_settings, client_id="test")
    stop = threading.Event()
    started = start_consumers(settings.model_copy(update={"kafka": kafka_settings}), servicer, producer, stop)
    yield servicer, producer
    stop.set()
    for _, thread in started:
        thread.join(timeout=30)
    producer.close()


def test_documents_on_the_topic_are_indexed_and_deleted(running):
    servicer, producer = running
    for i in range(6):
        producer.send(
            topics.DOCUMENTS,
            f"d{i}",
            pb.Document(doc_id=f"d{i}", text=f"Kafka document {i} about ships.", metadata={"n": str(i)}),
        )
    producer.flush()
    wait_for(lambda: point_count(servicer) == 6)
    producer.send_and_wait(topics.DOCUMENTS, "d0", pb.Document(doc_id="d0", deleted=True))
    wait_for(lambda: point_count(servicer) == 5)
    hits = servicer.Search(api.SearchRequest(query="ships", filter={"n": "3"}), None).hits
    assert [h.doc_id for h in hits] == ["d3"]


def test_a_jobs_chunks_are_indexed_as_published_and_its_documents_are_not_cut_again(running):
    servicer, producer = running
    text = "\n\n".join(f"Paragraph {i} on the harbour cranes and their loads. " * 2 for i in range(4))  # 4 x 18 words
    source = SourceDocument("manual", "Harbour manual", text, {"lang": "en"})
    chunks = chunk_messages("job-a", source, 20, "harbour")
    assert len(chunks) == 4
    document = pb.Document(doc_id="manual", job_id="job-a", collection="harbour", title=source.title, text=text)
    producer.send(topics.DOCUMENTS, "manual", document)
    for chunk in chunks:
        producer.send(topics.CORPUS_CHUNKS, chunk.chunk_id, chunk)
    producer.flush()
    wait_for(lambda: servicer.store.resolve("harbour") is not None and servicer.store.count("harbour") == 4)
    time.sleep(2)  # the job's document, read beside its chunks, adds nothing
    records, _ = servicer.store.client.scroll(servicer.store.resolve("harbour"), limit=100, with_payload=True)
    assert sorted((r.payload["chunk_id"], r.payload["text"]) for r in records) == sorted((c.chunk_id, c.text) for c in chunks)
    fields = {(r.payload["job_id"], r.payload["title"], r.payload["metadata"]["lang"]) for r in records}
    assert fields == {("job-a", "Harbour manual", "en")}
    deleted = pb.Document(doc_id="manual", job_id="job-a", collection="harbour", deleted=True)
    producer.send_and_wait(topics.DOCUMENTS, "manual", deleted)
    wait_for(lambda: servicer.store.count("harbour") == 0)


def test_model_info_counts_the_collection_it_is_asked_about(running):
    """A job's documents go to the job's collection; GetModelInfo reports that one on request
    (the default collection stays empty)."""
    servicer, producer = running
    for i in range(3):
        producer.send(topics.DOCUMENTS, f"m{i}", pb.Document(doc_id=f"m{i}", collection="manuals", text=f"Manual page {i}."))
    producer.flush()
    wait_for(lambda: servicer.GetModelInfo(api.GetModelInfoRequest(collection="manuals"), None).documents == 3)
    info = servicer.GetModelInfo(api.GetModelInfoRequest(collection="manuals"), None)
    assert (info.collection, info.points) == ("manuals", 3)
    default = servicer.GetModelInfo(api.GetModelInfoRequest(), None)
    assert (default.collection, default.documents) == ("documents", 0)


def test_a_malformed_document_is_dead_lettered_and_the_others_are_indexed(running, kafka_settings):
    servicer, producer = running
    producer.send(topics.DOCUMENTS, "good-1", pb.Document(doc_id="good-1", text="A fine document."))
    producer.send(topics.DOCUMENTS, "bad", pb.Document(doc_id="bad", text=""))
    producer.send(topics.DOCUMENTS, "good-2", pb.Document(doc_id="good-2", text="Another fine document."))
    producer.flush()
    dead = KafkaConsumer(
        physical_name(kafka_settings, topics.DEAD_LETTER),
        bootstrap_servers=kafka_settings.bootstrap_servers,
        auto_offset_reset="earliest",
        consumer_timeout_ms=500,
    )
    letters: list[pb.DeadLetter] = []
    wait_for(lambda: letters.extend(pb.DeadLetter.FromString(r.value) for r in dead) or letters)
    (letter,) = letters
    assert (letter.key, letter.reason, letter.consumer_group) == (
        b"bad",
        "handler_error",
        f"{kafka_settings.topic_prefix}embedder",
    )
    assert "has no text" in letter.detail
    wait_for(lambda: point_count(servicer) == 2)


def test_a_model_ready_event_swaps_the_serving_model(running, publish_tiny):
    servicer, producer = running
    producer.send_and_wait(topics.DOCUMENTS, "d", pb.Document(doc_id="d", text="Indexed before the swap."))
    wait_for(lambda: point_count(servicer) == 1)
    producer.send_and_wait(topics.MODELS, "tiny", publish_tiny(servicer.settings, dimensions=32, query_instruction="Find it"))
    wait_for(lambda: servicer.current.spec.model_id == "tiny")
    info = servicer.GetModelInfo(api.GetModelInfoRequest(), None)
    assert (info.dimensions, info.query_instruction) == (32, "Find it")
    assert servicer.store.resolve("documents") == "documents__tiny"
    assert servicer.Search(api.SearchRequest(query="swap"), None).hits[0].doc_id == "d"


def test_every_replica_swaps_while_documents_are_split_between_them(
    kafka_settings, settings, make_servicer, minilm, publish_tiny, s3_uri, tmp_path
):
    """Two replicas (each with its own embedded Qdrant and model cache, sharing S3 storage on moto):
    each document is indexed by one of them, and the model event reaches both, so neither keeps
    serving the old model."""
    producer = ProtoProducer(kafka_settings, client_id="test")
    stop = threading.Event()
    replicas, started = [], []
    for name in ("replica-a", "replica-b"):
        replica_settings = settings.model_copy(
            update={
                "kafka": kafka_settings,
                "replica_id": name,
                "state_dir": str(tmp_path / name),
                "storage": StorageSettings(uri=s3_uri),
            }
        )
        replicas.append(make_servicer(replica_settings, minilm))
        started += start_consumers(replica_settings, replicas[-1], producer, stop)
    try:
        wait_for(
            lambda: all(loop.ready.is_set() for loop, _ in started)
        )  # the second replica's assignment comes after the rebalance
        for i in range(12):
            producer.send(topics.DOCUMENTS, f"d{i}", pb.Document(doc_id=f"d{i}", text=f"Replicated document {i}."))
        producer.flush()
        wait_for(lambda: sum(point_count(r) for r in replicas) == 12)
        assert all(point_count(r) > 0 for r in replicas)  # the shared group split the partitions
        producer.send_and_wait(topics.MODELS, "tiny", publish_tiny(replicas[0].settings, dimensions=32))
        wait_for(lambda: all(r.current.spec.model_id == "tiny" for r in replicas))
        assert [r.store.resolve("documents") for r in replicas] == ["documents__tiny"] * 2
        assert [Path(r.current.spec.path).parent for r in replicas] == [
            tmp_path / "replica-a" / "models",
            tmp_path / "replica-b" / "models",
        ]
        assert sum(point_count(r) for r in replicas) == 12  # each re-indexed what it holds
    finally:
        stop.set()
        for _, thread in started:
            thread.join(timeout=30)
        for replica in replicas:
            replica.close()
        producer.close()
