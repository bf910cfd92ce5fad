"""Versioned prompt templates kept in YAML files, not in code.

A template file holds::

    id: retrieval            # stable name, recorded with every output
    version: "3"             # bump when the wording changes
    json_schema: {...}       # optional: the answer's JSON schema
    attributes: {name: [choices, ...]}   # optional: values sampled per call
    max_tokens: 512          # optional: answer length budget (tokens)
    max_tokens_per_word: 5   # optional: extra budget per word the prompt's num_words asks for
    length_caps: {positive_document: num_words}   # optional: schema texts capped by a word-count attribute
    example:                 # optional: the template writes training examples of this category
      category: CATEGORY_RETRIEVAL
      query: user_query      # answer keys holding the query, the positive and the negative
      positive: positive_document   # none: the corpus chunk is the positive
      negative: hard_negative_document
      query_words: query_length     # attributes requesting the query's / the documents' length
      document_words: num_words
      similarity: high_score        # attribute with the graded similarity of query and positive (STS)
    examples: [...]          # optional: few-shot examples, rendered as {{ examples }}
    system: |                # optional
      ...
    user: |
      ... {{ task }} ... {{ language }} ...   (Jinja2; missing variables are errors)
"""

import copy
import re
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path

import jinja2
import yaml

from embedforge.v1 import messages_pb2 as pb
from libs.words import chars_for_words

# A capped text may take this many times the words its attribute asks for (the curator's
# default length tolerance accepts up to 1.5x).
LENGTH_CAP_FACTOR = 1.5

_env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False)


class TemplateError(ValueError):
    """A template file that is malformed, or variables that do not fit it."""


@dataclass(frozen=True)
class ExampleFields:
    """Where a template's answer keeps a training example: keys of the answer's JSON object,
    and the sampled attributes that request lengths and similarity."""

    category: int
    query: str
    positive: str = ""  # empty: the corpus chunk is the positive
    negative: str = ""
    query_words: str = ""
    document_words: str = ""
    similarity: str = ""

    @classmethod
    def from_yaml(cls, data: dict, where: str) -> "ExampleFields":
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown or "category" not in data or "query" not in data or data["category"] not in pb.Category.keys():
            raise TemplateError(
                f"{where}: example needs a category (e.g. CATEGORY_RETRIEVAL) and a query; unknown keys {sorted(unknown)}"
            )
        return cls(**{**data, "category": pb.Category.Value(data["category"])})

    def keys(self) -> list[str]:
        return [key for key in (self.query, self.positive, self.negative) if key]

    def attributes(self) -> list[str]:
        return [name for name in (self.query_words, self.document_words, self.similarity) if name]


