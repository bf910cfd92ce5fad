"""Qdrant storage of document chunks: one physical collection per (collection, model), an alias
per collection that readers use, dense + BM25 sparse vectors, hybrid queries fused with RRF.

Physical collection ``{collection}__{model}`` holds the ``dense`` vectors of one model and
the model-independent ``bm25`` sparse vectors (IDF applied by Qdrant). The alias
``{collection}`` points at the physical collection of the serving model; re-indexing for a
new model fills a new physical collection and then moves the alias in one atomic alias
update. Aliases, the Query API (prefetch + RRF fusion) and the IDF modifier all work in
qdrant-client's embedded local mode (``path=``) as on a server.

Point id = UUIDv5(doc id, chunk index), so re-ingesting a document overwrites its points.
Chunk 0 records ``chunk_count``; an update deletes the ids beyond the new count and a
deletion removes ids 0..count-1, all by id (no filter scans).

The embedded store has no locking of its own, so in local mode every call holds one lock
(gRPC searches run beside the indexing consumer); a server client is used without it.
"""

import threading
import uuid
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from qdrant_client import QdrantClient, models

from services.embedder.settings import QdrantSettings

DENSE = "dense"
SPARSE = "bm25"
POINT_NAMESPACE = uuid.UUID("6f1c3f0e-7a53-5b8e-9a61-3c1f0e6d2b7a")
SEPARATOR = "__"


def point_id(doc_id: str, chunk_index: int) -> str:
    return str(uuid.uuid5(POINT_NAMESPACE, f"{doc_id}\x1f{chunk_index}"))


def physical_name(collection: str, model_slug: str) -> str:
    return f"{collection}{SEPARATOR}{model_slug}"


def model_slug_of(physical: str) -> str:
    return physical.rsplit(SEPARATOR, 1)[1] if SEPARATOR in physical else ""


def connect(qdrant: QdrantSettings, state_dir: str) -> QdrantClient:
    """A server/cluster client when a URL is set, else embedded on-disk mode (``qdrant.path``,
    by default ``<state_dir>/qdrant``), which only one process can open."""
    if qdrant.url:
        return QdrantClient(url=qdrant.url, api_key=qdrant.api_key.get_secret_value() if qdrant.api_key else None)
    return QdrantClient(path=qdrant.path or str(Path(state_dir) / "qdrant"))


@dataclass(frozen=True)
class Hit:
    point_id: str
    score: float
    payload: dict


class VectorStore:
    def __init__(self, client: QdrantClient):
        self.client = client
        self._lock = threading.RLock() if self.is_local else nullcontext()

    def close(self) -> None:
        with self._lock:
            self.client.close()

    # collections and aliases

    def aliases(self) -> dict[str, str]:
        """alias -> physical collection."""
        with self._lock:
            return {a.alias_name: a.collection_name for a in self.client.get_aliases().aliases}

    def resolve(self, collection: str) -> str | None:
        """The physical collection readers of ``collection`` see, or None if there is none."""
        return self.aliases().get(collection)

    def ensure_physical(self, name: str, dimensions: int) -> None:
        with self._lock:
            if self.client.collection_exists(name):
                size = self.client.get_collection(name).config.params.vectors[DENSE].size
                if size != dimensions:
                    raise ValueError(f"collection {name} holds {size}-d vectors, the model makes {dimensions}-d")
                return
            self.client.create_collection(
                name,
                vectors_config={DENSE: models.VectorParams(size=dimensions, distance=models.Distance.COSINE)},
                sparse_vectors_config={SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)},
            )
            if not self.is_local:
                for field in ("doc_id", "chunk_index"):
                    schema = models.PayloadSchemaType.KEYWORD if field == "doc_id" else models.PayloadSchemaType.INTEGER
                    self.client.create_payload_index(name, field, field_schema=schema)

    @property
    def is_local(self) -> bool:
        return self.client.init_options.get("path") is not None or self.client.init_options.get("location") == ":memory:"

    def point_alias(self, pairs: dict[str, str]) -> None:
        """Move each alias to its physical collection in one atomic alias update."""
        with self._lock:
            current = self.aliases()
            operations: list = []
            for alias, target in pairs.items():
                if alias in current:
                    operations.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias)))
                operations.append(
                    models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=target, alias_name=alias))
                )
            if operations:
                self.client.update_collection_aliases(change_aliases_operations=operations)

    def physical_versions(self, collection: str) -> list[str]:
        with self._lock:
            prefix = collection + SEPARATOR
            return [
                c.name
                for c in self.client.get_collections().collections
                if c.name.startswith(prefix) and SEPARATOR not in c.name[len(prefix) :]
            ]

    def drop(self, name: str) -> None:
        with self._lock:
            self.client.delete_collection(name)

    def count(self, collection: str) -> int:
        with self._lock:
            return self.client.count(collection, exact=True).count

    def count_documents(self, collection: str) -> int:
        """Distinct documents: every document has exactly one chunk 0."""
        with self._lock:
            first_chunks = models.Filter(must=[models.FieldCondition(key="chunk_index", match=models.MatchValue(value=0))])
            return self.client.count(collection, count_filter=first_chunks, exact=True).count

    # points

    def chunk_counts(self, physical: str, doc_ids: list[str]) -> dict[str, int]:
        """Stored chunk count of each document that has points (read from its chunk 0)."""
        with self._lock:
            if not doc_ids:
                return {}
            records = self.client.retrieve(
                physical, ids=[point_id(d, 0) for d in doc_ids], with_payload=["doc_id", "chunk_count"]
            )
            return {r.payload["doc_id"]: int(r.payload.get("chunk_count", 1)) for r in records}

    def delete_ids(self, physical: str, ids: list[str]) -> None:
        with self._lock:
            if ids:
                self.client.delete(physical, points_selector=models.PointIdsList(points=ids), wait=True)

    def upsert(self, physical: str, points: list[models.PointStruct]) -> None:
        with self._lock:
            if points:
                self.client.upsert(physical, points=points, wait=True)

    def scroll(self, physical: str, page: int = 256) -> Iterator[list[models.Record]]:
        """Every point with its payload, a page at a time."""
        offset = None
        while True:
            with self._lock:
                records, offset = self.client.scroll(physical, limit=page, offset=offset, with_payload=True, with_vectors=False)
            if records:
                yield records
            if offset is None:
                return

    # search

    def search(
        self,
        physical: str,
        dense: list[float],
        sparse: models.SparseVector | None,
        top_k: int,
        metadata_filter: dict[str, str],
        candidates: int,
    ) -> list[Hit]:
        """Dense search, or hybrid (dense and BM25 prefetch fused with RRF) when ``sparse`` is given."""
        with self._lock:
            query_filter = None
            if metadata_filter:
                query_filter = models.Filter(
                    must=[
                        models.FieldCondition(key=f"metadata.{k}", match=models.MatchValue(value=v))
                        for k, v in sorted(metadata_filter.items())
                    ]
                )
            if sparse is None:
                result = self.client.query_points(
                    physical, query=dense, using=DENSE, limit=top_k, query_filter=query_filter, with_payload=True
                )
            else:
                limit = max(candidates, top_k)
                result = self.client.query_points(
                    physical,
                    prefetch=[
                        models.Prefetch(query=dense, using=DENSE, limit=limit, filter=query_filter),
                        models.Prefetch(query=sparse, using=SPARSE, limit=limit, filter=query_filter),
                    ],
                    query=models.FusionQuery(fusion=models.Fusion.RRF),
                    limit=top_k,
                    with_payload=True,
                )
            return [Hit(str(p.id), float(p.score), p.payload or {}) for p in result.points]
