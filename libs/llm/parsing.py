"""Parsing LLM answers: one JSON object (repairing the usual glitches first) or a list of strings.

Small and chat-tuned generators wrap the object in code fences or prose, leave trailing
commas, use Python-style single quotes, or return the JSON escaped once more ("\\n" and
\\" in place of newlines and quotes). Each repair that was needed is reported by name.
What cannot be read raises :class:`AnswerError` with a reason code (invalid_json,
missing_key, wrong_type), the curator's rejection reasons.
"""

import ast
import json
import re
from dataclasses import dataclass

FENCE = re.compile(r"```[a-zA-Z0-9_-]*\s*\n?(.*?)```", re.DOTALL)
TRAILING_COMMA = re.compile(r",(\s*[}\]])")
SMART_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'"})
QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
LIST_ITEM = re.compile(r"^\s*(?:[-*•]|\d+[.)]|\(\d+\))\s+(.*\S)\s*$")


class AnswerError(Exception):
    """An answer that is not the expected JSON; ``reason`` is invalid_json, missing_key or wrong_type."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Parsed:
    value: dict
    repairs: tuple[str, ...]


# One decoder for every call (json.loads with an argument builds a new decoder each time).
DECODER = json.JSONDecoder(strict=False)


def _loads(text: str):
    """json.loads that tolerates raw control characters inside strings; None if invalid."""
    try:
        return DECODER.decode(text)
    except ValueError:
        return None
    except RecursionError as exc:
        raise AnswerError("invalid_json", "JSON nested too deeply") from exc


def _literal(text: str):
    """A Python literal (single quotes, True/None) as JSON would have it; None if not one."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError):
        return None
    except RecursionError as exc:
        raise AnswerError("invalid_json", "literal nested too deeply") from exc
    return value if isinstance(value, (dict, list)) else None


def _outermost(text: str, opener: str, closer: str) -> str | None:
    start, end = text.find(opener), text.rfind(closer)
    return text[start : end + 1] if 0 <= start < end else None


def parse_object(raw: str) -> Parsed:
    """The JSON object in ``raw`` and the repairs it needed, or raise AnswerError."""
    text = raw.strip().lstrip("\ufeff")
    if not text:
        raise AnswerError("invalid_json", "empty answer")
    repairs: list[str] = []
    value = _loads(text)
    if value is None:
        value = _repair(text, "{", "}", repairs)
        if value is None:
            raise AnswerError("invalid_json", f"not JSON after repairs {repairs or '[]'}: {text[:120]!r}")
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        value = value[0]
        repairs.append("unwrapped_list")
    if not isinstance(value, dict):
        raise AnswerError("invalid_json", f"expected a JSON object, got {type(value).__name__}")
    return Parsed(value, tuple(repairs))


def _repair(text: str, opener: str, closer: str, repairs: list[str]):
    """The JSON value of ``text`` after the repairs it needs (named in ``repairs``), or None."""
    fenced = FENCE.search(text)
    if fenced:
        text = fenced.group(1).strip()
        repairs.append("code_fence")
        if (value := _loads(text)) is not None:
            return value
    candidate = _outermost(text, opener, closer)
    if candidate is not None and candidate != text:
        text = candidate
        repairs.append("surrounding_prose")
        if (value := _loads(text)) is not None:
            return value
    for name, fix in (("smart_quotes", _smart_quotes), ("trailing_comma", _trailing_commas)):
        fixed = fix(text)
        if fixed != text:
            text = fixed
            repairs.append(name)
            if (value := _loads(text)) is not None:
                return value
    if (value := _literal(text)) is not None:
        repairs.append("single_quotes")
        return value
    unescaped = _unescape(text)
    if unescaped != text:
        repairs.append("escaped_json")
        for candidate in (unescaped, _trailing_commas(unescaped)):
            if (value := _loads(candidate)) is not None:
                return value
    return None


def _smart_quotes(text: str) -> str:
    if not any(quote in text for quote in "\u201c\u201d\u2018\u2019"):  # translate() is slow on non-ASCII text
        return text
    return text.translate(SMART_QUOTES)


def _unescape(text: str) -> str:
    """Undo one level of escaping: literal \\n between tokens, \\" as the quote character."""
    if "\\n" not in text and '\\"' not in text:
        return text
    body = text[1:-1] if len(text) > 1 and text[0] == text[-1] == '"' else text
    body = body.replace("\\n", "\n").replace("\\t", "\t")
    if re.search(r'[{,]\s*\\"', body):
        body = body.replace('\\"', '"')
    return body


def _trailing_commas(text: str) -> str:
    return TRAILING_COMMA.sub(r"\1", text)


def field(obj: dict, name: str):
    """A key's value, matching the key case-insensitively (LLMs vary "S1"/"s1", "User_Query")."""
    if name in obj:
        return obj[name]
    lowered = name.lower()
    for key, value in obj.items():
        if isinstance(key, str) and key.lower() == lowered:
            return value
    raise AnswerError("missing_key", f"no '{name}' in keys {sorted(map(str, obj))[:10]}")


def text_field(obj: dict, name: str) -> str:
    """The string under ``name``."""
    value = field(obj, name)
    if not isinstance(value, str):
        raise AnswerError("wrong_type", f"'{name}' is {type(value).__name__}, expected a string")
    return value


def texts_field(obj: dict, name: str, required: bool) -> list[str]:
    """The strings under ``name``: a string or a list of strings (FlagEmbedding's pos/neg)."""
    try:
        value = field(obj, name)
    except AnswerError:
        if required:
            raise
        return []
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise AnswerError("wrong_type", f"'{name}' must be a string or a list of strings")
    return values


def parse_string_list(text: str) -> list[str]:
    """A list of strings from a JSON/Python list, an object holding one, or bulleted/numbered lines."""
    value = _loads(text.strip())
    if value is None:
        value = _repair(text.strip(), "[", "]", [])
    if value is None:
        value = _repair(text.strip(), "{", "}", [])
    if isinstance(value, dict):
        value = next((v for v in value.values() if isinstance(v, list)), None)
    if isinstance(value, list):
        items = [item for item in (_item_text(v) for v in value) if item]
        if items:
            return items
    if "[" in text:  # a truncated JSON list: keep its complete strings
        quoted = [_unquote(m.group(0)) for m in QUOTED.finditer(text[text.index("[") :])]
        quoted = [q for q in quoted if q]
        if quoted:
            return quoted
    lines = [LIST_ITEM.match(line) for line in text.splitlines()]
    return [m.group(1).strip().strip('"').strip() for m in lines if m and m.group(1).strip().strip('"').strip()]


def _unquote(literal: str) -> str:
    try:
        return json.loads(literal).strip()
    except json.JSONDecodeError:
        return literal.strip('"').strip()


def _item_text(value) -> str:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, dict):
        text = next((v for v in value.values() if isinstance(v, str) and v.strip()), "")
        return text.strip()
    return ""
