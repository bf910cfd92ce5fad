"""Versioned prompt templates kept in YAML files, not in code.

A template file holds::

    id: retrieval            # stable name, recorded with every output
    version: "3"             # bump when the wording changes
    json_schema: {...}       # optional: the answer's JSON schema
    attributes: {name: [choices, ...]}   # optional: values sampled per call
    max_tokens: 512          # optional: answer length budget (tokens)
    max_tokens_per_word: 5   # optional: extra budget per word the prompt's num_words asks for
    length_caps: {positive_document: num_words}   # optional: schema texts capped by a word-count attribute
    examples: [...]          # optional: few-shot examples, rendered as {{ examples }}
    system: |                # optional
      ...
    user: |
      ... {{ task }} ... {{ language }} ...   (Jinja2; missing variables are errors)
"""

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import yaml

from libs.words import chars_for_words

# A capped text may take this many times the words its attribute asks for (the curator's
# default length tolerance accepts up to 1.5x).
LENGTH_CAP_FACTOR = 1.5

_env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False)


class TemplateError(ValueError):
    """A template file that is malformed, or variables that do not fit it."""


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
            path=str(path),
        )

    def __post_init__(self):
        properties = (self.json_schema or {}).get("properties", {})
        for name, attribute in self.length_caps.items():
            if name not in properties or attribute not in self.attributes:
                raise TemplateError(f"{self.path or self.id}: length cap {name}: {attribute} needs a schema property {name!r} and an attribute {attribute!r}")

    def schema_for(self, attributes: dict[str, str]) -> dict | None:
        """The JSON schema of one call. Each text in ``length_caps`` gets a maxLength of
        LENGTH_CAP_FACTOR times the words its attribute asks for, in characters of the call's
        language, so constrained decoding closes the JSON within the answer budget instead
        of running out of tokens mid-document."""
        if not self.length_caps:
            return self.json_schema
        schema = copy.deepcopy(self.json_schema)
        for name, attribute in self.length_caps.items():
            words = requested_words(attributes.get(attribute, ""))
            if words:
                schema["properties"][name]["maxLength"] = chars_for_words(words * LENGTH_CAP_FACTOR, attributes.get("language", ""))
        return schema

    def answer_budget(self, attributes: dict[str, str]) -> int:
        """Answer tokens for these attributes: ``max_tokens`` plus ``max_tokens_per_word`` per
        word that ``num_words`` asks for ("50", "at least 200"), so a prompt asking for long
        documents gets room to finish its JSON instead of being cut off."""
        return self.max_tokens + round(self.max_tokens_per_word * requested_words(attributes.get("num_words", "")))

    def render(self, **variables) -> list[dict]:
        """Chat messages for these variables and the template's ``examples`` (raises TemplateError
        if one is missing)."""
        variables = {"examples": self.examples, **variables}
        try:
            messages = [{"role": "system", "content": _env.from_string(self.system).render(**variables).strip()}] if self.system else []
            messages.append({"role": "user", "content": _env.from_string(self.user).render(**variables).strip()})
        except jinja2.UndefinedError as exc:
            raise TemplateError(f"template {self.id} v{self.version}: {exc}") from exc
        return messages


def requested_words(value: str) -> int:
    """The word count in a num_words attribute ("at least 200" -> 200; none -> 0)."""
    match = re.search(r"\d+", value)
    return int(match.group()) if match else 0


def load_templates(folder: str | Path) -> dict[str, PromptTemplate]:
    """Every ``*.yaml`` template in ``folder``, by id."""
    templates = {}
    for path in sorted(Path(folder).glob("*.yaml")):
        template = PromptTemplate.load(path)
        if template.id in templates:
            raise TemplateError(f"duplicate template id {template.id!r} in {folder}")
        templates[template.id] = template
    return templates
