"""Drive one job through the running services, as a user would: submit the job over gRPC,
follow every stage with progress bars, start training once the curated set is complete, wait
for the embedder to serve the new model with the job's documents indexed (the chunks examplegen
cut from its corpus_path), run a sample hybrid search, and collect the report."""

import time
from dataclasses import dataclass

import grpc
from google.protobuf.message import Message
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from embedforge.v1 import curator_pb2, curator_pb2_grpc, embedder_pb2, embedder_pb2_grpc
from embedforge.v1 import examplegen_pb2, examplegen_pb2_grpc, messages_pb2 as pb
from embedforge.v1 import taskgen_pb2, taskgen_pb2_grpc, trainer_pb2, trainer_pb2_grpc
from libs.corpus import read_documents
from libs.local.runtime import LocalRuntime

POLL_S = 1.0
TERMINAL_RUN_STATES = (trainer_pb2.RUN_STATE_SUCCEEDED, trainer_pb2.RUN_STATE_FAILED, trainer_pb2.RUN_STATE_CANCELLED)


class PipelineError(RuntimeError):
    """A stage failed or stalled; the message says which and why."""


@dataclass
class Clients:
    taskgen: taskgen_pb2_grpc.TaskgenServiceStub
    examplegen: examplegen_pb2_grpc.ExamplegenServiceStub
    curator: curator_pb2_grpc.CuratorServiceStub
    trainer: trainer_pb2_grpc.TrainerServiceStub
    embedder: embedder_pb2_grpc.EmbedderServiceStub

    @classmethod
    def connect(cls, runtime: LocalRuntime) -> "Clients":
        return cls(
            taskgen_pb2_grpc.TaskgenServiceStub(runtime.channel("taskgen")),
            examplegen_pb2_grpc.ExamplegenServiceStub(runtime.channel("examplegen")),
            curator_pb2_grpc.CuratorServiceStub(runtime.channel("curator")),
            trainer_pb2_grpc.TrainerServiceStub(runtime.channel("trainer")),
            embedder_pb2_grpc.EmbedderServiceStub(runtime.channel("embedder")),
        )


def _as_dict(message: Message) -> dict:
    """A proto message as plain JSON-ready values (json_format.MessageToDict writes int64 as strings)."""

    def value_of(field, value):
        if field.message_type:
            return _as_dict(value)
        if field.enum_type:
            return field.enum_type.values_by_number[value].name
        return value

    out = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.message_type and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            out[field.name] = {key: value_of(value_field, item) for key, item in value.items()}
        elif field.is_repeated:
            out[field.name] = [value_of(field, item) for item in value]
        else:
            out[field.name] = value_of(field, value)
    return out


