"""Job intake and task brainstorming.

SubmitJob validates a job (every id, path and bound, before anything is kept), drafts the task
definition of a job with corpus queries that gives none (brainstorm.Brainstormer.draft_task),
saves it and publishes it to forge.jobs, forgetting it again if the publish fails; UploadDocuments takes a
job's documents and publishes them to forge.documents once all of them passed. The jobs
consumer registers a job
and hands it to the runner, which brainstorms tasks per category until each category's
target count of distinct tasks is met and publishes them to forge.tasks (key: task_id).
Job state lives in ``state_dir``, so after a restart unfinished jobs resume and tasks
already published are not brainstormed again. Downstream topics (raw, curated, rejected
examples, models) update each job's progress for GetJob/WatchJob.
"""

import hashlib
import logging
import queue
import threading
import uuid
from pathlib import Path

from kafka.errors import KafkaError
from opentelemetry import trace

from embedforge.v1 import messages_pb2 as pb
from embedforge.v1 import taskgen_pb2 as api
from embedforge.v1 import taskgen_pb2_grpc as api_grpc

from libs import ids, limits, topics
from libs.dataroots import DataRoots
from libs.grpc import GrpcService, InvalidArgument, Unavailable
from libs.kafka import ConsumerLoop, Outgoing, ProtoProducer, Received, Subscription, per_message
from libs.llm import LlmError, UsageAccumulator
from libs.service import ServiceParts
from services.taskgen.brainstorm import BRAINSTORM_TEMPLATE, FIXED_TASKS, Brainstormer, normalize_task, task_id
from services.taskgen.jobs import TERMINAL, JobStore
from services.taskgen.settings import TaskgenSettings

log = logging.getLogger(__name__)
tracer = trace.get_tracer("embedforge.taskgen")
WATCH_POLL_S = 0.5


def validate_spec(spec: pb.JobSpec, roots: DataRoots) -> None:
    """Raise InvalidArgument with the offending field; paths and object URIs must lie under
    ``roots`` (a URI is checked on its text: examplegen and the trainer download it); field
    bounds are libs.limits', checked on every request."""
    if not spec.domain.strip():
        raise InvalidArgument("spec.domain must describe the domain")
    if spec.collection:
        ids.check(spec.collection, "spec.collection")
    if spec.corpus_path:
        roots.check(spec.corpus_path, "spec.corpus_path")
    for i, path in enumerate(spec.eval_paths):
        roots.check(path, f"spec.eval_paths[{i}]")
    if spec.training.base_model:
        roots.resolve(spec.training.base_model, "spec.training.base_model")
    for i, target in enumerate(spec.categories):
        if target.category not in BRAINSTORM_TEMPLATE and target.category not in FIXED_TASKS:
            raise InvalidArgument(
                f"spec.categories[{i}].category "
                f"{pb.Category.Name(target.category) if target.category in pb.Category.values() else target.category} "
                "cannot be brainstormed (corpus-grounded queries come from corpus_queries)"
            )
        if target.num_tasks < 1 or target.examples_per_task < 1:
            raise InvalidArgument(f"spec.categories[{i}] needs num_tasks >= 1 and examples_per_task >= 1")
    for i, language in enumerate(spec.languages):
        if not language.language.strip() or language.weight < 0:
            raise InvalidArgument(f"spec.languages[{i}] needs a language code and a weight >= 0")
    if spec.corpus_queries < 0 or spec.corpus_chunk_words < 0:
        raise InvalidArgument("spec.corpus_queries and spec.corpus_chunk_words must be >= 0")
    if spec.task and not spec.task.strip():
        raise InvalidArgument("spec.task is blank: give one sentence or leave it empty for taskgen to draft")
    for i, query in enumerate(spec.example_queries):
        if not query.strip():
            raise InvalidArgument(f"spec.example_queries[{i}] is empty")
    if not spec.categories and spec.corpus_queries <= 0:
        raise InvalidArgument(
            "nothing to generate: give spec.categories or spec.corpus_queries (documents from UploadDocuments or "
            "spec.corpus_path)"
        )


