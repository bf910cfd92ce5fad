"""Exact and near-duplicate detection within a job."""

import zlib

import numpy as np
from datasketch import MinHash, MinHashLSH

from embedforge.v1 import messages_pb2 as pb
from services.curator.dedup import BandIndex, DedupIndex, MinHasher, Signature
from services.curator.text import content_hash, normalize
from services.curator.validation import bigrams
from tests.services.curator.factory import TOPIC_A, TOPIC_B, near_duplicate, retrieval_answer, text

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


# A corpus chunk (the positive of every corpus-grounded example written for it) and questions about it.
CHUNK = "Taking your tablets\n" + text(__import__("random").Random(7), 180, TOPIC_A)
CORPUS_QUERIES = [
    "should the tablet be taken with water after breakfast",
    "who do I tell about side effects of the medicine",
    "when does the doctor change the dose",
    "how often is blood pressure measured",
    "what dose do children under twelve get",
    "can a parent supervise the treatment at home",
]


def corpus_example(query: str, example_id: str, chunk: str = CHUNK) -> pb.CuratedExample:
    return pb.CuratedExample(
        content_hash=content_hash(normalize(query), normalize(chunk)),
        job_id="job-1",
        category=pb.CATEGORY_CORPUS_GROUNDED,
        query=query,
        positives=[chunk],
        provenance=pb.Provenance(example_id=example_id, template_id="corpus_query"),
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
    assert zlib.crc32(MinHasher().minhash(text).hashvalues.tobytes()) == zlib.crc32(
        MinHasher().minhash(text).hashvalues.tobytes()
    )


def test_same_query_and_positive_after_normalization_is_an_exact_duplicate():
    index = DedupIndex()
    answer = retrieval_answer(3)
    index.add(example(answer, "a"))
    shouted = {
        **answer,
        "user_query": answer["user_query"].upper() + "!!",
        "positive_document": "  " + answer["positive_document"],
    }
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


def test_different_questions_about_the_same_chunk_are_all_kept():
    index = DedupIndex(threshold=0.7)
    for n, query in enumerate(CORPUS_QUERIES):
        candidate = corpus_example(query, f"c{n}")
        result = verdict(index, candidate)
        assert result.reason == "", (query, result)
        index.add(candidate)
    assert len(index.job("job-1").accepted) == len(CORPUS_QUERIES)


def test_same_question_about_a_slightly_edited_chunk_is_a_near_duplicate():
    index = DedupIndex(threshold=0.7)
    index.add(corpus_example(CORPUS_QUERIES[0], "c0"))
    words = CHUNK.split(" ")
    words[10], words[60] = "medicine", "morning"
    result = verdict(index, corpus_example(CORPUS_QUERIES[0], "c1", chunk=" ".join(words)))
    assert result.reason == "near_duplicate"
    assert result.similarity >= 0.9


def test_same_query_with_a_positive_two_words_changed_is_a_near_duplicate():
    index = DedupIndex(threshold=0.7)
    answer = retrieval_answer(8)
    index.add(example(answer, "a"))
    words = answer["positive_document"].split()
    words[5], words[40] = "kidney", "nurse"
    result = verdict(index, example({**answer, "positive_document": " ".join(words)}, "b"))
    assert (result.reason, result.duplicate_of) == ("near_duplicate", example(answer, "a").content_hash)


def test_different_query_and_very_different_positive_is_kept():
    index = DedupIndex(threshold=0.7)
    answer = retrieval_answer(9)
    index.add(example(answer, "a"))
    other = {
        "user_query": "which trains run on the mountain line",
        "positive_document": text(__import__("random").Random(9), 100, TOPIC_B),
    }
    assert verdict(index, example(other, "b")).reason == ""


def exact_jaccard(a: str, b: str) -> float:
    x, y = bigrams(normalize(a)), bigrams(normalize(b))
    return len(x & y) / len(x | y)


def test_signature_similarity_estimates_the_mean_of_query_and_positive_jaccard():
    index = DedupIndex(num_perm=1024)
    first, second = corpus_example(CORPUS_QUERIES[0], "a"), corpus_example(CORPUS_QUERIES[0] + " every morning", "b")
    words = CHUNK.split(" ")
    second.positives[0] = " ".join(words[:90] + ["kidney"] * 3 + words[93:])
    expected = (exact_jaccard(first.query, second.query) + exact_jaccard(first.positives[0], second.positives[0])) / 2
    assert abs(index.signature(first).jaccard(index.signature(second)) - expected) < 0.06


def test_dedup_state_replayed_from_the_log_decides_the_same():
    """The dedup log holds CuratedExamples: a fresh index rebuilt from them gives the same verdicts."""
    accepted = [corpus_example(q, f"c{n}") for n, q in enumerate(CORPUS_QUERIES)] + [example(retrieval_answer(10), "r")]
    live, replayed = DedupIndex(), DedupIndex()
    for candidate in accepted:
        live.add(candidate)
        replayed.add(pb.CuratedExample.FromString(candidate.SerializeToString()))
    probes = [
        corpus_example(CORPUS_QUERIES[1], "p0"),
        corpus_example("is the clinic open on monday", "p1"),
        example(near_duplicate(retrieval_answer(10), seed=3), "p2"),
    ]
    assert [verdict(live, p) for p in probes] == [verdict(replayed, p) for p in probes]
    assert [verdict(replayed, p).reason for p in probes] == ["duplicate", "", "near_duplicate"]


def test_band_index_finds_the_same_candidates_as_datasketch_minhash_lsh():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**32, size=(40, 64), dtype=np.uint32)
    stored = [
        np.where(rng.random(64) < 0.9, base[n % 40], rng.integers(0, 2**32, 64, dtype=np.uint32)).astype(np.uint32)
        for n in range(200)
    ]
    ours, theirs = BandIndex(0.7, 64), MinHashLSH(threshold=0.7, num_perm=64)
    for n, values in enumerate(stored):
        ours.insert(f"k{n}", Signature(values))
        theirs.insert(f"k{n}", Signature(values))
    probes = [np.where(rng.random(64) < 0.9, base[n % 40], 0).astype(np.uint32) for n in range(100)]
    found = [set(ours.query(Signature(values))) for values in probes]
    assert found == [set(theirs.query(Signature(values))) for values in probes]
    assert sum(map(len, found)) > 50


