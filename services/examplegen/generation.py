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
from libs.llm import LlmError, Usage, UsageAccumulator, call_options, complete
from libs.llm.templates import PromptTemplate, load_templates
from services.examplegen.answers import read_answer, set_requests
from services.examplegen.sampling import LanguageSampler, rng_for, sample_attributes, spread_attributes, template_variables
from services.examplegen.settings import ExamplegenSettings

log = logging.getLogger(__name__)
meter = metrics.get_meter("embedforge.examplegen")
examples_counter = meter.create_counter("examplegen.examples", description="Raw examples written, by category and outcome")

TEMPLATES_DIR = Path(__file__).with_name("templates")


def example_id(source_id: str, index: int) -> str:
    """Stable id of the ``index``-th example of a task or chunk (the idempotency key)."""
    return hashlib.sha256(f"{source_id}|{index}".encode()).hexdigest()[:24]


def raw_example(template: PromptTemplate, attributes: dict[str, str], **fields) -> pb.RawExample:
    """A RawExample of ``template`` with its sampled attributes and what they request of the answer."""
    raw = pb.RawExample(template_id=template.id, template_version=template.version, attributes=attributes, **fields)
    set_requests(raw, template)
    return raw


@dataclass
class PlannedExample:
    """One example to write: its provenance and the rendered prompt."""

    raw: pb.RawExample
    messages: list[dict]
    model: str
    template: PromptTemplate


def templates_by_category(folder: Path) -> dict[int, PromptTemplate]:
    """The example template of each category: the one template in ``folder`` whose ``example``
    names it (the only category -> template map)."""
    by_category: dict[int, PromptTemplate] = {}
    for template in load_templates(folder).values():
        if template.example is not None:
            if template.example.category in by_category:
                raise ValueError(f"{folder}: two templates for {pb.Category.Name(template.example.category)}")
            by_category[template.example.category] = template
    missing = set(pb.Category.values()) - {pb.CATEGORY_UNSPECIFIED} - set(by_category)
    if missing:
        raise ValueError(f"{folder}: no template for {sorted(pb.Category.Name(c) for c in missing)}")
    return by_category


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
            totals: dict[str, Usage] = {}
            for job in jobs:
                response.requested += self.requested[job]
                response.succeeded += self.succeeded[job]
                response.failed += self.failed[job]
                for target, source in (
                    (response.by_category, self.by_category),
                    (response.by_language, self.by_language),
                    (response.failures_by_reason, self.failures),
                ):
                    for key, count in source.get(job, Counter()).items():
                        target[key] += count
                if job in self.usage:
                    for model, usage in self.usage[job].totals().items():
                        totals[model] = totals[model] + usage if model in totals else usage
            response.usage.extend(usage.message() for usage in totals.values())
            return response


class ExampleWriter:
    """Plans examples for tasks and chunks and writes them concurrently (so the model's server
    batches them); each answer or failure becomes one RawExample. The generator is
    ``settings.llm.model`` when a task or chunk names none."""

    def __init__(self, settings: ExamplegenSettings, stats: GenerationStats, templates_dir: Path = TEMPLATES_DIR):
        self.settings = settings
        self.stats = stats
        self.templates = templates_by_category(templates_dir)
        self._pool = ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix="examplegen-llm")
        self._stopping = threading.Event()

    def stop(self) -> None:
        """Interrupt writing (the process is stopping): :meth:`write` publishes nothing more, so
        the unfinished records are redone after a restart."""
        self._stopping.set()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def template_for(self, category: int) -> PromptTemplate:
        if category not in self.templates:
            raise ValueError(
                f"no example template for category {pb.Category.Name(category) if category in pb.Category.values() else category}"
            )
        return self.templates[category]

    def plan_task(self, task: pb.Task) -> list[PlannedExample]:
        if not task.task_id or not task.job_id:
            raise ValueError("task needs task_id and job_id")
        if task.category == pb.CATEGORY_CORPUS_GROUNDED:
            raise ValueError("corpus-grounded examples come from forge.corpus.chunks, not tasks")
        template = self.template_for(task.category)
        if "task" in template.user and not task.description.strip():
            raise ValueError(f"task {task.task_id} has no description")
        languages = LanguageSampler(task.languages, self.settings.language_alpha)
        planned = []
        for index in range(max(task.num_examples, 1)):
            rng = rng_for(task.seed, task.task_id, index)
            attributes = sample_attributes(
                template, rng, languages, bitext=task.category == pb.CATEGORY_BITEXT, max_tokens=self.settings.max_tokens
            )
            messages = template.render(task=task.description, **template_variables(attributes))
            ids = {"example_id": example_id(task.task_id, index), "job_id": task.job_id, "task_id": task.task_id}
            raw = raw_example(template, attributes, category=task.category, task_description=task.description, source="generated",
                              **ids)  # fmt: skip
            planned.append(PlannedExample(raw, messages, task.generator_model or self.settings.llm.model, template))
        return planned

    def plan_chunk(self, chunk: pb.CorpusChunk) -> list[PlannedExample]:
        if not chunk.chunk_id or not chunk.job_id or not chunk.text.strip():
            raise ValueError("corpus chunk needs chunk_id, job_id and text")
        template = self.template_for(pb.CATEGORY_CORPUS_GROUNDED)
        languages = LanguageSampler(chunk.languages, self.settings.language_alpha)
        planned = []
        seed, count = (chunk.seed, chunk.chunk_id), max(chunk.num_queries, 1)
        for index, attributes in enumerate(spread_attributes(template, seed, count, languages, self.settings.max_tokens)):
            variables = {**template_variables(attributes), "example_queries": list(chunk.example_queries)}
            messages = template.render(task=chunk.task_description, title=chunk.title, chunk=chunk.text, **variables)
            ids = {"example_id": example_id(chunk.chunk_id, index), "job_id": chunk.job_id, "chunk_id": chunk.chunk_id}
            attributes |= {"doc_id": chunk.doc_id, "title": chunk.title}
            raw = raw_example(template, attributes, category=pb.CATEGORY_CORPUS_GROUNDED,
                              task_description=chunk.task_description, chunk_text=chunk.text, source="corpus", **ids)  # fmt: skip
            planned.append(PlannedExample(raw, messages, chunk.generator_model or self.settings.llm.model, template))
        return planned

    def write_one(self, plan: PlannedExample) -> pb.RawExample:
        raw = plan.raw
        try:
            answer = complete(
                plan.model,
                plan.messages,
                json_schema=plan.template.schema_for(dict(plan.raw.attributes)),
                max_tokens=min(plan.template.answer_budget(dict(plan.raw.attributes)), self.settings.max_tokens),
                temperature=self.settings.temperature,
                accumulator=self.stats.accumulator(raw.job_id),
                **call_options(self.settings.llm, plan.model),
            )
        except LlmError as exc:
            raw.error = f"{exc.reason}: {exc.detail[:500]}"
            spent, attempts = exc.usage, exc.attempts
        else:
            read_answer(raw, plan.template, answer.text)
            spent, attempts = answer.usage, answer.attempts
        if spent is not None:  # the tokens of every attempt, rejected answers included
            raw.usage.CopyFrom(spent.message())
        raw.usage.model, raw.usage.calls = plan.model, attempts
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