@dataclass(frozen=True)
class PromptTemplate:
    id: str
    version: str
    user: str
    system: str = ""
    json_schema: dict | None = None
    attributes: dict[str, list] = field(default_factory=dict)
    max_tokens: int = 512
    max_tokens_per_word: float = 0.0
    length_caps: dict[str, str] = field(default_factory=dict)
    examples: tuple[str, ...] = ()
    example: ExampleFields | None = None
    path: str = ""

    @classmethod
    def load(cls, path: str | Path) -> "PromptTemplate":
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not data.get("id") or not data.get("version") or not data.get("user"):
            raise TemplateError(f"{path}: a template needs id, version and user")
        return cls(
            id=str(data["id"]),
            version=str(data["version"]),
            user=data["user"],
            system=data.get("system", "") or "",
            json_schema=data.get("json_schema"),
            attributes={k: list(v) for k, v in (data.get("attributes") or {}).items()},
            max_tokens=int(data.get("max_tokens", 512)),
            max_tokens_per_word=float(data.get("max_tokens_per_word", 0)),
            length_caps=dict(data.get("length_caps") or {}),
            examples=tuple(str(e) for e in data.get("examples") or ()),
            example=ExampleFields.from_yaml(data["example"], str(path)) if data.get("example") else None,
            path=str(path),
        )

    def __post_init__(self):
        properties = (self.json_schema or {}).get("properties", {})
        for name, attribute in self.length_caps.items():
            if name not in properties or attribute not in self.attributes:
                raise TemplateError(
                    f"{self.path or self.id}: length cap {name}: {attribute} needs a schema property {name!r} and an "
                    f"attribute {attribute!r}"
                )
        if self.example is not None:
            required = set((self.json_schema or {}).get("required", ()))
            missing = [key for key in self.example.keys() if key not in required]
            missing += [name for name in self.example.attributes() if name not in self.attributes]
            if missing:
                raise TemplateError(
                    f"{self.path or self.id}: example names {missing}: not required in json_schema, or not attributes"
                )

    def schema_for(self, attributes: dict[str, str]) -> dict | None:
        """The JSON schema of one call. Each text in ``length_caps`` gets a maxLength of
        LENGTH_CAP_FACTOR times the words its attribute asks for, in characters of the call's
        language, so constrained decoding closes the JSON within the answer budget instead
        of running out of tokens mid-document."""
        if not self.length_caps:
            return self.json_schema
        schema = copy.deepcopy(self.json_schema)
        for name, attribute in self.length_caps.items():
            words = planned_words(attributes.get(attribute, ""))
            if words:
                schema["properties"][name]["maxLength"] = chars_for_words(
                    words * LENGTH_CAP_FACTOR, attributes.get("language", "")
                )
        return schema

    def answer_budget(self, attributes: dict[str, str]) -> int:
        """Answer tokens for these attributes: ``max_tokens`` plus ``max_tokens_per_word`` per
        word that ``num_words`` asks for ("50", "at least 200"), so a prompt asking for long
        documents gets room to finish its JSON instead of being cut off."""
        return self.max_tokens + round(self.max_tokens_per_word * planned_words(attributes.get("num_words", "")))

    def render(self, **variables) -> list[dict]:
        """Chat messages for these variables and the template's ``examples`` (raises TemplateError
        if one is missing)."""
        variables = {"examples": self.examples, **variables}
        try:
            messages = (
                [{"role": "system", "content": _env.from_string(self.system).render(**variables).strip()}] if self.system else []
            )
            messages.append({"role": "user", "content": _env.from_string(self.user).render(**variables).strip()})
        except jinja2.UndefinedError as exc:
            raise TemplateError(f"template {self.id} v{self.version}: {exc}") from exc
        return messages


@lru_cache(maxsize=1024)
def requested_words(value: str) -> tuple[int, int] | None:
    """(min, max) words of a length attribute ("less than 5 words" -> (1, 4), "5 to 15 words",
    "200"); max 0: no upper bound ("at least 10 words"); None: no number."""
    text = value.lower()
    numbers = [int(n) for n in re.findall(r"\d+", text)]
    if not numbers:
        return None
    if re.search(r"less than|fewer than|under", text):
        return 1, numbers[0] - 1
    if "at most" in text:
        return 1, numbers[0]
    if re.search(r"at least|more than|over", text):
        return numbers[0], 0
    if len(numbers) >= 2:
        return numbers[0], numbers[1]
    return numbers[0], numbers[0]


def planned_words(value: str) -> int:
    """The words an answer is planned for: the upper bound of the request, or its lower bound
    when it has none ("at least 200" -> 200); 0 when it requests none."""
    bounds = requested_words(value)
    return (bounds[1] or bounds[0]) if bounds else 0


def load_templates(folder: str | Path) -> dict[str, PromptTemplate]:
    """Every ``*.yaml`` template in ``folder``, by id."""
    templates = {}
    for path in sorted(Path(folder).glob("*.yaml")):
        template = PromptTemplate.load(path)
        if template.id in templates:
            raise TemplateError(f"duplicate template id {template.id!r} in {folder}")
        templates[template.id] = template
    return templates
