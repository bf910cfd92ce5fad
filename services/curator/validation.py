"""Turn one raw example (typed fields, parsed by examplegen) into a normalized example, or say why not.

Checks run cheapest first: upstream error, answer error (not the expected JSON), labels and
leakage, lengths, sameness, instruction echo, corpus copy, language. Each failure is a
:class:`Rejection` with a machine-readable reason code (see README.md).
"""

import math
import re
from dataclasses import dataclass, field
from functools import lru_cache

from embedforge.v1 import messages_pb2 as pb
from libs.words import jaccard, word_count
from services.curator.language import LanguageDetector, language_code, same_language
from services.curator.query_checks import corpus_query_problem
from services.curator.settings import ValidationSettings
from services.curator.text import content_hash, normalize, normalize_instruction, strip_label

LEAKAGE = re.compile(
    r"\bas an ai\b|\bas an? (?:ai )?language model\b|here(?: is|'s) (?:the|your|an?) (?:json|example|generated|requested)"
    r"|\bi (?:cannot|can't|am unable to) (?:fulfill|comply|help|provide)|\bi'm sorry, "
    r"but\b|<\|(?:im_start|im_end|assistant|user|system)\|>"
    r"|\{(?:num_words|query_type|query_length|clarity|difficulty|language|task|unit)\}|\byour (?:task|mission) is to\b"
    r"|\byou have been assigned\b",
)
# Literal fragments of every LEAKAGE match: cheap substring tests gate the slower regex.
LEAKAGE_HINTS = (
    "as an",
    "language model",
    "here is",
    "here's",
    "i cannot",
    "i can't",
    "i am unable",
    "i'm sorry",
    "<|",
    "{",
    "your task",
    "your mission",
    "you have been",
)
SENTENCE_END = re.compile(r"(?<=[.!?\u3002\uff01\uff1f])\s+|\n+")


def bigrams(normalized: str) -> set:
    words = normalized.split()
    return set(zip(words, words[1:])) if len(words) > 1 else set(words)


@lru_cache(maxsize=4096)
def _words(norm_instruction: str) -> tuple[tuple[str, ...], frozenset]:
    """Words and word set of one of the few task instructions a stream repeats."""
    words = tuple(norm_instruction.split())
    return words, frozenset(words)


