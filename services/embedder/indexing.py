"""Chunks -> dense + BM25 vectors -> Qdrant points, and re-indexing for a new model.

A job's chunks come from forge.corpus.chunks as examplegen cut them (the passages its queries
were written for and its hard negatives were mined from); a document of no job, from
forge.documents or the bulk-load CLI, is cut here by the same libs.corpus.chunk_document. Writing
is idempotent: point ids are UUIDv5(doc id, chunk index), a document's surplus chunks from an
earlier, longer version are deleted before the new ones are written, and a deleted document
loses all its chunks. Deleting first means a crash in between leaves chunk 0 (and its old count)
in place, so the replayed message still finds what to delete.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from opentelemetry import metrics, trace
from qdrant_client import models

from embedforge.v1 import messages_pb2 as pb
from libs import ids
from libs.corpus import DEFAULT_CHUNK_WORDS, SourceDocument, chunk_messages
from services.embedder.engine import EmbeddingModel, slug
from services.embedder.sparse import Bm25
from services.embedder.vectorstore import DENSE, SPARSE, VectorStore, physical_name, point_id

log = logging.getLogger(__name__)
tracer = trace.get_tracer("embedforge.embedder")
meter = metrics.get_meter("embedforge.embedder")
chunks_counter = meter.create_counter("embedder.chunks.indexed", description="Chunks written to Qdrant")
documents_counter = meter.create_counter("embedder.documents", description="Documents applied, by outcome")

Embed = Callable[[EmbeddingModel, list[str]], np.ndarray]
Contextualize = Callable[[str, list[str]], list[str]]


def embedding_input(title: str, context: str, text: str) -> str:
    """What the dense and sparse vectors of a chunk are computed from."""
    return "\n".join(part for part in (title, context, text) if part)


def document_chunks(document: pb.Document) -> list[pb.CorpusChunk]:
    """A document of no job, cut as examplegen cuts a job's (libs.corpus, the default chunk size)."""
    source = SourceDocument(document.doc_id, document.title, document.text, dict(document.metadata))
    return chunk_messages("", source, DEFAULT_CHUNK_WORDS, document.collection)


@dataclass
class IndexStats:
    documents: int = 0
    deleted: int = 0
    chunks: int = 0

    def add(self, other: "IndexStats") -> None:
        self.documents += other.documents
        self.deleted += other.deleted
        self.chunks += other.chunks


