"""Text measures shared by the checks and the dedup: normalization, label stripping, content hash
(word counts: libs.words)."""

import hashlib
import re
import unicodedata
from functools import lru_cache

WORD = re.compile(r"\w+")
LABEL_PREFIX = re.compile(
    r"^\s*(?:[*#>_`\"'\-\s]*)(?:user[ _]query|search[ _]query|query|question|input[ _]text|input|"
    r"positive[ _]document|hard[ _]negative[ _]document|negative[ _]document|document|passage|"
    r"answer|text|s[123]|label)\s*[*_`]*\s*[:：]\s*[*_`]*\s*",
    re.IGNORECASE,
)
WRAPPING_QUOTES = ('""', "''", "\u201c\u201d", "``")


# UTF-8 bytes: ASCII characters that are not \w become spaces, every other byte (all bytes of
# non-ASCII characters are >= 0x80) stays. Splitting the result gives WORD's words whenever
# the text's non-ASCII characters are all word characters.
WORD_BYTES = bytes(b if b >= 0x80 or chr(b).isalnum() or b == 0x5F else 0x20 for b in range(256))
ASCII_BYTES = bytes(range(0x80))


def normalize(text: str) -> str:
    """NFKC, case-folded, punctuation dropped, whitespace collapsed: the form compared for equality.

    The words are WORD's matches (``" ".join(WORD.findall(NFKC(text).casefold()))``); when every
    non-ASCII character is a word character (``str.isalnum``, which is what \w matches beyond
    ASCII), they are found faster by a byte translation and a split.
    """
    if text.isascii():
        return b" ".join(text.encode().lower().translate(WORD_BYTES).split()).decode()
    folded = unicodedata.normalize("NFKC", text).casefold()
    data = folded.encode()
    others = data.translate(None, ASCII_BYTES)  # the non-ASCII characters, in UTF-8
    if not others or others.decode().isalnum():
        return b" ".join(data.translate(WORD_BYTES).split()).decode()
    return " ".join(WORD.findall(folded))


@lru_cache(maxsize=4096)
def normalize_instruction(text: str) -> str:
    """normalize() for the few distinct task instructions a stream repeats."""
    return normalize(text)


def strip_label(text: str) -> str:
    """Drop an echoed field label ("Query: ...", "**Document:** ...") and wrapping quotes."""
    if ":" in text or "\uff1a" in text:  # every label ends with a colon
        text = LABEL_PREFIX.sub("", text, count=1)
    text = text.strip()
    if len(text) >= 2 and (text[0] + text[-1]) in WRAPPING_QUOTES:
        text = text[1:-1].strip()
    return text


def content_hash(norm_query: str, norm_positive: str) -> str:
    """The example's identity (the curated topic's key): hash of the normalized query and positive."""
    digest = hashlib.blake2b(f"{norm_query}\x1f{norm_positive}".encode(), digest_size=16)
    return digest.hexdigest()
