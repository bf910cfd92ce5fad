"""Consume tasks and corpus chunks, write training examples with the LLM, publish each
RawExample (success or failure with reason) to forge.examples.raw as soon as it is done.

A job's documents (its corpus path, or else the documents on forge.documents that carry its
id) are cut into chunks here, once (libs.corpus), and every chunk is published to
forge.corpus.chunks: those that get queries, and the others for the trainer's mining and the
embedder's index.
Example ids are stable, and ids already published are kept in ``state_dir``, so a task
reprocessed after a crash only writes the examples that were missing.
"""

import logging
import random
import shutil
import tempfile
import threading
from pathlib import Path

from embedforge.v1 import examplegen_pb2 as api
from embedforge.v1 import examplegen_pb2_grpc as api_grpc
from embedforge.v1 import messages_pb2 as pb
from libs import ids, topics
from libs.grpc import GrpcService
from libs.kafka import ConsumerLoop, Outgoing, ProtoProducer, Received, Subscription, TransientError, per_message
from libs.service import ServiceParts
from libs.corpus import chunk_messages, read_documents
from libs.dataroots import DataRoots
from libs.fetch import FetchUnavailable, local_copy
from libs.jobspec import corpus_chunk_words, default_task
from services.examplegen.generation import ExampleWriter, GenerationStats, PlannedExample
from services.examplegen.settings import ExamplegenSettings
from services.examplegen.topic_corpus import TopicCorpus, takes_topic_documents

log = logging.getLogger(__name__)


class PublishedLog:
    """Example ids already published and acknowledged (one per line, flushed on each append)."""

    def __init__(self, state_dir: Path):
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / "published_examples.txt"
        self._lock = threading.Lock()
        self._ids = set(self.path.read_text().split()) if self.path.exists() else set()
        self._file = open(self.path, "a", encoding="utf-8")

    def __contains__(self, example_id: str) -> bool:
        with self._lock:
            return example_id in self._ids

    def add(self, example_id: str) -> None:
        with self._lock:
            if example_id not in self._ids:
                self._ids.add(example_id)
                self._file.write(example_id + "\n")
                self._file.flush()

    def close(self) -> None:
        self._file.close()


