"""Text measures: normalize's fast paths give the regex definition's words."""

import random
import unicodedata

import pytest

from libs.words import word_count
from services.curator.text import WORD, normalize, strip_label


def reference(text: str) -> str:
    return " ".join(WORD.findall(unicodedata.normalize("NFKC", text).casefold()))


PIECES = [
    "The Nurse", "größe", "Straße", "l’eau", "« bonjour »", "naïve café", "ΣΊΣΥΦΟΣ", "İstanbul", "ﬁle", "①②", "x²",
    "病人应该", "。", "，", "ひらがな", "한국어", "मरीज़ को", "ผู้ป่วย", "مرحبا", "😀", "_under_score_", "a-b", "3.14",
    "\u00a0", "\u2003", "\u200b", "\x85", "\x1c", "\t", "\n", " ", "!?", "{x}", "e\u0301",
]  # fmt: skip


@pytest.mark.parametrize("seed", range(20))
def test_normalize_equals_the_regex_definition(seed):
    rng = random.Random(seed)
    for _ in range(200):
        text = "".join(rng.choice(PIECES) + rng.choice(["", " "]) for _ in range(rng.randint(0, 12)))
        assert normalize(text) == reference(text), repr(text)


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("Hello, World!", "hello world"),
        ("  Größe:  Straße ", "grösse strasse"),
        ("l’eau « claire »", "l eau claire"),
        ("病人。应该", "病人 应该"),
    ],
)
def test_normalize_examples(text, normalized):
    assert normalize(text) == normalized


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("one two  three\nfour", 4),
        ("größe straße", 2),
        ("病人应该", 4 / 1.7),
        ("ok 病人", 1 + 2 / 1.7),
        ("ผู้ป่วย", 7 / 1.7),
        ("  ", 0),
        ("Ünïcödé wörds ÿ", 3),
    ],
)
def test_word_count(text, words):
    assert word_count(text) == pytest.approx(words)


@pytest.mark.parametrize(
    ("text", "stripped"),
    [
        ("Query: when", "when"),
        ("**Document:** text", "text"),
        ("  s1 ： 文本", "文本"),
        ('"quoted"', "quoted"),
        ("no label here", "no label here"),
        ("Answer - no colon", "Answer - no colon"),
    ],
)
def test_strip_label(text, stripped):
    assert strip_label(text) == stripped