def start_run(trainer, request: trainer_pb2.StartRunRequest, timeout_s: float) -> trainer_pb2.Run:
    """StartRun, retried while the trainer is still reading the job's curated examples."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return trainer.StartRun(request).run
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.FAILED_PRECONDITION or time.monotonic() > deadline:
                raise
        time.sleep(POLL_S)


def run_job(runtime: LocalRuntime, spec: pb.JobSpec, progress: Progress, stall_timeout_s: float = 600.0) -> dict:
    clients = Clients.connect(runtime)
    started = time.monotonic()
    job = clients.taskgen.SubmitJob(taskgen_pb2.SubmitJobRequest(spec=spec)).job
    # Examplegen reads corpus_path (local mode's data roots are the job's own paths) and publishes its
    # chunks, which the trainer mines from and the embedder indexes.
    documents = sum(1 for _ in read_documents(spec.corpus_path)) if spec.corpus_path else 0

    bars = {
        "tasks": progress.add_task("brainstorm: tasks", total=None),
        "generated": progress.add_task("examplegen: examples", total=None),
        "curated": progress.add_task("curator: accepted+rejected", total=None),
    }
    last_change, last_counts = time.monotonic(), None
    while True:
        status = clients.taskgen.GetJob(taskgen_pb2.GetJobRequest(job_id=job.job_id)).job
        generation = clients.examplegen.GetGenerationStats(examplegen_pb2.GetGenerationStatsRequest(job_id=job.job_id))
        dataset = clients.curator.GetDatasetStats(curator_pb2.GetDatasetStatsRequest(job_id=job.job_id))
        generated = generation.succeeded + generation.failed
        curated = dataset.accepted + dataset.rejected
        progress.update(bars["tasks"], completed=status.tasks_published, total=status.tasks_target or None)
        progress.update(bars["generated"], completed=generated, total=status.examples_target or None)
        progress.update(bars["curated"], completed=curated, total=status.examples_target or None)
        if status.state == taskgen_pb2.JOB_STATE_FAILED:
            raise PipelineError(f"job failed in taskgen: {status.error}")
        counts = (status.tasks_published, generated, curated)
        if counts != last_counts:
            last_change, last_counts = time.monotonic(), counts
        elif time.monotonic() - last_change > stall_timeout_s:
            raise PipelineError(f"no progress for {stall_timeout_s:.0f}s (tasks, generated, curated) = {counts}")
        if status.examples_target and generated >= status.examples_target and curated >= generated:
            break
        time.sleep(POLL_S)
    generation_s = time.monotonic() - started

    run = start_run(
        clients.trainer,
        trainer_pb2.StartRunRequest(
            job_id=job.job_id,
            spec=spec.training,
            eval_paths=spec.eval_paths,
            run_id=f"{job.job_id}-run",
            min_examples=dataset.accepted,
        ),
        stall_timeout_s,
    )
    training_bar = progress.add_task("trainer: steps", total=None)
    for update in clients.trainer.WatchRun(trainer_pb2.WatchRunRequest(run_id=run.run_id)):
        run = update.run
        progress.update(
            training_bar,
            completed=run.step,
            total=run.total_steps or None,
            description=f"trainer: {trainer_pb2.RunState.Name(run.state).removeprefix('RUN_STATE_').lower()}",
        )
    if run.state != trainer_pb2.RUN_STATE_SUCCEEDED:
        raise PipelineError(f"training run {run.run_id} ended {trainer_pb2.RunState.Name(run.state)}: {run.error}")
    training_s = time.monotonic() - started - generation_s

    index_bar = progress.add_task("embedder: serving + indexing", total=documents or None)
    deadline = time.monotonic() + stall_timeout_s
    while True:
        info = clients.embedder.GetModelInfo(embedder_pb2.GetModelInfoRequest(collection=spec.collection))
        progress.update(index_bar, completed=min(info.documents, documents))
        if info.model_id == run.model_id and info.documents >= documents:
            break
        if time.monotonic() > deadline:
            raise PipelineError(
                f"embedder did not serve model {run.model_id} with {documents} documents indexed (serving "
                f"{info.model_id!r}, {info.documents} documents)"
            )
        time.sleep(POLL_S)

    sample_query = spec.sample_query or spec.domain
    search = clients.embedder.Search(
        embedder_pb2.SearchRequest(query=sample_query, collection=spec.collection, top_k=3, mode=embedder_pb2.SEARCH_MODE_HYBRID)
    )
    final = clients.taskgen.GetJob(taskgen_pb2.GetJobRequest(job_id=job.job_id)).job
    return {
        "job": {
            "job_id": job.job_id,
            "name": spec.name,
            "domain": spec.domain,
            "task": final.spec.task,  # the job's, or drafted by taskgen
            "generator_model": spec.generator_model or _default_generator(runtime),
            "documents": documents,
            "tasks": final.tasks_published,
        },
        "timings": {"total_s": time.monotonic() - started, "generation_s": generation_s, "training_s": training_s},
        "generation": _as_dict(generation),
        "curation": _as_dict(dataset),
        # taskgen's job totals cover every stage (brainstorm + examples); examplegen's cover examples only.
        "usage": [{"stage": "examples", **_as_dict(u)} for u in generation.usage]
        + [{"stage": "job total", **_as_dict(u)} for u in final.usage],
        "training": {
            "run_id": run.run_id,
            "steps": run.step,
            "train_examples": run.train_examples,
            "dev_examples": run.dev_examples,
            "loss_curve": [[p.step, p.loss] for p in run.loss_curve],
            "dataset_manifest": run.dataset_manifest,
        },
        "evaluation": [
            {"dataset": e.dataset, "metric": e.metric, "base": e.base, "tuned": e.tuned, "difference_se": e.difference_se}
            for e in run.evals
        ],
        "model": {"model_id": run.model_id, "uri": run.model_uri, "manifest_digest": run.manifest_digest},
        "index": {"collection": info.collection, "points": info.points, "documents": info.documents},
        "sample_search": {
            "query": sample_query,
            "hits": [{"score": h.score, "doc_id": h.doc_id, "text": h.text} for h in search.hits],
        },
    }


def _default_generator(runtime: LocalRuntime) -> str:
    """The model examplegen uses when the job names none (local mode's generator server, if any)."""
    return runtime.llm_server.model if runtime.llm_server is not None else ""


def progress_bars(console) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
    )