class Indexer:
    """Applies chunks and deletions to the physical collection of a model, creating collection and alias on first use.

    ``embed(model, texts)`` computes document vectors (the service passes its dynamic
    batcher); ``contextualize(document, chunks)``, if given, returns a short context per chunk
    that is prepended before embedding (contextual retrieval).
    """

    def __init__(
        self, store: VectorStore, embed: Embed, bm25: Bm25, upsert_batch: int = 256, contextualize: Contextualize | None = None
    ):
        self.store = store
        self.embed = embed
        self.bm25 = bm25
        self.upsert_batch = upsert_batch
        self.contextualize = contextualize

    def target(self, collection: str, model: EmbeddingModel) -> str:
        """The physical collection of ``model`` for ``collection``; creates it and the alias if new."""
        physical = physical_name(collection, slug(model.spec.model_id))
        self.store.ensure_physical(physical, model.dimensions)
        current = self.store.resolve(collection)
        if current is None:
            self.store.point_alias({collection: physical})
        elif current != physical:
            self.reindex(current, physical, model)
            self.store.point_alias({collection: physical})
        return physical

    def apply(self, documents: list[pb.Document], model: EmbeddingModel, default_collection: str) -> IndexStats:
        """Index (cut into chunks here) or delete documents; the last version of a document in ``documents`` wins."""
        latest: dict[tuple[str, str], pb.Document] = {}
        for document in documents:
            if not document.doc_id:
                raise ValueError("document has no doc_id")
            if not document.deleted and not document.text.strip():
                raise ValueError(f"document {document.doc_id!r} has no text (set deleted=true to remove it)")
            latest[(self._collection(document.collection, default_collection), document.doc_id)] = document
        chunks = {key: [] if d.deleted else document_chunks(d) for key, d in latest.items()}
        return self._apply(chunks, model)

    def apply_chunks(self, chunks: list[pb.CorpusChunk], model: EmbeddingModel, default_collection: str) -> IndexStats:
        """Index chunks as they were cut (forge.corpus.chunks); the last version of a chunk wins."""
        latest: dict[tuple[str, str], dict[int, pb.CorpusChunk]] = {}
        for chunk in chunks:
            if not chunk.chunk_id or not chunk.doc_id or not chunk.text.strip():
                raise ValueError(f"chunk {chunk.chunk_id!r} needs chunk_id, doc_id and text")
            if not 0 <= chunk.chunk_index < chunk.chunk_count:
                position = f"chunk_index {chunk.chunk_index} is not within chunk_count {chunk.chunk_count}"
                raise ValueError(f"chunk {chunk.chunk_id!r}: {position}")
            key = (self._collection(chunk.collection, default_collection), chunk.doc_id)
            latest.setdefault(key, {})[chunk.chunk_index] = chunk
        return self._apply({key: [by_index[i] for i in sorted(by_index)] for key, by_index in latest.items()}, model)

    @staticmethod
    def _collection(name: str, default: str) -> str:
        if name:
            ids.check(name, "collection")  # it names a Qdrant collection (a folder in embedded mode)
        return name or default

    def _apply(self, chunks: dict[tuple[str, str], list[pb.CorpusChunk]], model: EmbeddingModel) -> IndexStats:
        """Write each document's chunks (none: delete the document) into its collection."""
        by_collection: dict[str, dict[str, list[pb.CorpusChunk]]] = {}
        for (collection, doc_id), doc_chunks in chunks.items():
            by_collection.setdefault(collection, {})[doc_id] = doc_chunks
        stats = IndexStats()
        for collection, documents in by_collection.items():
            attributes = {"collection": collection, "documents": len(documents)}
            with tracer.start_as_current_span("index documents", attributes=attributes):
                stats.add(self._apply_collection(collection, documents, model))
        return stats

    def _apply_collection(self, collection: str, documents: dict[str, list[pb.CorpusChunk]], model: EmbeddingModel) -> IndexStats:
        physical = self.target(collection, model)
        new_counts = {doc_id: chunks[0].chunk_count for doc_id, chunks in documents.items() if chunks}
        old_counts = self.store.chunk_counts(physical, list(documents))
        stale = [point_id(doc_id, index) for doc_id, old in old_counts.items() for index in range(new_counts.get(doc_id, 0), old)]
        self.store.delete_ids(physical, stale)

        inputs, payloads = [], []
        for chunks in documents.values():
            texts = [c.text for c in chunks]
            contexts = self.contextualize("\n\n".join(texts), texts) if self.contextualize else [""] * len(chunks)
            for chunk, context in zip(chunks, contexts):
                inputs.append(embedding_input(chunk.title, context, chunk.text))
                payloads.append(
                    {
                        "doc_id": chunk.doc_id,
                        "chunk_id": chunk.chunk_id,
                        "chunk_index": chunk.chunk_index,
                        "chunk_count": chunk.chunk_count,
                        "title": chunk.title,
                        "context": context,
                        "text": chunk.text,
                        "metadata": dict(chunk.metadata),
                        "job_id": chunk.job_id,
                        "model_id": model.spec.model_id,
                    }
                )
        self._write(physical, model, inputs, payloads, [point_id(p["doc_id"], p["chunk_index"]) for p in payloads])
        deleted = sum(1 for chunks in documents.values() if not chunks)
        documents_counter.add(len(documents) - deleted, {"outcome": "indexed"})
        documents_counter.add(deleted, {"outcome": "deleted"})
        return IndexStats(documents=len(documents) - deleted, deleted=deleted, chunks=len(payloads))

    def _write(self, physical: str, model: EmbeddingModel, inputs: list[str], payloads: list[dict], ids: list[str]) -> None:
        for start in range(0, len(inputs), self.upsert_batch):
            end = start + self.upsert_batch
            dense = self.embed(model, inputs[start:end])
            points = [
                models.PointStruct(
                    id=pid,
                    vector={DENSE: vector.tolist(), SPARSE: self.bm25.document_vector(text)},
                    payload=payload,
                )
                for pid, vector, text, payload in zip(ids[start:end], dense, inputs[start:end], payloads[start:end])
            ]
            self.store.upsert(physical, points)
            chunks_counter.add(len(points))

    def reindex(self, source: str, destination: str, model: EmbeddingModel) -> int:
        """Copy every chunk of ``source`` into ``destination`` with ``model``'s dense vectors
        (same ids and payloads; chunks are not re-split); returns the number of points written."""
        self.store.ensure_physical(destination, model.dimensions)
        written = 0
        with tracer.start_as_current_span("reindex", attributes={"source": source, "destination": destination}):
            for records in self.store.scroll(source, page=self.upsert_batch):
                payloads = [{**r.payload, "model_id": model.spec.model_id} for r in records]
                inputs = [embedding_input(p.get("title", ""), p.get("context", ""), p.get("text", "")) for p in payloads]
                self._write(destination, model, inputs, payloads, [str(r.id) for r in records])
                written += len(records)
        log.info("re-indexed", extra={"source": source, "destination": destination, "points": written})
        return written
