"""Parse an LLM answer as one JSON object, repairing the usual glitches first.

Small and chat-tuned generators wrap the object in code fences or prose, leave trailing
commas, use Python-style single quotes, or return the JSON escaped once more ("\\n" and
\\" in place of newlines and quotes). Each repair that was needed is reported by name.
"""

import ast
import json
import re
from dataclasses import dataclass

FENCE = re.compile(r"```[a-zA-Z0-9_-]*\s*\n?(.*?)```", re.DOTALL)
TRAILING_COMMA = re.compile(r",(\s*[}\]])")
SMART_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'"})


class ParseError(Exception):
    def __init__(self, detail: str):
        super().__init__(detail)
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
        raise ParseError("JSON nested too deeply") from exc


def _literal(text: str):
    """A Python literal (single quotes, True/None) as JSON would have it; None if not one."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError):
        return None
    except RecursionError as exc:
        raise ParseError("literal nested too deeply") from exc
    return value if isinstance(value, (dict, list)) else None


def _outermost_object(text: str) -> str | None:
    start, end = text.find("{"), text.rfind("}")
    return text[start : end + 1] if 0 <= start < end else None


def parse_object(raw: str) -> Parsed:
    """The JSON object in ``raw`` and the repairs it needed, or raise ParseError."""
    text = raw.strip().lstrip("\ufeff")
    if not text:
        raise ParseError("empty answer")
    repairs: list[str] = []
    value = _loads(text)
    if value is None:
        value = _repair(text, repairs)
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        value = value[0]
        repairs.append("unwrapped_list")
    if not isinstance(value, dict):
        raise ParseError(f"expected a JSON object, got {type(value).__name__}")
    return Parsed(value, tuple(repairs))


def _repair(text: str, repairs: list[str]):
    fenced = FENCE.search(text)
    if fenced:
        text = fenced.group(1).strip()
        repairs.append("code_fence")
        if (value := _loads(text)) is not None:
            return value
    candidate = _outermost_object(text)
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
    raise ParseError(f"not JSON after repairs {repairs or '[]'}: {text[:120]!r}")


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
