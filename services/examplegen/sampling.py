"""Per-call attribute sampling: template attributes and languages (XLM-R list, weighted
toward high-resource languages, restrictable per job)."""

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from embedforge.v1 import messages_pb2 as pb
from libs.llm.templates import PromptTemplate

LANGUAGES_FILE = Path(__file__).with_name("languages.yaml")


@dataclass(frozen=True)
class Language:
    code: str
    name: str
    size_gib: float


def load_languages(path: Path = LANGUAGES_FILE) -> dict[str, Language]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return {str(code): Language(str(code), str(name), float(size)) for code, (name, size) in data.items()}


XLMR_LANGUAGES = load_languages()


class LanguageSampler:
    """Draws language codes with weight ``size ** alpha`` over the XLM-R list, or with the
    job's own weights when it restricts languages (a zero weight there means "the
    language's default weight")."""

    def __init__(self, restrict: Sequence[pb.LanguageWeight] = (), alpha: float = 0.5):
        default = {code: lang.size_gib**alpha for code, lang in XLMR_LANGUAGES.items()}
        if restrict:
            unknown_default = min(default.values())
            weights = {lw.language: lw.weight if lw.weight > 0 else default.get(lw.language, unknown_default) for lw in restrict}
        else:
            weights = default
        self.codes = list(weights)
        self.weights = [weights[c] for c in self.codes]
        self._fallback = default

    def sample(self, rng: random.Random) -> str:
        return rng.choices(self.codes, weights=self.weights, k=1)[0]

    def sample_pair(self, rng: random.Random) -> tuple[str, str]:
        """Two different languages (bitext): from the job's list when it has two, else the
        second one comes from the whole XLM-R list."""
        source = self.sample(rng)
        others = [(c, w) for c, w in zip(self.codes, self.weights) if c != source]
        if not others:
            others = [(c, w) for c, w in self._fallback.items() if c != source]
        codes, weights = zip(*others)
        return source, rng.choices(codes, weights=weights, k=1)[0]


def language_name(code: str) -> str:
    language = XLMR_LANGUAGES.get(code)
    return language.name if language else code


def rng_for(*parts) -> random.Random:
    """A deterministic RNG per (seed, id, index): re-generating an example samples the same attributes."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def sample_attributes(
    template: PromptTemplate, rng: random.Random, languages: LanguageSampler, bitext: bool = False, max_tokens: int = 0
) -> dict[str, str]:
    """One value per template attribute, plus the language(s).

    With ``max_tokens``, ``num_words`` is drawn only from the values whose answer budget fits
    in it (the smallest value if none does): never ask for more text than may be written.
    """
    attributes = {name: str(rng.choice(fitting_choices(template, name, max_tokens))) for name in sorted(template.attributes)}
    if bitext:
        source, target = languages.sample_pair(rng)
        attributes["source_language"] = source
        attributes["target_language"] = target
        attributes["language"] = source
    else:
        attributes["language"] = languages.sample(rng)
    return attributes


def fitting_choices(template: PromptTemplate, name: str, max_tokens: int = 0) -> list:
    """The values of attribute ``name`` that may be asked for (see :func:`sample_attributes`)."""
    choices = template.attributes[name]
    if name == "num_words" and max_tokens:
        fitting = [c for c in choices if template.answer_budget({name: str(c)}) <= max_tokens]
        choices = fitting or [min(choices, key=lambda c: template.answer_budget({name: str(c)}))]
    return list(choices)


def spread_attributes(
    template: PromptTemplate, seed: tuple, count: int, languages: LanguageSampler, max_tokens: int = 0
) -> list[dict[str, str]]:
    """Attributes of ``count`` examples written from one source (several queries of a chunk): each
    attribute's values are dealt in a seeded order, so the first examples all differ in every
    attribute (up to as many examples as the attribute has values; later ones draw freely). The
    language is drawn per example, from ``rng_for(*seed, index)`` as :func:`sample_attributes` does."""
    order = rng_for(*seed, "spread")
    dealt = {}
    for name in sorted(template.attributes):
        values = fitting_choices(template, name, max_tokens)
        dealt[name] = order.sample(values, len(values))
    spread = []
    for index in range(count):
        rng = rng_for(*seed, index)
        attributes = {name: str(values[index] if index < len(values) else rng.choice(values)) for name, values in dealt.items()}
        attributes["language"] = languages.sample(rng)
        spread.append(attributes)
    return spread


def template_variables(attributes: dict[str, str]) -> dict[str, str]:
    """Attributes plus the language names the prompts show."""
    variables = dict(attributes)
    for key in ("language", "source_language", "target_language"):
        if key in attributes:
            variables[f"{key}_name"] = language_name(attributes[key])
    return variables
