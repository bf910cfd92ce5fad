"""Token-aware chunking with overlap."""

import pytest
from transformers import AutoTokenizer

from services.embedder.chunking import Chunker


@pytest.fixture(scope="module")
def tokenizer(minilm_path):
    return AutoTokenizer.from_pretrained(minilm_path)


def token_count(tokenizer, text):
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_a_short_text_is_one_chunk_equal_to_the_text(tokenizer):
    (chunk,) = Chunker(tokenizer, 50, 10).split("A short text.")
    assert (chunk.index, chunk.text) == (0, "A short text.")


def test_long_text_chunks_fit_the_token_budget_and_overlap(tokenizer):
    text = " ".join(f"word{i}" for i in range(300))
    chunks = Chunker(tokenizer, 40, 10).split(text)
    assert len(chunks) > 5
    assert all(token_count(tokenizer, c.text) <= 40 for c in chunks)
    for before, after in zip(chunks, chunks[1:]):
        assert after.start < before.end  # consecutive chunks share text
    assert chunks[0].start == 0 and chunks[-1].end == len(text)
    assert [c.index for c in chunks] == list(range(len(chunks)))


def test_chunks_are_exact_spans_of_the_original_text(tokenizer):
    text = "Überraschung! 北京是中国的首都。  Spaces   stay as written.\n" * 20
    for chunk in Chunker(tokenizer, 16, 4).split(text):
        assert text[chunk.start : chunk.end] == chunk.text


def test_blank_text_has_no_chunks(tokenizer):
    assert Chunker(tokenizer, 16, 4).split("   \n") == []


def test_overlap_must_be_smaller_than_the_chunk(tokenizer):
    with pytest.raises(ValueError, match="overlap_tokens"):
        Chunker(tokenizer, 16, 16)
