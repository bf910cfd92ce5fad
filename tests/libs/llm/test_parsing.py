"""Parsing LLM answers: the usual glitches are repaired, and what cannot be parsed says why."""

import pytest

from libs.llm.parsing import AnswerError, parse_object, parse_string_list, text_field, texts_field

OBJECT = {"user_query": "dose for children", "positive_document": "Line one.\nLine two."}


@pytest.mark.parametrize(
    ("answer", "repairs"),
    [
        ('{"user_query": "dose for children", "positive_document": "Line one.\\nLine two."}', ()),
        ('```json\n{"user_query": "dose for children", "positive_document": "Line one.\\nLine two."}\n```', ("code_fence",)),
        (
            'Sure! Here you go:\n{"user_query": "dose for children", "positive_document": "Line one.\\nLine two."}\nHope '
            "it helps.",
            ("surrounding_prose",),
        ),
        ('{"user_query": "dose for children", "positive_document": "Line one.\\nLine two.",}', ("trailing_comma",)),
        ("{'user_query': 'dose for children', 'positive_document': 'Line one.\\nLine two.'}", ("single_quotes",)),
        (
            '{\\n  \\"user_query\\": \\"dose for children\\",\\n  \\"positive_document\\": \\"Line one.\\nLine two.\\"\\n}',
            ("escaped_json",),
        ),
        ('{\\n  "user_query": "dose for children",\\n  "positive_document": "Line one.\\nLine two."\\n}', ("escaped_json",)),
        ('{"user_query": "dose for children", "positive_document": "Line one.\nLine two."}', ()),
        (
            "{\u201cuser_query\u201d: \u201cdose for children\u201d, \u201cpositive_document\u201d: \u201cLine "
            "one.\\nLine two.\u201d}",
            ("smart_quotes",),
        ),
        ('[{"user_query": "dose for children", "positive_document": "Line one.\\nLine two."}]', ("unwrapped_list",)),
    ],
    ids=[
        "clean",
        "code_fence",
        "prose_around",
        "trailing_comma",
        "single_quotes",
        "escaped_quotes_and_newlines",
        "escaped_newlines",
        "raw_newline_in_string",
        "smart_quotes",
        "list_of_one",
    ],
)
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
    with pytest.raises(AnswerError, match=message) as caught:
        parse_object(answer)
    assert caught.value.reason == "invalid_json"


def test_json_list_is_parsed():
    assert parse_string_list('["Find laws", "Match cases"]') == ["Find laws", "Match cases"]


def test_list_inside_prose_and_code_fence_is_found():
    text = 'Sure! Here you go:\n```json\n["Find laws", "Match cases"]\n```\nHope it helps.'
    assert parse_string_list(text) == ["Find laws", "Match cases"]


def test_python_list_with_single_quotes_is_parsed():
    assert parse_string_list("['Find laws', \"Match 'cases'\"]") == ["Find laws", "Match 'cases'"]


def test_list_wrapped_in_an_object_is_parsed():
    assert parse_string_list('{"tasks": ["Find laws", "Match cases"]}') == ["Find laws", "Match cases"]


def test_objects_in_the_list_give_their_text():
    assert parse_string_list('[{"task": "Find laws"}, {"task": "Match cases"}]') == ["Find laws", "Match cases"]


def test_truncated_list_keeps_its_complete_strings():
    assert parse_string_list('["Find laws", "Match cases", "Retrieve stat') == ["Find laws", "Match cases"]


def test_numbered_and_bulleted_lines_are_parsed():
    assert parse_string_list("1. Find laws\n2) Match cases\n- Rank rulings") == ["Find laws", "Match cases", "Rank rulings"]


def test_text_without_a_list_gives_nothing():
    assert parse_string_list("I cannot help with that.") == []


def test_object_in_prose_with_braces_inside_strings_is_parsed():
    assert parse_object('Answer: {"query": "a {b}", "n": 1} done').value == {"query": "a {b}", "n": 1}


def test_keys_match_case_insensitively():
    assert text_field({"User_Query": "q"}, "user_query") == "q"


@pytest.mark.parametrize(
    ("obj", "reason"),
    [({"other": "q"}, "missing_key"), ({"user_query": ["two", "queries"]}, "wrong_type"), ({"user_query": None}, "wrong_type")],
)
def test_a_missing_or_mistyped_field_says_which(obj, reason):
    with pytest.raises(AnswerError, match="user_query") as caught:
        text_field(obj, "user_query")
    assert caught.value.reason == reason


def test_a_list_field_takes_a_string_or_strings_and_may_be_optional():
    assert texts_field({"pos": "a"}, "pos", required=True) == ["a"]
    assert texts_field({"pos": ["a", "b"]}, "pos", required=True) == ["a", "b"]
    assert texts_field({}, "neg", required=False) == []
    with pytest.raises(AnswerError, match="missing_key"):
        texts_field({}, "pos", required=True)
