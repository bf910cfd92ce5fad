"""BM25 sparse vectors: multilingual terms, saturating term frequency, length normalization."""

from services.embedder.sparse import Bm25, term_id, terms


def test_latin_words_are_lowercased_and_split_on_punctuation():
    assert terms("Hello, WORLD! It's 2024.") == ["hello", "world", "it", "s", "2024"]


def test_chinese_gives_characters_and_bigrams():
    assert terms("中国首都") == ["中", "国", "首", "都", "中国", "国首", "首都"]


def test_mixed_scripts_split_at_the_script_boundary():
    assert terms("Qdrant支持BM25") == ["qdrant", "支", "持", "支持", "bm25"]


def test_term_frequency_saturates():
    bm25 = Bm25(avg_length=10)
    once = bm25.document_vector("apple pear plum fig kiwi lime")
    thrice = bm25.document_vector("apple apple apple pear plum fig")
    weight = lambda v: dict(zip(v.indices, v.values))[term_id("apple")]  # noqa: E731
    assert weight(once) < weight(thrice) < 3 * weight(once)
    assert weight(thrice) < bm25.k1 + 1


def test_longer_documents_weigh_a_term_less():
    bm25 = Bm25(avg_length=10)
    short = bm25.document_vector("apple pear")
    long = bm25.document_vector("apple " + " ".join(f"filler{i}" for i in range(30)))
    assert dict(zip(short.indices, short.values))[term_id("apple")] > dict(zip(long.indices, long.values))[term_id("apple")]


def test_query_vector_has_unit_weights_over_distinct_terms():
    vector = Bm25().query_vector("capital capital of France")
    assert sorted(vector.indices) == sorted({term_id(t) for t in ("capital", "of", "france")})
    assert vector.values == [1.0, 1.0, 1.0]
