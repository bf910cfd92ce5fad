"""Turning tasks and corpus chunks into LLM calls, and LLM answers into RawExamples with
full provenance (template id/version, sampled attributes, model, usage, latency, ids)."""

import hashlib
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from opentelemetry import metrics

from embedforge.v1 import examplegen_pb2 as api
from embedforge.v1 import messages_pb2 as pb
from libs.kafka import TransientError
from libs.llm import LlmError, UsageAccumulator, call_options, complete
from libs.llm.templates import PromptTemplate, load_templates
from libs.settings import LlmSettings
from services.examplegen.sampling import LanguageSampler, rng_for, sample_attributes, spread_attributes, template_variables

log = logging.getLogger(__name__)
meter = metrics.get_meter("embedforge.examplegen")
examples_counter = meter.create_counter("examplegen.examples", description="Raw examples written, by category and outcome")

TEMPLATES_DIR = Path(__file__).with_name("templates")
TEMPLATE_OF_CATEGORY = {
    pb.CATEGORY_RETRIEVAL: "retrieval",
    pb.CATEGORY_SHORT_MATCHING: "short_matching",
    pb.CATEGORY_LONG_MATCHING: "long_matching",
    pb.CATEGORY_CLASSIFICATION: "classification",
    pb.CATEGORY_STS: "sts",
    pb.CATEGORY_BITEXT: "bitext",
    pb.CATEGORY_CORPUS_GROUNDED: "corpus_query",
}


def example_id(source_id: str, index: int) -> str:
    """Stable id of the ``index``-th example of a task or chunk (the idempotency key)."""
    return hashlib.sha256(f"{source_id}|{index}".encode()).hexdigest()[:24]


@dataclass
class PlannedExample:
    """One example to write: its provenance and the rendered prompt."""

    raw: pb.RawExample
    messages: list[dict]
    model: str
    template: PromptTemplate


@dataclass(frozen=True)
class GenerationConfig:
    """How examples are written: ``llm.model`` is the generator when a task or chunk names none."""

    llm: LlmSettings
    max_tokens: int = 1024
    temperature: float = 0.8
    language_alpha: float = 0.5
    concurrency: int = 16


class GenerationStats:
    """Counters per job for GetGenerationStats."""

    def __init__(self):
        self._lock = threading.Lock()
        self.requested: Counter[str] = Counter()
        self.succeeded: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.by_category: dict[str, Counter[str]] = {}
        self.by_language: dict[str, Counter[str]] = {}
        self.failures: dict[str, Counter[str]] = {}
        self.usage: dict[str, UsageAccumulator] = {}

    def accumulator(self, job_id: str) -> UsageAccumulator:
        with self._lock:
            return self.usage.setdefault(job_id, UsageAccumulator())

    def record_requested(self, job_id: str, count: int) -> None:
        with self._lock:
            self.requested[job_id] += count

    def record(self, raw: pb.RawExample) -> None:
        with self._lock:
            job = raw.job_id
            if raw.error:
                self.failed[job] += 1
                self.failures.setdefault(job, Counter())[raw.error.split(":", 1)[0]] += 1
            else:
                self.succeeded[job] += 1
                self.by_category.setdefault(job, Counter())[pb.Category.Name(raw.category)] += 1
                self.by_language.setdefault(job, Counter())[raw.attributes.get("language", "")] += 1

    def snapshot(self, job_id: str) -> api.GetGenerationStatsResponse:
        with self._lock:
            jobs = [job_id] if job_id else sorted(set(self.requested) | set(self.succeeded) | set(self.failed))
            response = api.GetGenerationStatsResponse(job_id=job_id)
            totals: dict[str, pb.LlmUsage] = {}
            for job in jobs:
                response.requested += self.requested[job]
                response.succeeded += self.succeeded[job]
                response.failed += self.failed[job]
                for target, source in ((response.by_category, self.by_category), (response.by_language, self.by_language), (response.failures_by_reason, self.failures)):
                    for key, count in source.get(job, Counter()).items():
                        target[key] += count
                if job in self.usage:
                    for model, usage in self.usage[job].totals().items():
                        total = totals.setdefault(model, pb.LlmUsage(model=model))
                        total.prompt_tokens += usage.prompt_tokens
                        total.completion_tokens += usage.completion_tokens
                        total.cost_usd += usage.cost_usd
                        total.latency_s += usage.latency_s
                        total.calls += usage.calls
            response.usage.extend(totals.values())
            return response