class Examplegen:
    """The service's work: plan, skip what is already published, write, publish."""

    def __init__(self, settings: ExamplegenSettings, producer: ProtoProducer, writer: ExampleWriter, published: PublishedLog):
        self.settings = settings
        self.producer = producer
        self.writer = writer
        self.published = published
        self.topic_corpus = TopicCorpus(Path(settings.state_dir))
        self.roots = DataRoots(settings.data)
        self.fetched = Path(settings.state_dir) / "fetched"
        shutil.rmtree(self.fetched, ignore_errors=True)  # downloads a crash left behind

    def _generate(self, plans: list[PlannedExample]) -> list[Outgoing]:
        todo = [p for p in plans if p.raw.example_id not in self.published]
        for plan in todo:
            self.writer.stats.record_requested(plan.raw.job_id, 1)
        if len(todo) < len(plans):
            log.info("skipping examples already published", extra={"skipped": len(plans) - len(todo)})

        def publish(raw: pb.RawExample) -> None:
            self.producer.send_and_wait(topics.EXAMPLES_RAW, raw.example_id, raw)
            self.published.add(raw.example_id)

        self.writer.write(todo, publish)
        return []

    def handle_tasks(self, records: list[Received]) -> list[Outgoing]:
        return self._generate([plan for r in records for plan in self.writer.plan_task(r.message)])

    def handle_chunks(self, records: list[Received]) -> list[Outgoing]:
        """Write the queries of the chunks that ask for some (the others are for mining and indexing)."""
        return self._generate([plan for r in records if r.message.num_queries > 0 for plan in self.writer.plan_chunk(r.message)])

    def handle_job(self, record: Received) -> list[Outgoing]:
        """A job with a corpus path: publish its chunks. A job that takes its documents from
        forge.documents: publish the chunks of the documents that came before it."""
        job: pb.Job = record.message
        parked = self.topic_corpus.add_job(job)
        chunks = self.corpus_chunks(job) if job.spec.corpus_path else self.topic_chunks(job, parked)
        return [Outgoing(topics.CORPUS_CHUNKS, c.chunk_id, c) for c in chunks]

    def handle_document(self, record: Received) -> list[Outgoing]:
        """A document of a job that takes them from the topic gets queries for its new chunks."""
        document: pb.Document = record.message
        if not document.job_id or document.deleted:
            return []
        job = self.topic_corpus.job(document.job_id)
        if job is None:
            self.topic_corpus.park(document)
            return []
        if not takes_topic_documents(job):
            return []
        return [Outgoing(topics.CORPUS_CHUNKS, c.chunk_id, c) for c in self.topic_chunks(job, [document])]

    def corpus_chunks(self, job: pb.Job) -> list[pb.CorpusChunk]:
        """Every chunk of ``corpus_path``, the job's ``corpus_queries`` spread over a seeded sample
        of them: a server path or an object URI under the data roots (a job naming anything else is
        dead-lettered). A URI's documents are downloaded into the state dir for the reading
        only (libs.fetch); a store that cannot be reached leaves the job to be retried."""
        spec = job.spec
        self.fetched.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.fetched) as scratch:
            try:
                path = local_copy(self.roots, spec.corpus_path, "spec.corpus_path", Path(scratch), select="documents")
            except FetchUnavailable as exc:
                raise TransientError(f"job {job.job_id}: {exc}") from exc
            words = corpus_chunk_words(spec)
            chunks = [c for doc in read_documents(path) for c in chunk_messages(job.job_id, doc, words, spec.collection)]
        if not chunks:
            raise ValueError("spec.corpus_path has no text to chunk")
        rng = random.Random(f"{job.job_id}|{spec.seed}")
        chosen = rng.sample(range(len(chunks)), min(max(spec.corpus_queries, 0), len(chunks)))
        per_chunk, extra = divmod(spec.corpus_queries, len(chosen)) if chosen else (0, 0)
        for position, index in enumerate(chosen):
            self.ask_queries(job, chunks[index], per_chunk + (1 if position < extra else 0))
        log.info("corpus chunked", extra={"job_id": job.job_id, "chunks": len(chunks), "with_queries": len(chosen)})
        return chunks

    def topic_chunks(self, job: pb.Job, documents: list[pb.Document]) -> list[pb.CorpusChunk]:
        """Every chunk of ``documents``, one query for each within the job's budget (see topic_corpus)."""
        if not documents:
            return []
        planned = self.topic_corpus.plan(job, documents)
        for chunk, num_queries in planned:
            if num_queries:
                self.ask_queries(job, chunk, num_queries)
        log.info("documents chunked", extra={"job_id": job.job_id, "documents": len(documents), "chunks": len(planned)})
        return [chunk for chunk, _ in planned]

    def ask_queries(self, job: pb.Job, chunk: pb.CorpusChunk, num_queries: int) -> None:
        """Ask for ``num_queries`` queries for ``chunk``, conditioned and generated as the job says."""
        spec = job.spec
        chunk.task_description = spec.task or default_task(spec.domain)
        chunk.example_queries.extend(spec.example_queries)
        chunk.num_queries = num_queries
        chunk.generator_model = spec.generator_model
        chunk.languages.extend(spec.languages)
        chunk.seed = spec.seed


class ExamplegenServicer(api_grpc.ExamplegenServiceServicer):
    def __init__(self, stats: GenerationStats):
        self.stats = stats

    def GetGenerationStats(self, request: api.GetGenerationStatsRequest, context) -> api.GetGenerationStatsResponse:
        return self.stats.snapshot(ids.check(request.job_id, "job_id") if request.job_id else "")


def build(settings: ExamplegenSettings) -> ServiceParts:
    producer = ProtoProducer(settings.kafka, client_id="examplegen")
    stats = GenerationStats()
    writer = ExampleWriter(settings, stats)
    published = PublishedLog(Path(settings.state_dir))
    examplegen = Examplegen(settings, producer, writer, published)
    subscriptions = [
        Subscription(topics.TASKS, examplegen.handle_tasks, batch=True),
        Subscription(topics.CORPUS_CHUNKS, examplegen.handle_chunks, batch=True),
        Subscription(topics.JOBS, per_message(examplegen.handle_job)),
        Subscription(topics.DOCUMENTS, per_message(examplegen.handle_document)),
    ]
    servicer = ExamplegenServicer(stats)
    return ServiceParts(
        grpc_services=[GrpcService.generated(api_grpc, api, "ExamplegenService", servicer)],
        consumers=[ConsumerLoop(settings.kafka, topics.EXAMPLEGEN_GROUP, subscriptions, producer)],
        producer=producer,
        on_stop=[writer.stop],
        on_shutdown=[writer.close, published.close],
    )