def classification_example(text_: str, label: str, example_id: str) -> pb.CuratedExample:
    return pb.CuratedExample(
        content_hash=content_hash(normalize(text_), normalize(label)),
        job_id="job-1",
        category=pb.CATEGORY_CLASSIFICATION,
        query=text_,
        positives=[label],
        provenance=pb.Provenance(example_id=example_id, template_id="classification"),
    )


def test_classification_inputs_with_the_same_label_are_compared_by_their_text():
    """The positive of a classification example is its label: sharing it does not make inputs near-duplicates."""
    index = DedupIndex(threshold=0.7)
    first = "the pills made me dizzy all day and I could not drive to work on monday morning"
    index.add(classification_example(first, "side effect", "a"))
    half_shared = (
        "the pills made me dizzy all day and I could not drive so my sister took me to the clinic"  # bigram Jaccard 0.46
    )
    assert verdict(index, classification_example(half_shared, "side effect", "b")).reason == ""
    edited = first.replace("monday", "tuesday")
    assert verdict(index, classification_example(edited, "side effect", "c")).reason == "near_duplicate"


def test_signatures_of_a_batch_equal_one_signature_at_a_time():
    examples = [example(retrieval_answer(seed), f"r{seed}") for seed in range(30)]
    examples += [corpus_example(query, f"c{n}") for n, query in enumerate(CORPUS_QUERIES)]
    examples += [classification_example("the pills made me dizzy all day", "side effect", "k1")]
    examples += [corpus_example(query, f"s{n}") for n, query in enumerate(["insulin", "", "!!", "pens"])]  # one word or none
    examples += [
        example({"user_query": "how to store insulin", "positive_document": word}, f"w{n}")
        for n, word in enumerate(["fridge", "病人应该。", "x" * 3000])
    ]
    index = DedupIndex(max_bytes=64)
    batch = index.signatures(examples)
    assert [s.hashvalues.tolist() for s in batch] == [index.signature(e).hashvalues.tolist() for e in examples]
