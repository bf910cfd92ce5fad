"""Chunking the user's documents for corpus-grounded queries (services.examplegen.corpus)."""

from libs.corpus import SourceDocument, chunk_document
from services.examplegen.corpus import chunk_id


def test_chunks_follow_paragraphs_and_respect_the_word_budget():
    text = "\n\n".join(" ".join(f"w{p}_{i}" for i in range(n)) for p, n in enumerate([30, 30, 120, 10]))
    chunks = chunk_document(SourceDocument("d", "T", text), max_words=50)
    assert [len(c.text.split()) for c in chunks] == [30, 30, 50, 50, 30]
    assert [c.index for c in chunks] == [0, 1, 2, 3, 4]
    assert " ".join(c.text for c in chunks).split() == text.split()


def test_short_paragraphs_are_merged_into_one_chunk():
    chunks = chunk_document(SourceDocument("d", "T", "One two.\n\nThree four.\n\nFive."), max_words=50)
    assert [c.text for c in chunks] == ["One two. Three four. Five."]
    assert chunks[0].title == "T"


def test_chunk_ids_are_stable_per_job_document_and_index():
    assert chunk_id("job", "d1", 0) == chunk_id("job", "d1", 0)
    assert len({chunk_id("job", "d1", 0), chunk_id("job", "d1", 1), chunk_id("job", "d2", 0), chunk_id("other", "d1", 0)}) == 4
