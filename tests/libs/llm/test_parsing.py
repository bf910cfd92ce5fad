"""Robust parsing of LLM answers (libs.llm.parsing)."""

from libs.llm.parsing import parse_json_object, parse_string_list


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
    assert parse_json_object('Answer: {"query": "a {b}", "n": 1} done') == {"query": "a {b}", "n": 1}


def test_fenced_object_is_parsed():
    assert parse_json_object('```json\n{"query": "q"}\n```') == {"query": "q"}


def test_no_object_gives_none():
    assert parse_json_object("[1, 2]") is None
