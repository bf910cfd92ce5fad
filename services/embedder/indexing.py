"""Documents -> chunks -> dense + BM25 vectors -> Qdrant points, and re-indexing for a new model.

Used by the forge.documents consumer and by the bulk-load CLI alike. Writing is idempotent:
point ids are UUIDv5(doc id, chunk index), a document's surplus chunks from an earlier,
longer version are deleted before the new ones are written, and a deleted document loses
all its chunks. Deleting first means a crash in between leaves chunk 0 (and its old count)
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
from services.embedder.chunking import Chunker
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
    """Applies documents to the physical collection of a model, creating collection and alias on first use.

    ``embed(model, texts)`` computes document vectors (the service passes its dynamic
    batcher); ``contextualize(document, chunks)``, if given, returns a short context per chunk
    that is prepended before embedding (contextual retrieval).
    """

    def __init__(
        self,
        store: VectorStore,
        embed: Embed,
        bm25: Bm25,
        chunk_tokens: int,
        overlap_tokens: int,
        upsert_batch: int = 256,
        contextualize: Contextualize | None = None,
    ):
        self.store = store
        self.embed = embed
        self.bm25 = bm25
        self.chunk_tokens = chunk_tokens
        self.overlap_tokens = overlap_tokens
        self.upsert_batch = upsert_batch
        self.contextualize = contextualize
        self._chunkers: dict[str, Chunker] = {}

    def chunker(self, model: EmbeddingModel) -> Chunker:
        """Chunks leave room in the model's window for special tokens and a short title."""
        if model.spec.model_id not in self._chunkers:
            size = max(16, min(self.chunk_tokens, model.spec.max_length - 16))
            self._chunkers[model.spec.model_id] = Chunker(model.tokenizer, size, min(self.overlap_tokens, size // 2))
        return self._chunkers[model.spec.model_id]

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
        """Index or delete documents; the last version of a document in ``documents`` wins."""
        latest: dict[tuple[str, str], pb.Document] = {}
        for document in documents:
            if not document.doc_id:
                raise ValueError("document has no doc_id")
            if not document.deleted and not document.text.strip():
                raise ValueError(f"document {document.doc_id!r} has no text (set deleted=true to remove it)")
            if document.collection:
                ids.check(document.collection, "collection")  # it names a Qdrant collection (a folder in embedded mode)
            latest[(document.collection or default_collection, document.doc_id)] = document
        stats = IndexStats()
        by_collection: dict[str, list[pb.Document]] = {}
        for (collection, _), document in latest.items():
            by_collection.setdefault(collection, []).append(document)
        for collection, docs in by_collection.items():
            with tracer.start_as_current_span("index documents", attributes={"collection": collection, "documents": len(docs)}):
                stats.add(self._apply_collection(collection, docs, model))
        return stats

    def _apply_collection(self, collection: str, documents: list[pb.Document], model: EmbeddingModel) -> IndexStats:
        physical = self.target(collection, model)
        live = [d for d in documents if not d.deleted]
        chunk_lists = self.chunker(model).split_many([d.text for d in live])
        new_counts = {d.doc_id: len(chunks) for d, chunks in zip(live, chunk_lists)}
        old_counts = self.store.chunk_counts(physical, [d.doc_id for d in documents])
        stale = [
            point_id(doc_id, index)
            for doc_id, old in old_counts.items()
            for index in range(new_counts.get(doc_id, 0), old)
        ]
        self.store.delete_ids(physical, stale)

        inputs, payloads = [], []
        for document, chunks in zip(live, chunk_lists):
            contexts = self.contextualize(document.text, [c.text for c in chunks]) if self.contextualize else [""] * len(chunks)
            for chunk, context in zip(chunks, contexts):
                inputs.append(embedding_input(document.title, context, chunk.text))
                payloads.append(
                    {
                        "doc_id": document.doc_id,
                        "chunk_index": chunk.index,
                        "chunk_count": len(chunks),
                        "title": document.title,
                        "context": context,
                        "text": chunk.text,
                        "start": chunk.start,
                        "end": chunk.end,
                        "metadata": dict(document.metadata),
                        "job_id": document.job_id,
                        "model_id": model.spec.model_id,
                    }
                )
        self._write(physical, model, inputs, payloads, [point_id(p["doc_id"], p["chunk_index"]) for p in payloads])
        deleted = sum(1 for d in documents if d.deleted)
        documents_counter.add(len(live), {"outcome": "indexed"})
        documents_counter.add(deleted, {"outcome": "deleted"})
        return IndexStats(documents=len(live), deleted=deleted, chunks=len(payloads))

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