class ExampleWriter:
    """Plans examples for tasks and chunks and writes them concurrently (so the model's server
    batches them); each answer or failure becomes one RawExample."""

    def __init__(self, config: GenerationConfig, stats: GenerationStats, templates_dir: Path = TEMPLATES_DIR):
        self.config = config
        self.stats = stats
        self.templates = load_templates(templates_dir)
        missing = set(TEMPLATE_OF_CATEGORY.values()) - set(self.templates)
        if missing:
            raise ValueError(f"templates missing from {templates_dir}: {sorted(missing)}")
        self._pool = ThreadPoolExecutor(max_workers=config.concurrency, thread_name_prefix="examplegen-llm")
        self._stopping = threading.Event()

    def stop(self) -> None:
        """Interrupt writing (the process is stopping): :meth:`write` publishes nothing more, so
        the unfinished records are redone after a restart."""
        self._stopping.set()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def template_for(self, category: int) -> PromptTemplate:
        if category not in TEMPLATE_OF_CATEGORY:
            raise ValueError(f"no example template for category {pb.Category.Name(category) if category in pb.Category.values() else category}")
        return self.templates[TEMPLATE_OF_CATEGORY[category]]

    def plan_task(self, task: pb.Task) -> list[PlannedExample]:
        if not task.task_id or not task.job_id:
            raise ValueError("task needs task_id and job_id")
        if task.category == pb.CATEGORY_CORPUS_GROUNDED:
            raise ValueError("corpus-grounded examples come from forge.corpus.chunks, not tasks")
        template = self.template_for(task.category)
        if "task" in template.user and not task.description.strip():
            raise ValueError(f"task {task.task_id} has no description")
        languages = LanguageSampler(task.languages, self.config.language_alpha)
        planned = []
        for index in range(max(task.num_examples, 1)):
            rng = rng_for(task.seed, task.task_id, index)
            attributes = sample_attributes(template, rng, languages, bitext=task.category == pb.CATEGORY_BITEXT, max_tokens=self.config.max_tokens)
            raw = pb.RawExample(
                example_id=example_id(task.task_id, index),
                job_id=task.job_id,
                task_id=task.task_id,
                category=task.category,
                task_description=task.description,
                template_id=template.id,
                template_version=template.version,
                attributes=attributes,
            )
            messages = template.render(task=task.description, **template_variables(attributes))
            planned.append(PlannedExample(raw, messages, task.generator_model or self.config.llm.model, template))
        return planned

    def plan_chunk(self, chunk: pb.CorpusChunk) -> list[PlannedExample]:
        if not chunk.chunk_id or not chunk.job_id or not chunk.text.strip():
            raise ValueError("corpus chunk needs chunk_id, job_id and text")
        template = self.templates["corpus_query"]
        languages = LanguageSampler(chunk.languages, self.config.language_alpha)
        planned = []
        seed, count = (chunk.seed, chunk.chunk_id), max(chunk.num_queries, 1)
        for index, attributes in enumerate(spread_attributes(template, seed, count, languages, self.config.max_tokens)):
            raw = pb.RawExample(
                example_id=example_id(chunk.chunk_id, index),
                job_id=chunk.job_id,
                category=pb.CATEGORY_CORPUS_GROUNDED,
                task_description=chunk.task_description,
                template_id=template.id,
                template_version=template.version,
                attributes={**attributes, "doc_id": chunk.doc_id, "title": chunk.title},
                chunk_id=chunk.chunk_id,
                chunk_text=chunk.text,
            )
            variables = {**template_variables(attributes), "example_queries": list(chunk.example_queries)}
            messages = template.render(task=chunk.task_description, title=chunk.title, chunk=chunk.text, **variables)
            planned.append(PlannedExample(raw, messages, chunk.generator_model or self.config.llm.model, template))
        return planned

    def write_one(self, plan: PlannedExample) -> pb.RawExample:
        raw = plan.raw
        raw.usage.model = plan.model
        try:
            answer = complete(
                plan.model,
                plan.messages,
                json_schema=plan.template.schema_for(dict(plan.raw.attributes)),
                max_tokens=min(plan.template.answer_budget(dict(plan.raw.attributes)), self.config.max_tokens),
                temperature=self.config.temperature,
                accumulator=self.stats.accumulator(raw.job_id),
                **call_options(self.config.llm, plan.model),
            )
        except LlmError as exc:
            raw.error = f"{exc.reason}: {exc.detail[:500]}"
            spent, raw.usage.calls = exc.usage, exc.attempts
        else:
            raw.raw_output = answer.text
            spent, raw.usage.calls = answer.usage, answer.attempts
        if spent is not None:  # the tokens of every attempt, rejected answers included
            raw.usage.prompt_tokens = spent.prompt_tokens
            raw.usage.completion_tokens = spent.completion_tokens
            raw.usage.cost_usd = spent.cost_usd
            raw.usage.latency_s = spent.latency_s
        raw.created_at.GetCurrentTime()
        examples_counter.add(1, {"category": pb.Category.Name(raw.category), "outcome": "failed" if raw.error else "ok"})
        return raw

    def write(self, plans: Iterable[PlannedExample], publish: Callable[[pb.RawExample], None]) -> int:
        """Write every plan concurrently; ``publish`` each RawExample as soon as it is done.
        Returns how many were written (failures included: they are published with ``error``)."""
        futures = [self._pool.submit(self.write_one, plan) for plan in plans]
        for future in as_completed(futures):
            raw = future.result()
            if self._stopping.is_set():
                raise TransientError("examplegen is stopping; unfinished examples are written after restart")
            publish(raw)
            self.stats.record(raw)
        return len(futures)
