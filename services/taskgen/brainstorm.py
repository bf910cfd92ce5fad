"""Task brainstorming (E5-mistral step 1): ask the LLM for a list of task descriptions per
category, conditioned on the job's domain; parse robustly; drop echoes of the prompt, meta-tasks
and truncated tasks; dedup; give stable task ids. Also the job's own task definition, drafted
when the job gives none."""

import hashlib
import logging
import re
from pathlib import Path

from embedforge.v1 import messages_pb2 as pb
from libs.jobspec import default_task
from libs.llm import LlmError, UsageAccumulator, call_options, complete
from libs.llm.parsing import AnswerError, parse_object, parse_string_list, text_field
from libs.llm.templates import PromptTemplate, load_templates
from libs.settings import LlmSettings
from libs.words import dangling_ending, jaccard

log = logging.getLogger(__name__)
TEMPLATES_DIR = Path(__file__).with_name("templates")
BRAINSTORM_TEMPLATE = {
    pb.CATEGORY_RETRIEVAL: "brainstorm_retrieval",
    pb.CATEGORY_SHORT_MATCHING: "brainstorm_short_matching",
    pb.CATEGORY_LONG_MATCHING: "brainstorm_long_matching",
    pb.CATEGORY_CLASSIFICATION: "brainstorm_classification",
}
# STS and bitext need no brainstorm: the paper uses one fixed instruction for each.
FIXED_TASKS = {
    pb.CATEGORY_STS: "Retrieve semantically similar text.",
    pb.CATEGORY_BITEXT: "Retrieve parallel sentences.",
}
MIN_TASK_CHARS = 12
MAX_TASK_CHARS = 400
# Small models copy their prompt instead of writing tasks: its few-shot examples (alone,
# reworded, or several strung together), its guidelines, or the domain restated. A task is such
# an echo when under this share of its content words (4+ characters; shorter ones are mostly
# function words) is new against the prompt without the domain ...
MIN_NEW_WORDS_VS_PROMPT = 0.25
# ... or when its word set overlaps the domain description this much (Jaccard).
DOMAIN_ECHO_JACCARD = 0.5
# A sentence about tasks or goals instead of a task ("Our goal is to understand customer support
# tasks for ...", "Here are retrieval tasks", "We want to ...").
META_TASK = re.compile(
    r"^(?:(?:our|my|the|your)\s+(?:main\s+)?(?:goal|aim|objective|purpose|idea)\s+is"
    r"|(?:we|i)\s+(?:want|need|will|would|aim|are)\b"
    r"|let'?s\b|let us\b|here (?:is|are)\b|(?:these|the following) (?:are|is)\b)"
    r"|\bbrainstorm|\b(?:text |embedding |retrieval |matching |classification )?tasks (?:for|of|in|that|related)\b",
    re.IGNORECASE,
)
# The drafted task definition of a job: one sentence of at most this many characters.
MAX_DRAFT_CHARS = 200


def normalize_task(text: str) -> str:
    """Dedup key: case-folded words without punctuation."""
    return " ".join(re.findall(r"\w+", text.casefold()))


def clean_task(text: str, max_chars: int = MAX_TASK_CHARS) -> str | None:
    """A usable task sentence, or None (too short/long, not a sentence, a meta-task such as "Our
    goal is to understand ... tasks", or truncated: ending on a lead-in such as ":" or ",")."""
    text = re.sub(r"\s+", " ", text).strip().strip("\"'").strip()
    text = re.sub(r"^(?:task\s*\d*\s*[:.-]\s*)", "", text, flags=re.IGNORECASE)
    if not (MIN_TASK_CHARS <= len(text) <= max_chars) or len(normalize_task(text).split()) < 3:
        return None
    if META_TASK.search(text) or dangling_ending(text):
        return None
    return text


def word_set(text: str) -> set[str]:
    return set(normalize_task(text).split())


def echoes_prompt(task: str, domain_words: set[str], prompt_words: set[str]) -> bool:
    """Whether ``task`` copies the prompt (``prompt_words``: its examples and guidelines, without
    the domain) or restates the domain instead of adding a task of its own."""
    words = word_set(task)
    content = {w for w in words if len(w) >= 4}
    if len(content - prompt_words) < MIN_NEW_WORDS_VS_PROMPT * len(content):
        return True
    return jaccard(words, domain_words) >= DOMAIN_ECHO_JACCARD


def task_id(job_id: str, category: int, description: str) -> str:
    """Stable id of a task: the same job, category and text always give the same id."""
    return hashlib.sha256(f"{job_id}|{category}|{normalize_task(description)}".encode()).hexdigest()[:24]


class Brainstormer:
    def __init__(self, llm: LlmSettings, max_tokens: int, temperature: float, templates_dir: Path = TEMPLATES_DIR):
        self.llm = llm
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.templates = load_templates(templates_dir)

    def template(self, category: int) -> PromptTemplate:
        return self.templates[BRAINSTORM_TEMPLATE[category]]

    def brainstorm(
        self, domain: str, category: int, count: int, model: str = "", accumulator: UsageAccumulator | None = None
    ) -> list[str]:
        """One brainstorm call: cleaned task sentences that do not echo the prompt's examples or
        the domain (may be fewer or more than ``count``). Raises LlmError when the call failed for good."""
        template = self.template(category)
        messages = template.render(domain=domain, count=count)
        model = model or self.llm.model
        answer = complete(
            model,
            messages,
            json_schema=template.json_schema,
            max_tokens=min(template.max_tokens, self.max_tokens),
            temperature=self.temperature,
            accumulator=accumulator,
            validate=False,  # a truncated list still holds usable tasks
            **call_options(self.llm, model),
        )
        tasks = [t for t in (clean_task(item) for item in parse_string_list(answer.text)) if t]
        prompt_words = word_set(" ".join(m["content"] for m in template.render(domain="", count="")))
        domain_words = word_set(domain)
        return [t for t in tasks if not echoes_prompt(t, domain_words, prompt_words)]

    def draft_task(self, domain: str, example_queries, model: str = "", accumulator: UsageAccumulator | None = None) -> str:
        """The job's task definition: one LLM call, kept if it is one sentence of at most
        MAX_DRAFT_CHARS, neither a meta-task nor truncated, and about the job: it shares a content
        word with the domain or the example queries (small models copy the prompt's examples
        whatever the domain); else (or when the call fails) libs.jobspec.default_task of the domain."""
        template = self.templates["task_definition"]
        model = model or self.llm.model
        try:
            answer = complete(
                model,
                template.render(domain=domain, example_queries=list(example_queries)),
                json_schema=template.json_schema,
                max_tokens=template.max_tokens,
                temperature=0.0,
                accumulator=accumulator,
                **call_options(self.llm, model),
            )
        except LlmError:
            return default_task(domain)
        try:
            draft = text_field(parse_object(answer.text).value, "task")
        except AnswerError as exc:
            log.info("drafted task not used", extra={"draft": answer.text[:300], "error": str(exc)[:300]})
            return default_task(domain)
        task = clean_task(draft, MAX_DRAFT_CHARS)
        job_words = {w for w in word_set(" ".join([domain, *example_queries])) if len(w) >= 4}
        if task is None or re.search(r"[.!?]\s+\S", task) or not job_words & word_set(task):
            log.info("drafted task not used", extra={"draft": draft[:300]})
            return default_task(domain)
        return task.rstrip(".")
