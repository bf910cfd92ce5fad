"""Exact and near-duplicate detection for one job's examples.

Exact: the content hash (normalized query + positive). Near: a MinHash signature of
``num_perm`` values whose first half is a MinHash of the query's word bigrams and whose
second half is a MinHash of the first positive's word bigrams (each text's leading
``max_bytes`` bytes). The share of equal values of two signatures therefore estimates
the mean of the query Jaccard and the positive Jaccard: query and positive weigh the same,
however long the positive is. One LSH index over the whole signature finds candidates (its
bands fall within one half or the other) and a candidate counts as a near-duplicate when
that estimated mean reaches the threshold. Hashing "query + positive" as one text instead
let a long shared positive dominate: different questions written for the same corpus chunk
(whose positive is the chunk itself) all looked like duplicates of the first one.
Classification examples are the exception: their positive is a label that many examples
share, so both halves hash the input text (the estimate is then the input's Jaccard).

Signatures use datasketch's affine32 scheme and permutations but are computed for all
shingles at once with numpy (rolling hashes of the words, query and positive in one pass),
so a signature costs a few array operations instead of a Python loop per shingle. The LSH
index uses datasketch MinHashLSH's banding (the same b bands of r rows for the threshold
and num_perm) with the band bytes as plain dict keys: the same candidates as MinHashLSH,
without its per-band byte swapping and storage layers.
"""

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from datasketch import MinHash, MinHashLSH

from embedforge.v1 import messages_pb2 as pb
from services.curator.text import normalize


SCHEME = "affine32"