class TaskgenRunner:
    """Brainstorms one job at a time on its own thread; resumes unfinished jobs at start."""

    def __init__(self, store: JobStore, producer: ProtoProducer, brainstormer: Brainstormer, settings: TaskgenSettings):
        self.store = store
        self.producer = producer
        self.brainstormer = brainstormer
        self.settings = settings
        self.stop = threading.Event()
        self._queue: queue.Queue[str] = queue.Queue()
        self._scheduled: set[str] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="taskgen-runner", daemon=True)

    def start(self) -> None:
        for job_id in self.store.unfinished():
            log.info("resuming job", extra={"job_id": job_id})
            self.schedule(job_id)
        self._thread.start()

    def close(self) -> None:
        self.stop.set()
        self._thread.join(timeout=5)

    def schedule(self, job_id: str) -> None:
        with self._lock:
            if job_id in self._scheduled:
                return
            self._scheduled.add(job_id)
        self._queue.put(job_id)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                job_id = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                self.process(job_id)
            except Exception as exc:  # noqa: BLE001 - a broken job must not stop the others
                log.exception("job failed", extra={"job_id": job_id})
                self.store.update(job_id, state=api.JOB_STATE_FAILED, error=f"{type(exc).__name__}: {exc}")

    def publish(
        self, job: pb.Job, category: int, description: str, tid: str, template_id: str = "", template_version: str = ""
    ) -> None:
        target = next(c for c in job.spec.categories if c.category == category)
        task = pb.Task(
            task_id=tid,
            job_id=job.job_id,
            category=category,
            description=description,
            num_examples=target.examples_per_task,
            generator_model=job.spec.generator_model,
            languages=job.spec.languages,
            seed=job.spec.seed,
            brainstorm_model=(job.spec.brainstorm_model or self.settings.llm.model) if template_id else "",
            template_id=template_id,
            template_version=template_version,
        )
        self.producer.send_and_wait(topics.TASKS, task.task_id, task)
        self.store.add_task(task)

    def process(self, job_id: str) -> None:
        record = self.store.record(job_id)
        job = record.job
        self.store.update(job_id, state=api.JOB_STATE_BRAINSTORMING)
        accumulator = UsageAccumulator()
        shortfalls = []
        with tracer.start_as_current_span("taskgen.job", attributes={"job_id": job_id}):
            for target in job.spec.categories:
                if target.category in FIXED_TASKS:
                    self._publish_fixed(job, target, record.tasks)
                else:
                    outcome = self._brainstorm_category(job, target, accumulator)
                    if outcome is None:
                        return  # stopping: the job resumes after the restart
                    published, last_failure = outcome
                    if published < target.num_tasks:
                        cause = (
                            f" (last failed brainstorm call: {last_failure.reason}: {last_failure.detail[:200]})"
                            if last_failure
                            else ""
                        )
                        shortfalls.append(f"{pb.Category.Name(target.category)}: {published} of {target.num_tasks} tasks{cause}")
        for usage in accumulator.totals().values():
            self.store.add_usage(job_id, usage.message())
        error = "; ".join(shortfalls)
        if record.tasks or job.spec.corpus_queries > 0:
            self.store.update(job_id, state=api.JOB_STATE_GENERATING, error=error)
        else:
            self.store.update(job_id, state=api.JOB_STATE_FAILED, error=error or "no task could be brainstormed")
        log.info("job brainstormed", extra={"job_id": job_id, "tasks": len(record.tasks), "shortfalls": error})

    def _publish_fixed(self, job: pb.Job, target: pb.CategoryTarget, existing: dict) -> None:
        description = FIXED_TASKS[target.category]
        for index in range(target.num_tasks):
            tid = hashlib.sha256(f"{job.job_id}|{target.category}|fixed|{index}".encode()).hexdigest()[:24]
            if tid not in existing:
                self.publish(job, target.category, description, tid)

    def _brainstorm_category(
        self, job: pb.Job, target: pb.CategoryTarget, accumulator: UsageAccumulator
    ) -> tuple[int, LlmError | None] | None:
        """Brainstorm until ``num_tasks`` distinct tasks are published or the rounds run out:
        (tasks published, the last failed call if any); None when stopping."""
        record = self.store.record(job.job_id)
        have = record.tasks_in(target.category)
        seen = {normalize_task(t) for t in have}
        template = self.brainstormer.template(target.category)
        rounds = 0
        last_failure = None
        while len(have) < target.num_tasks and rounds < self.settings.max_rounds_per_category:
            if self.stop.is_set():
                return None
            rounds += 1
            count = min(self.settings.brainstorm_batch, max(target.num_tasks - len(have), 5))
            try:
                ideas = self.brainstormer.brainstorm(
                    job.spec.domain, target.category, count, job.spec.brainstorm_model, accumulator
                )
            except LlmError as failure:
                ideas, last_failure = [], failure
            if self.stop.is_set():
                return None
            for idea in ideas:
                key = normalize_task(idea)
                if key in seen:
                    continue
                seen.add(key)
                self.publish(
                    job, target.category, idea, task_id(job.job_id, target.category, idea), template.id, template.version
                )
                have.append(idea)
                if len(have) >= target.num_tasks:
                    break
            log.info(
                "brainstorm round",
                extra={
                    "job_id": job.job_id,
                    "category": pb.Category.Name(target.category),
                    "round": rounds,
                    "ideas": len(ideas),
                    "tasks": len(have),
                },
            )
        return len(have), last_failure


