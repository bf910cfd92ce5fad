"""Word counts across scripts (the curator's length checks and the generator's length caps
measure words the same way) and word-set overlap."""

import re

# Scripts written without spaces between words (CJK, kana, Thai): a character is a fraction of a word.
UNSPACED = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u0e00-\u0e7f]")
CHARS_PER_UNSPACED_WORD = 1.7
# Languages (ISO 639-1) written in those scripts, for when only the language is known.
UNSPACED_LANGUAGES = frozenset({"zh", "ja", "th"})
# Characters of a typical word plus its space in spaced scripts (English averages about 6).
CHARS_PER_SPACED_WORD = 6.0


def word_count(text: str) -> float:
    """Words separated by spaces, plus unspaced CJK/Thai characters converted to words."""
    if text.isascii() or len(text.encode("latin-1", errors="ignore")) == len(text):  # nothing above U+00FF: no unspaced script
        return float(len(text.split()))
    unspaced = len(UNSPACED.findall(text))
    if not unspaced:
        return float(len(text.split()))
    spaced = len(UNSPACED.sub(" ", text).split())
    return spaced + unspaced / CHARS_PER_UNSPACED_WORD


def chars_for_words(words: float, language: str) -> int:
    """About how many characters ``words`` words take in ``language`` (an ISO 639-1 code)."""
    per_word = CHARS_PER_UNSPACED_WORD if language.split("-")[0].lower() in UNSPACED_LANGUAGES else CHARS_PER_SPACED_WORD
    return round(words * per_word)


def jaccard(a: set, b: set) -> float:
    """Jaccard similarity of two sets (0 when either is empty)."""
    if not a or not b:
        return 0.0
    shared = len(a & b)
    return shared / (len(a) + len(b) - shared)


# A text that stops where more was to follow: a lead-in punctuation mark, or (with no closing
# punctuation) a word that must be followed by more ("such as", "e.g.", "and", "the", ...; not
# prepositions, which end many real queries: "what is it made of").
DANGLING_MARKS = (":", ",", ";", "-", "\u2013", "\u2014", "...", "\u2026", "(", "\uff1a", "\uff0c", "\u3001", "\uff1b")
DANGLING_PHRASE = re.compile(
    r"\b(?:such as|e\.g\.?|i\.e\.?|for example|for instance|including|namely|and|or|but|the|an|than|whether)$", re.IGNORECASE
)
SENTENCE_END_MARKS = (".", "?", "!", "\u3002", "\uff1f", "\uff01")


def dangling_ending(text: str) -> str:
    """The lead-in a text ends on (e.g. ":", ",", "such as"), or "" when it ends as a complete text."""
    stripped = text.strip().rstrip("\"'\u201d")
    for mark in DANGLING_MARKS:
        if stripped.endswith(mark):
            return mark
    if stripped.endswith(SENTENCE_END_MARKS) and not re.search(r"\b(?:e\.g|i\.e)\.$", stripped, re.IGNORECASE):
        return ""
    match = DANGLING_PHRASE.search(stripped)
    return match.group(0) if match else ""