class Rejection(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class Pending:
    """An example that passed every check but the language one, and what that check needs."""

    raw: pb.RawExample
    instruction: str
    query: str
    positives: list[str]
    negatives: list[str]
    norm_query: str
    norm_positive: str
    language: str = ""  # the example's language once the check passes
    verify: list[tuple[str, str]] = field(default_factory=list)  # (requested language, text)
    identify: str = ""  # no language requested: the text whose detected language is the example's

    def texts(self) -> list[str]:
        return [text for _, text in self.verify] + ([self.identify] if self.identify else [])


class Validator:
    def __init__(self, settings: ValidationSettings, detector: LanguageDetector | None = None):
        self.settings = settings
        self.detector = (
            detector if detector is not None or not settings.check_language else LanguageDetector(settings.language_probe_chars)
        )

    def curate(self, raw: pb.RawExample) -> pb.CuratedExample:
        """The normalized example, or raise :class:`Rejection`."""
        (result,) = self.curate_many([raw])
        if isinstance(result, Rejection):
            raise result
        return result

    def curate_many(self, raws: list[pb.RawExample]) -> list[pb.CuratedExample | Rejection]:
        """curate() of each example (its example or its Rejection), the language checks of all in one pass.

        Every check but the language runs per example; the texts that survive them are
        language-identified together (the detector amortizes its array work over the batch),
        then each example gets its verdict. Decisions are those of curate() one by one.
        """
        results: list = []
        for raw in raws:
            try:
                results.append(self._prepare(raw))
            except Rejection as exc:
                results.append(exc)
        pending = [(index, result, result.texts()) for index, result in enumerate(results) if isinstance(result, Pending)]
        detected = self._detect([text for _, _, texts in pending for text in texts])
        start = 0
        for index, result, texts in pending:
            try:
                results[index] = self._finish(result, detected[start : start + len(texts)])
            except Rejection as exc:
                results[index] = exc
            start += len(texts)
        return results

    def _detect(self, texts: list[str]) -> list[str]:
        if not texts:
            return []
        many = getattr(self.detector, "detect_many", None)
        return many(texts) if many is not None else [self.detector.detect(text) for text in texts]

    def _prepare(self, raw: pb.RawExample) -> "Pending":
        """Every check but the language one; raises Rejection."""
        if raw.error:
            raise Rejection("generation_failed", raw.error[:500])
        if raw.HasField("answer_error"):
            raise Rejection(raw.answer_error.reason, raw.answer_error.detail)
        query = strip_label(raw.query)
        positives = [strip_label(p) for p in raw.positives]
        negatives = [strip_label(n) for n in raw.negatives]
        instruction = raw.task_description
        self._check_texts(query, positives, negatives)
        if raw.HasField("query_words"):
            self._check_lengths("query", raw.query_words, [query])
        if raw.HasField("document_words"):
            self._check_lengths("document", raw.document_words, [*positives, *negatives])
        norm_query, norm_positive = normalize(query), normalize(positives[0])
        self._check_sameness(norm_query, norm_positive, negatives)
        self._check_echo(norm_query, normalize_instruction(instruction))
        if raw.category == pb.CATEGORY_CORPUS_GROUNDED:
            self._check_copy(norm_query, raw.chunk_text, raw.attributes)
            problem = corpus_query_problem(query, raw.attributes.get("title", ""), instruction)
            if problem:
                raise Rejection(*problem)
        pending = Pending(raw, instruction, query, positives, negatives, norm_query, norm_positive)
        self._language_checks(pending)
        return pending

    def _finish(self, pending: "Pending", detected: list[str]) -> pb.CuratedExample:
        """The example once its texts' detected languages (in ``pending.texts()`` order) are known."""
        for (requested, text), language in zip(pending.verify, detected):
            if not same_language(language, requested):
                raise Rejection("language_mismatch", f"asked for {requested!r}, text is {language!r}: {text[:60]!r}")
        language = detected[-1] if pending.identify else pending.language
        p = pending
        return self._example(p.raw, p.instruction, p.query, p.positives, p.negatives, language, p.norm_query, p.norm_positive)

    def _check_texts(self, query: str, positives: list[str], negatives: list[str]) -> None:
        if not query or not positives or not all(positives) or not all(negatives):
            raise Rejection("empty_text", "query, positive and negatives must be non-empty after stripping labels")
        limit = self.settings.max_text_chars
        for text in (query, *positives, *negatives):
            if len(text) > limit:
                raise Rejection("too_long", f"a text has {len(text)} characters, limit {limit}")
        joined = "\n".join((query, *positives, *negatives)).lower()
        for hint in LEAKAGE_HINTS:
            if hint in joined:
                leak = LEAKAGE.search(joined)
                if leak:
                    raise Rejection("prompt_leakage", f"contains {leak.group(0)!r}")
                return

    def _check_lengths(self, what: str, requested: pb.WordBounds, texts: list[str]) -> None:
        """Each text's words within the requested bounds (max 0: none), give or take the tolerance and slack."""
        tolerance, slack = self.settings.length_tolerance, self.settings.length_slack_words
        low = requested.min * (1 - tolerance) - slack
        high = requested.max * (1 + tolerance) + slack if requested.max else math.inf
        asked = f"{requested.min}-{requested.max or ''} words"
        for text in texts:
            words = word_count(text)
            if words < low:
                raise Rejection("too_short", f"{what} has {words:.0f} words; asked {asked} (min {low:.0f})")
            if words > high:
                raise Rejection("too_long", f"{what} has {words:.0f} words; asked {asked} (max {high:.0f})")

    def _same(self, a: str, b: str) -> bool:
        """Equal normalized texts, or word-bigram sets with Jaccard >= identical_jaccard."""
        if a == b:
            return True
        shorter, longer = sorted((len(a), len(b)))
        if shorter < 0.7 * longer:  # far too different in length to share 90% of their bigrams
            return False
        threshold = self.settings.identical_jaccard
        words = a.split()
        if len(words) > 1:
            # Jaccard >= t needs |A - B| <= (1 - t)|A| <= (1 - t)(words - 1): more distinct bigrams of
            # ``a`` missing from ``b`` (a substring test on the normalized text) settle it without the sets.
            budget = (1 - threshold) * (len(words) - 1) + 1e-9
            padded, missing = f" {b} ", set()
            for first, second in zip(words, words[1:]):
                bigram = f" {first} {second} "
                if bigram not in padded:
                    missing.add(bigram)
                    if len(missing) > budget:
                        return False
        return jaccard(bigrams(a), bigrams(b)) >= threshold

    def _check_sameness(self, norm_query: str, norm_positive: str, negatives: list[str]) -> None:
        if self._same(norm_query, norm_positive):
            raise Rejection("query_equals_positive", "query and positive are the same text")
        for negative in negatives:
            if self._same(norm_positive, normalize(negative)):
                raise Rejection("positive_equals_negative", "positive and negative are the same text")

    def _check_echo(self, norm_query: str, norm_instruction: str) -> None:
        if not norm_instruction:
            return
        query_words = norm_query.split()
        instruction_words, instruction_set = _words(norm_instruction)
        if norm_query == norm_instruction or (len(query_words) >= 3 and norm_instruction.startswith(norm_query)):
            raise Rejection("instruction_echo", "query repeats the task instruction")
        if len(instruction_words) >= 4 and query_words[:3] == list(instruction_words[:3]):
            raise Rejection("instruction_echo", f"query starts like the task instruction: {' '.join(query_words[:3])!r}")
        if len(query_words) >= 3 and jaccard(set(query_words), instruction_set) >= self.settings.echo_jaccard:
            raise Rejection("instruction_echo", "query has the instruction's words")

    def _check_copy(self, norm_query: str, chunk: str, attributes) -> None:
        """Reject corpus queries that copy the chunk's title or one of its sentences."""
        title = attributes.get("title", "")
        lines = chunk.strip().split("\n", 1)
        if not title and len(lines) == 2 and len(lines[0].split()) <= 20:
            title = lines[0]
        query_words = norm_query.split()
        if title:
            norm_title = normalize(title)
            if norm_query == norm_title or jaccard(set(query_words), set(norm_title.split())) >= self.settings.title_jaccard:
                raise Rejection("copies_chunk", f"query copies the title {title[:80]!r}")
        n = min(self.settings.overlap_ngram, len(query_words))
        grams = {tuple(query_words[i : i + n]) for i in range(len(query_words) - n + 1)}
        if not grams:
            return
        # The chunk's normalized words are its sentences' words in order, so an n-gram of a
        # sentence is an n-gram of the whole chunk: fewer than the threshold there, none of
        # the sentences can reach it (one substring search per n-gram instead of a pass per sentence).
        padded = f" {normalize(chunk)} "
        if sum(f" {' '.join(gram)} " in padded for gram in grams) / len(grams) < self.settings.overlap_threshold:
            return
        for sentence in SENTENCE_END.split(chunk):
            words = normalize(sentence).split()
            sentence_grams = {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}
            share = len(grams & sentence_grams) / len(grams)
            if share >= self.settings.overlap_threshold:
                raise Rejection("copies_chunk", f"{share:.0%} of the query's {n}-grams are in the sentence {sentence[:80]!r}")

    def _language_checks(self, pending: "Pending") -> None:
        """What the language check of this example needs: (requested, text) pairs to verify, or a text to identify."""
        raw, query, positives = pending.raw, pending.query, pending.positives
        if raw.target_language:
            source, target = language_code(raw.language), language_code(raw.target_language)
            requests = [(source, query), (target, positives[0])]
            pending.language = f"{source}-{target}" if source and target else source or target
        else:
            requested = language_code(raw.language)
            # Only generated text is checked: a label is too short, and a corpus query's positive is the
            # user's own passage, whatever scripts it quotes ("Nicholas II (Russian: Николай II) ...").
            query_only = raw.category in (pb.CATEGORY_CLASSIFICATION, pb.CATEGORY_CORPUS_GROUNDED)
            checked = [query] if query_only else [query, positives[0]]
            if not requested:
                if self.detector is not None:
                    longest = max(checked, key=len)
                    if len(longest) >= self.settings.language_min_chars:
                        pending.identify = longest
                    else:
                        pending.language = "und"
                return
            requests = [(requested, text) for text in checked]
            pending.language = requested
        if self.detector is not None:
            min_chars = self.settings.language_min_chars
            pending.verify = [(requested, text) for requested, text in requests if requested and len(text) >= min_chars]

    @staticmethod
    def _example(raw, instruction, query, positives, negatives, language, norm_query, norm_positive) -> pb.CuratedExample:
        example = pb.CuratedExample(
            content_hash=content_hash(norm_query, norm_positive),
            job_id=raw.job_id,
            category=raw.category,
            instruction=instruction,
            query=query,
            positives=positives,
            negatives=negatives,
            language=language,
        )
        provenance = example.provenance  # filled in place: cheaper than building a Provenance and copying it in
        provenance.source = raw.source
        provenance.example_id = raw.example_id
        provenance.task_id = raw.task_id
        provenance.template_id = raw.template_id
        provenance.template_version = raw.template_version
        provenance.model = raw.usage.model
        provenance.attributes.update(raw.attributes)
        if raw.repairs:
            provenance.attributes["json_repairs"] = ",".join(raw.repairs)
        provenance.chunk_id = raw.chunk_id
        example.similarity = raw.similarity
        return example
