"""Robust parsing of LLM answers: JSON objects and lists wrapped in prose or code fences."""

import ast
import json
import re

_FENCE = re.compile(r"```(?:json|python|JSON)?\s*(.*?)```", re.DOTALL)
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
_LIST_ITEM = re.compile(r"^\s*(?:[-*•]|\d+[.)]|\(\d+\))\s+(.*\S)\s*$")


def _candidates(text: str) -> list[str]:
    found = [m.group(1) for m in _FENCE.finditer(text)]
    return found + [text]


def _balanced(text: str, opener: str, closer: str) -> list[str]:
    """Substrings from each ``opener`` to its matching ``closer`` (quotes respected)."""
    spans = []
    start = text.find(opener)
    while start != -1:
        depth, in_string, escape = 0, None, False
        for index in range(start, len(text)):
            char = text[index]
            if in_string:
                if escape:
                    escape = False
                elif char == "\\":
                    escape = True
                elif char == in_string:
                    in_string = None
            elif char in "\"'" and opener == "[":
                in_string = char
            elif char == '"':
                in_string = char
            elif char == opener:
                depth += 1
            elif char == closer:
                depth -= 1
                if depth == 0:
                    spans.append(text[start : index + 1])
                    break
        start = text.find(opener, start + 1)
    return spans


def _load(snippet: str):
    try:
        return json.loads(snippet)
    except json.JSONDecodeError:
        pass
    try:
        return ast.literal_eval(snippet)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None


def parse_json_object(text: str) -> dict | None:
    """The first JSON (or Python-literal) object in ``text``, or None."""
    for candidate in _candidates(text):
        stripped = candidate.strip()
        value = _load(stripped)
        if isinstance(value, dict):
            return value
        for snippet in _balanced(stripped, "{", "}"):
            value = _load(snippet)
            if isinstance(value, dict):
                return value
    return None


def parse_string_list(text: str) -> list[str]:
    """A list of strings from a JSON/Python list, an object holding one, or bulleted/numbered lines."""
    for candidate in _candidates(text):
        stripped = candidate.strip()
        for snippet in [stripped, *_balanced(stripped, "[", "]"), *_balanced(stripped, "{", "}")]:
            value = _load(snippet)
            if isinstance(value, dict):
                value = next((v for v in value.values() if isinstance(v, list)), None)
            if isinstance(value, list):
                items = [_item_text(v) for v in value]
                items = [i for i in items if i]
                if items:
                    return items
    if "[" in text:  # a truncated JSON list: keep its complete strings
        quoted = [_unquote(m.group(0)) for m in _QUOTED.finditer(text[text.index("[") :])]
        quoted = [q for q in quoted if q]
        if quoted:
            return quoted
    lines = [_LIST_ITEM.match(line) for line in text.splitlines()]
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
