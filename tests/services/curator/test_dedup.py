"""Exact and near-duplicate detection within a job."""

import zlib

import numpy as np
from datasketch import MinHash

from embedforge.v1 import messages_pb2 as pb
from services.curator.dedup import DedupIndex, MinHasher
from services.curator.text import content_hash, normalize
from tests.services.curator.factory import near_duplicate, retrieval_answer

MASK64 = (1 << 64) - 1


def example(answer: dict, example_id: str, job_id: str = "job-1") -> pb.CuratedExample:
    query, positive = answer["user_query"], answer["positive_document"]
    return pb.CuratedExample(
        content_hash=content_hash(normalize(query), normalize(positive)),
        job_id=job_id,
        query=query,
        positives=[positive],
        provenance=pb.Provenance(example_id=example_id),
    )


def verdict(index: DedupIndex, candidate: pb.CuratedExample):
    return index.job(candidate.job_id).check(candidate.content_hash, index.signature(candidate))


def reference_word_hash(word: bytes) -> int:
    return sum((byte + 1) * pow(int(MinHasher.BASE), i, 1 << 64) for i, byte in enumerate(word)) & MASK64


def test_vectorized_minhash_equals_datasketch_on_the_same_shingle_hashes():
    hasher = MinHasher(num_perm=64)
    text = normalize(retrieval_answer(1)["positive_document"])
    words = [w.encode() for w in text.split()]

    def bigram_hash(bigram: bytes) -> int:
        first, second = bigram.split(b" ")
        value = (reference_word_hash(first) * int(MinHasher.BIGRAM) + reference_word_hash(second)) & MASK64
        return (value ^ (value >> 32)) & 0xFFFFFFFF

    reference = MinHash(num_perm=64, seed=1, scheme="affine32", hashfunc=bigram_hash)
    reference.update_batch([a + b" " + b for a, b in zip(words, words[1:])])
    assert np.array_equal(hasher.minhash(text).hashvalues, reference.hashvalues)


def test_signatures_do_not_depend_on_the_process_hash_seed():
    text = normalize(retrieval_answer(2)["positive_document"])
    assert zlib.crc32(MinHasher().minhash(text).hashvalues.tobytes()) == zlib.crc32(MinHasher().minhash(text).hashvalues.tobytes())


def test_same_query_and_positive_after_normalization_is_an_exact_duplicate():
    index = DedupIndex()
    answer = retrieval_answer(3)
    index.add(example(answer, "a"))
    shouted = {**answer, "user_query": answer["user_query"].upper() + "!!", "positive_document": "  " + answer["positive_document"]}
    assert verdict(index, example(shouted, "b")).reason == "duplicate"


def test_regenerated_example_with_small_edits_is_a_near_duplicate():
    index = DedupIndex(threshold=0.7)
    answer = retrieval_answer(4)
    index.add(example(answer, "a"))
    result = verdict(index, example(near_duplicate(answer, seed=1), "b"))
    assert result.reason == "near_duplicate"
    assert result.duplicate_of == example(answer, "a").content_hash
    assert result.similarity >= 0.7


def test_different_examples_on_the_same_topic_are_kept():
    index = DedupIndex(threshold=0.7)
    for seed in range(50):
        candidate = example(retrieval_answer(seed), f"e{seed}")
        assert verdict(index, candidate).reason == ""
        index.add(candidate)


def test_duplicates_are_only_looked_for_within_the_same_job():
    index = DedupIndex()
    answer = retrieval_answer(5)
    index.add(example(answer, "a", job_id="job-1"))
    assert verdict(index, example(answer, "b", job_id="job-2")).reason == ""


def test_threshold_is_configurable():
    answer = retrieval_answer(6)
    strict = DedupIndex(threshold=0.95)
    strict.add(example(answer, "a"))
    assert verdict(strict, example(near_duplicate(answer, seed=2), "b")).reason == ""