class TaskgenServicer(api_grpc.TaskgenServiceServicer):
    def __init__(self, store: JobStore, producer: ProtoProducer, roots: DataRoots, brainstormer: Brainstormer):
        self.store = store
        self.producer = producer
        self.roots = roots
        self.brainstormer = brainstormer

    def SubmitJob(self, request: api.SubmitJobRequest, context) -> api.SubmitJobResponse:
        """Validate, draft the task definition of corpus queries when the job gives none (one LLM
        call; the job on forge.jobs carries it), save, publish: a refused or failed submission
        leaves nothing behind."""
        job_id = ids.check(request.job_id, "job_id") if request.job_id else uuid.uuid4().hex
        validate_spec(request.spec, self.roots)
        job = pb.Job(job_id=job_id, spec=request.spec)
        accumulator = UsageAccumulator()
        if not job.spec.task and job.spec.corpus_queries > 0:
            spec = job.spec
            spec.task = self.brainstormer.draft_task(spec.domain, spec.example_queries, spec.brainstorm_model, accumulator)
            log.info("task drafted", extra={"job_id": job_id, "task": job.spec.task})
        job.created_at.GetCurrentTime()
        status, new = self.store.add(job)
        if new:
            for usage in accumulator.totals().values():
                self.store.add_usage(job_id, usage.message())
            try:
                self.producer.send_and_wait(topics.JOBS, job.job_id, job)
            except KafkaError as exc:
                self.store.discard(job.job_id)
                raise Unavailable(
                    "the job could not be published (the broker did not acknowledge it); nothing was kept, retry"
                ) from exc
        return api.SubmitJobResponse(job=status)

    def GetJob(self, request: api.GetJobRequest, context) -> api.GetJobResponse:
        return api.GetJobResponse(job=self.store.get(ids.check(request.job_id, "job_id")))

    def ListJobs(self, request: api.ListJobsRequest, context) -> api.ListJobsResponse:
        jobs, token = self.store.list_jobs(limits.page_size(request.page_size), request.page_token)
        return api.ListJobsResponse(jobs=jobs, next_page_token=token)

    def UploadDocuments(self, request_iterator, context) -> api.UploadDocumentsResponse:
        """Receive the whole stream, check every document, then publish them all (key: doc_id)."""
        job_id, documents = "", []
        for request in request_iterator:
            if request.job_id and job_id and request.job_id != job_id:
                raise InvalidArgument("job_id changed within the stream: upload one job's documents per call")
            job_id = job_id or request.job_id
            documents.extend(request.documents)
        if not job_id:
            raise InvalidArgument("job_id is required on the first message")
        spec = self.store.record(ids.check(job_id, "job_id")).job.spec
        if not documents:
            raise InvalidArgument("no documents: send at least one")
        if len(documents) > limits.MAX_UPLOAD_DOCUMENTS:
            raise InvalidArgument(f"{len(documents)} documents; at most {limits.MAX_UPLOAD_DOCUMENTS} per upload")
        for i, document in enumerate(documents):
            if not document.doc_id.strip():
                raise InvalidArgument(f"documents[{i}].doc_id is required")
            if not document.deleted and not document.text.strip():
                raise InvalidArgument(f"documents[{i}] ({document.doc_id[:80]!r}) has no text")
            if document.collection:
                ids.check(document.collection, f"documents[{i}].collection")
            document.collection = document.collection or spec.collection
            document.job_id = job_id
        futures = [self.producer.send(topics.DOCUMENTS, d.doc_id, d) for d in documents]
        self.producer.flush()
        try:
            for future in futures:
                future.get(timeout=30)
        except KafkaError as exc:
            raise Unavailable(
                "not every document was acknowledged by the broker; upload again (documents are keyed by doc_id)"
            ) from exc
        return api.UploadDocumentsResponse(documents=len(documents))

    def WatchJob(self, request: api.WatchJobRequest, context):
        ids.check(request.job_id, "job_id")
        last = None
        while context.is_active():
            status = self.store.get(request.job_id)
            comparable = api.JobStatus()
            comparable.CopyFrom(status)
            comparable.ClearField("updated_at")
            if comparable != last:
                yield api.WatchJobResponse(job=status)
                last = comparable
            if status.state in TERMINAL:
                return
            self.store.wait_for_change(WATCH_POLL_S)