def fmix32(values: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer (datasketch's affine32 input mixing), vectorized."""
    h = values.astype(np.uint32)
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h


class MinHasher:
    """MinHash of the word bigrams of a normalized text (words separated by single spaces).

    Word hashes are polynomial rolling hashes over the UTF-8 bytes computed with numpy
    prefix sums (uint64 arithmetic wraps mod 2**64), bigram hashes combine two word hashes,
    and all permutations are applied in one array operation.
    """

    BASE = np.uint64(0x100000001B3)
    BIGRAM = np.uint64(0x9E3779B97F4A7C15)
    # Bytes of text hashed per vectorized pass of pairs(): amortizes the array calls, and the
    # (bigrams x num_perm/2) permutation matrices stay in cache.
    CHUNK_BYTES = 32768

    def __init__(self, num_perm: int = 64, max_bytes: int = 1024, seed: int = 1):
        self.num_perm = num_perm
        self.max_bytes = max_bytes
        self.permutations = MinHash(num_perm=num_perm, seed=seed, scheme=SCHEME).permutations
        a, b = self.permutations
        self.a, self.b = a[None, :], b[None, :]
        # Permutations of the query half and of the positive half of a pair signature.
        self.split = num_perm // 2
        # Up to a chunk of examples (see pairs) plus one more pair of texts of max_bytes and their spaces.
        longest = self.CHUNK_BYTES + 4 * max_bytes + 4
        self.powers = self._powers(int(self.BASE), longest)
        self.inverse_powers = self._powers(pow(int(self.BASE), -1, 1 << 64), longest)

    @staticmethod
    def _powers(base: int, count: int) -> np.ndarray:
        """base**0 .. base**count mod 2**64."""
        with np.errstate(over="ignore"):
            raised = np.cumprod(np.full(count, base, dtype=np.uint64), dtype=np.uint64)
        return np.concatenate(([np.uint64(1)], raised))

    def _word_hashes(self, data: np.ndarray) -> np.ndarray:
        """Hash of every space-separated word of the UTF-8 bytes ``data`` (not empty)."""
        is_space = data == 32
        values = np.where(is_space, 0, data.astype(np.uint64) + np.uint64(1))
        with np.errstate(over="ignore"):
            prefix = np.concatenate(([np.uint64(0)], np.cumsum(values * self.powers[: data.size], dtype=np.uint64)))
            bounds = np.flatnonzero(is_space)
            starts = np.concatenate(([0], bounds + 1))
            ends = np.concatenate((bounds, [data.size]))
            return (prefix[ends] - prefix[starts]) * self.inverse_powers[starts]

    def _bigrams(self, words: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return words[:-1] * self.BIGRAM + words[1:]

    def shingle_hashes(self, normalized: str) -> np.ndarray:
        """64-bit hashes of the word bigrams (of the single word, for one-word texts)."""
        data = np.frombuffer(normalized.encode()[: self.max_bytes], dtype=np.uint8)
        if not data.size:
            return np.zeros(0, dtype=np.uint64)
        words = self._word_hashes(data)
        return words if words.size < 2 else self._bigrams(words)

    @staticmethod
    def _mixed(hashed: np.ndarray) -> np.ndarray:
        """64-bit shingle hashes folded to 32 bits and mixed (datasketch's affine32 input)."""
        return fmix32((hashed ^ (hashed >> np.uint64(32))).astype(np.uint32))

    def _values(self, normalized: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Minimum over the text's shingles of each permutation (a, b) given."""
        hashed = self.shingle_hashes(normalized)
        if not hashed.size:
            return np.full(a.shape[1], np.iinfo(np.uint32).max, dtype=np.uint32)
        return (self._mixed(hashed)[:, None] * a + b).min(axis=0)

    def minhash(self, normalized: str) -> "Signature":
        """MinHash of one text over all ``num_perm`` permutations."""
        return Signature(self._values(normalized, self.a, self.b))

    def pair(self, norm_query: str, norm_positive: str) -> "Signature":
        """The query's MinHash over the first half of the permutations, the positive's over the second.

        Both texts are hashed in one pass: their bytes joined by a space, the bigram that
        spans the join left out. Texts of fewer than two words take the one-text path.
        """
        split, a, b = self.split, self.a, self.b
        query, positive = norm_query.encode()[: self.max_bytes], norm_positive.encode()[: self.max_bytes]
        query_words = query.count(b" ") + 1
        if not query or not positive or query_words < 2 or b" " not in positive:
            halves = (
                self._values(norm_query, a[:, :split], b[:, :split]),
                self._values(norm_positive, a[:, split:], b[:, split:]),
            )
            return Signature(np.concatenate(halves))
        mixed = self._mixed(self._bigrams(self._word_hashes(np.frombuffer(query + b" " + positive, dtype=np.uint8))))
        values = np.empty(self.num_perm, dtype=np.uint32)
        np.minimum.reduce(mixed[: query_words - 1, None] * a[:, :split] + b[:, :split], axis=0, out=values[:split])
        np.minimum.reduce(mixed[query_words:, None] * a[:, split:] + b[:, split:], axis=0, out=values[split:])
        return Signature(values)

    def pairs(self, items: list[tuple[str, str]]) -> list["Signature"]:
        """pair() of each (normalized query, normalized positive), many examples per vectorized pass."""
        signatures: list = [None] * len(items)
        chunk: list[tuple[int, bytes, bytes]] = []
        size = 0
        for index, (norm_query, norm_positive) in enumerate(items):
            query, positive = norm_query.encode()[: self.max_bytes], norm_positive.encode()[: self.max_bytes]
            if b" " not in query or b" " not in positive:  # a text without bigrams (empty or one word)
                signatures[index] = self.pair(norm_query, norm_positive)
                continue
            chunk.append((index, query, positive))
            size += len(query) + len(positive) + 2
            if size >= self.CHUNK_BYTES:
                self._pairs(chunk, signatures)
                chunk, size = [], 0
        if chunk:
            self._pairs(chunk, signatures)
        return signatures

    def _pairs(self, chunk: list[tuple[int, bytes, bytes]], signatures: list) -> None:
        """Signatures of a chunk of (index, query, positive), every text of at least two words.

        All texts are joined by spaces and hashed at once; a bigram counts for a text when
        both its words belong to that text (texts alternate query, positive), and each
        text's minimum per permutation is a reduceat over its run of bigrams.
        """
        texts = [text for _, query, positive in chunk for text in (query, positive)]
        counts = np.array([text.count(b" ") + 1 for text in texts])
        words = self._word_hashes(np.frombuffer(b" ".join(texts), dtype=np.uint8))
        text_of = np.repeat(np.arange(len(texts)), counts)[:-1]  # the text of each bigram's first word
        inside = text_of == np.repeat(np.arange(len(texts)), counts)[1:]
        bigrams = self._bigrams(words)
        split, a, b = self.split, self.a, self.b
        values = np.empty((len(chunk), self.num_perm), dtype=np.uint32)
        for half, (first, last) in enumerate(((0, split), (split, self.num_perm))):
            mixed = self._mixed(bigrams[inside & ((text_of & 1) == half)])
            runs = counts[half::2] - 1  # bigrams of each query (half 0) or positive (half 1)
            starts = np.concatenate(([0], np.cumsum(runs[:-1])))
            values[:, first:last] = np.minimum.reduceat(mixed[:, None] * a[:, first:last] + b[:, first:last], starts, axis=0)
        for (index, _, _), row in zip(chunk, values):
            signatures[index] = Signature(row)


class Signature:
    """MinHash values (``hashvalues``; ``len`` and ``scheme`` as datasketch's MinHashLSH reads them)."""

    __slots__ = ("hashvalues",)
    scheme = SCHEME

    def __init__(self, hashvalues: np.ndarray):
        self.hashvalues = hashvalues

    def __len__(self) -> int:
        return len(self.hashvalues)

    def jaccard(self, other: "Signature") -> float:
        """The share of equal hash values: for pair signatures, the estimated mean of query and positive Jaccard."""
        return float(np.count_nonzero(self.hashvalues == other.hashvalues)) / len(self.hashvalues)


@dataclass
class Verdict:
    """``duplicate_of`` is the accepted example's content hash, empty when this one is new."""

    reason: str = ""
    duplicate_of: str = ""
    similarity: float = 0.0


@lru_cache(maxsize=None)
def lsh_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band) that datasketch's MinHashLSH chooses for this threshold."""
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    return lsh.b, lsh.r


class BandIndex:
    """MinHash LSH: keys of the signatures that share at least one band of ``rows`` values."""

    def __init__(self, threshold: float, num_perm: int):
        bands, rows = lsh_bands(threshold, num_perm)
        self.cuts = [(band * rows, (band + 1) * rows) for band in range(bands)]
        # A bucket is its one key, or a list of keys once a second one arrives: most buckets hold
        # one key, and plain strings are no work for the garbage collector.
        self.tables: list[dict[bytes, str | list[str]]] = [{} for _ in range(bands)]

    def _keys(self, signature: Signature) -> list[bytes]:
        raw, width = signature.hashvalues.tobytes(), signature.hashvalues.itemsize
        return [raw[start * width : end * width] for start, end in self.cuts]

    def insert(self, key: str, signature: Signature) -> None:
        for table, band in zip(self.tables, self._keys(signature)):
            bucket = table.get(band)
            if bucket is None:
                table[band] = key
            elif isinstance(bucket, str):
                table[band] = [bucket, key]
            else:
                bucket.append(key)

    def query(self, signature: Signature) -> list[str]:
        """Candidate keys, each once, in insertion order of their buckets."""
        found: dict[str, None] = {}
        for table, band in zip(self.tables, self._keys(signature)):
            bucket = table.get(band)
            if bucket is None:
                continue
            if isinstance(bucket, str):
                found[bucket] = None
            else:
                found.update(dict.fromkeys(bucket))
        return list(found)


@dataclass
class JobIndex:
    """Accepted examples of one job: content hash <-> example id, and their MinHash LSH."""

    threshold: float
    num_perm: int
    accepted: dict[str, str] = field(default_factory=dict)
    example_ids: dict[str, str] = field(default_factory=dict)
    signatures: dict[str, np.ndarray] = field(default_factory=dict)  # hash values by content hash
    lsh: BandIndex = field(init=False)

    def __post_init__(self):
        self.lsh = BandIndex(self.threshold, self.num_perm)

    def check(self, content_hash: str, signature: Signature) -> Verdict:
        if content_hash in self.accepted:
            return Verdict("duplicate", content_hash, 1.0)
        best = Verdict()
        values = signature.hashvalues
        for other in self.lsh.query(signature):
            similarity = float(np.count_nonzero(values == self.signatures[other])) / len(values)
            if similarity >= self.threshold and similarity > best.similarity:
                best = Verdict("near_duplicate", other, similarity)
        return best

    def add(self, content_hash: str, example_id: str, signature: Signature) -> None:
        if content_hash in self.accepted:
            return
        self.accepted[content_hash] = example_id
        self.example_ids[example_id] = content_hash
        self.signatures[content_hash] = signature.hashvalues
        self.lsh.insert(content_hash, signature)


class DedupIndex:
    """Per-job indexes: the dedup scope is a job, whose curated set is one dataset."""

    def __init__(self, threshold: float = 0.7, num_perm: int = 64, max_bytes: int = 1024):
        self.hasher = MinHasher(num_perm, max_bytes)
        self.threshold = threshold
        self.jobs: dict[str, JobIndex] = {}

    def job(self, job_id: str) -> JobIndex:
        if job_id not in self.jobs:
            self.jobs[job_id] = JobIndex(self.threshold, self.hasher.num_perm)
        return self.jobs[job_id]

    @staticmethod
    def texts(example: pb.CuratedExample) -> tuple[str, str]:
        """The normalized texts of the two halves of the signature: query and first positive."""
        query = normalize(example.query)
        if example.category == pb.CATEGORY_CLASSIFICATION:  # the positive is a label many examples share
            return query, query
        return query, normalize(example.positives[0])

    def signature(self, example: pb.CuratedExample) -> Signature:
        """Pair MinHash of the normalized query and first positive (see the module docstring)."""
        return self.hasher.pair(*self.texts(example))

    def signatures(self, examples: list[pb.CuratedExample]) -> list[Signature]:
        """signature() of each example, computed together."""
        return self.hasher.pairs([self.texts(example) for example in examples])

    def add(self, example: pb.CuratedExample) -> None:
        self.add_many([example])

    def add_many(self, examples: list[pb.CuratedExample]) -> None:
        """Index accepted examples (the dedup log's replay)."""
        new = [e for e in examples if e.content_hash not in self.job(e.job_id).accepted]
        for example, signature in zip(new, self.signatures(new)):
            self.job(example.job_id).add(example.content_hash, example.provenance.example_id, signature)
