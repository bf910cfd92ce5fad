"""BM25 as Qdrant sparse vectors.

Documents carry the BM25 term-frequency part, ``tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl))``,
and Qdrant applies the IDF part itself (sparse vector config with ``Modifier.IDF``), so the
dot product with a query vector of ones over its terms is the BM25 score (Robertson & Zaragoza,
"The Probabilistic Relevance Framework: BM25 and Beyond", 2009). ``avgdl`` is a setting
(Qdrant's own BM25 does the same) because an exact corpus mean would change every vector.

Terms: NFKC, lower case, runs of letters/digits; CJK runs (no spaces between words) give
their single characters and character bigrams. Term ids are a stable 32-bit hash (CRC32),
so any process computes the same index without a shared vocabulary.
"""

import re
import unicodedata
import zlib
from collections import Counter

from qdrant_client import models

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CJK}]+|[^\W_{_CJK}]+", re.UNICODE)
_IS_CJK = re.compile(rf"[{_CJK}]")


def terms(text: str) -> list[str]:
    """Words of a text for BM25; CJK runs become characters plus bigrams."""
    out: list[str] = []
    for match in _TOKEN.finditer(unicodedata.normalize("NFKC", text).lower()):
        token = match.group()
        if _IS_CJK.match(token):
            out.extend(token)
            out.extend(token[i : i + 2] for i in range(len(token) - 1))
        else:
            out.append(token)
    return out


def term_id(term: str) -> int:
    return zlib.crc32(term.encode("utf-8"))


class Bm25:
    def __init__(self, k1: float = 1.2, b: float = 0.75, avg_length: float = 150.0):
        self.k1 = k1
        self.b = b
        self.avg_length = avg_length

    def document_vector(self, text: str) -> models.SparseVector:
        words = terms(text)
        counts = Counter(term_id(w) for w in words)
        norm = self.k1 * (1 - self.b + self.b * len(words) / self.avg_length)
        indices = sorted(counts)
        return models.SparseVector(indices=indices, values=[counts[i] * (self.k1 + 1) / (counts[i] + norm) for i in indices])

    def query_vector(self, text: str) -> models.SparseVector:
        indices = sorted({term_id(w) for w in terms(text)})
        return models.SparseVector(indices=indices, values=[1.0] * len(indices))