class ProgressCounter:
    """Downstream topics -> job progress (generated, failed, accepted, rejected, model)."""

    def __init__(self, store: JobStore):
        self.store = store

    def raw_examples(self, records: list[Received]) -> list[Outgoing]:
        jobs = set()
        for record in records:
            raw: pb.RawExample = record.message
            if self.store.count(raw.job_id, "examples_failed" if raw.error else "examples_generated", raw.example_id):
                self.store.add_usage(raw.job_id, raw.usage)
                jobs.add(raw.job_id)
        self.store.flush(jobs)
        return []

    def curated(self, records: list[Received]) -> list[Outgoing]:
        return self.count_outcomes(records, "examples_accepted", topics.curated_key)

    def rejected(self, records: list[Received]) -> list[Outgoing]:
        return self.count_outcomes(records, "examples_rejected", topics.rejected_key)

    def count_outcomes(self, records: list[Received], counter: str, key) -> list[Outgoing]:
        """Count each record once per distinct key (redeliveries count nothing) into its job's ``counter``."""
        jobs = {r.message.job_id for r in records if self.store.count(r.message.job_id, counter, key(r.message))}
        self.store.flush(jobs)
        return []

    def model_ready(self, record: Received) -> list[Outgoing]:
        model: pb.ModelReady = record.message
        self.store.update(model.job_id, model_id=model.model_id, state=api.JOB_STATE_SUCCEEDED)
        return []


def build(settings: TaskgenSettings) -> ServiceParts:
    store = JobStore(Path(settings.state_dir))
    producer = ProtoProducer(settings.kafka, client_id="taskgen")
    brainstormer = Brainstormer(settings.llm, settings.brainstorm_max_tokens, settings.brainstorm_temperature)
    runner = TaskgenRunner(store, producer, brainstormer, settings)
    roots = DataRoots(settings.data)

    def register_job(record: Received) -> list[Outgoing]:
        job: pb.Job = record.message
        ids.check(job.job_id, "job_id")
        validate_spec(job.spec, roots)
        store.add(job)
        if job.job_id in store.unfinished():
            runner.schedule(job.job_id)
        return []

    progress = ProgressCounter(store)
    subscriptions = [
        Subscription(topics.JOBS, per_message(register_job)),
        Subscription(topics.EXAMPLES_RAW, progress.raw_examples, batch=True),
        Subscription(topics.EXAMPLES_CURATED, progress.curated, batch=True),
        Subscription(topics.EXAMPLES_REJECTED, progress.rejected, batch=True),
        Subscription(topics.MODELS, per_message(progress.model_ready)),
    ]
    consumer = ConsumerLoop(settings.kafka, topics.TASKGEN_GROUP, subscriptions, producer)
    runner.start()
    servicer = TaskgenServicer(store, producer, roots, brainstormer)
    return ServiceParts(
        grpc_services=[GrpcService.generated(api_grpc, api, "TaskgenService", servicer)],
        consumers=[consumer],
        producer=producer,
        on_shutdown=[runner.close],
    )
