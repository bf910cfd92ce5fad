"""Parsing LLM answers: the usual glitches are repaired, and what cannot be parsed says why."""

import pytest

from services.curator.parsing import ParseError, parse_object

OBJECT = {"user_query": "dose for children", "positive_document": "Line one.\nLine two."}


@pytest.mark.parametrize(
    ("answer", "repairs"),
    [
        ('{"user_query": "dose for children", "positive_document": "Line one.\\nLine two."}', ()),
        ('```json\n{"user_query": "dose for children", "positive_document": "Line one.\\nLine two."}\n```', ("code_fence",)),
        ('Sure! Here you go:\n{"user_query": "dose for children", "positive_document": "Line one.\\nLine two."}\nHope it helps.', ("surrounding_prose",)),
        ('{"user_query": "dose for children", "positive_document": "Line one.\\nLine two.",}', ("trailing_comma",)),
        ("{'user_query': 'dose for children', 'positive_document': 'Line one.\\nLine two.'}", ("single_quotes",)),
        ('{\\n  \\"user_query\\": \\"dose for children\\",\\n  \\"positive_document\\": \\"Line one.\\nLine two.\\"\\n}', ("escaped_json",)),
        ('{\\n  "user_query": "dose for children",\\n  "positive_document": "Line one.\\nLine two."\\n}', ("escaped_json",)),
        ('{"user_query": "dose for children", "positive_document": "Line one.\nLine two."}', ()),
        ("{\u201cuser_query\u201d: \u201cdose for children\u201d, \u201cpositive_document\u201d: \u201cLine one.\\nLine two.\u201d}", ("smart_quotes",)),
        ('[{"user_query": "dose for children", "positive_document": "Line one.\\nLine two."}]', ("unwrapped_list",)),
    ],
    ids=["clean", "code_fence", "prose_around", "trailing_comma", "single_quotes", "escaped_quotes_and_newlines", "escaped_newlines",
         "raw_newline_in_string", "smart_quotes", "list_of_one"],
)  # fmt: skip
def test_glitched_answer_is_repaired_to_the_object(answer, repairs):
    parsed = parse_object(answer)
    assert parsed.value == OBJECT
    assert parsed.repairs == repairs


def test_fenced_answer_with_trailing_comma_reports_both_repairs():
    parsed = parse_object('```json\n{"a": "x", "b": ["y",],}\n```')
    assert parsed.value == {"a": "x", "b": ["y"]}
    assert parsed.repairs == ("code_fence", "trailing_comma")


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ("", "empty answer"),
        ("I could not write an example for this task.", "not JSON"),
        ('["a", "b"]', "expected a JSON object, got list"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"user_query": "unterminated', "not JSON"),
    ],
    ids=["empty", "prose_only", "list_of_strings", "deeply_nested", "truncated"],
)
def test_unparseable_answer_raises_with_a_reason(answer, message):
    with pytest.raises(ParseError, match=message):
        parse_object(answer)
