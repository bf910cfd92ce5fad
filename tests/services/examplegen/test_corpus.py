"""Reading and chunking the user's documents (services.examplegen.corpus)."""

import json

import pytest

from services.examplegen.corpus import CorpusError, SourceDocument, chunk_document, read_corpus


def test_beir_folder_reads_corpus_jsonl(tmp_path):
    rows = [{"_id": "d1", "title": "Tides", "text": "The moon pulls the sea."}, {"_id": "d2", "title": "", "text": "Wind makes waves."}]
    (tmp_path / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    assert list(read_corpus(tmp_path)) == [SourceDocument("d1", "Tides", "The moon pulls the sea."), SourceDocument("d2", "", "Wind makes waves.")]


def test_plain_jsonl_accepts_id_and_contents_keys(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text(json.dumps({"id": 7, "contents": "Text here."}) + "\n\n" + json.dumps({"text": "No id."}) + "\n")
    assert [(d.doc_id, d.text) for d in read_corpus(path)] == [("7", "Text here."), ("docs-3", "No id.")]


def test_folder_of_text_and_markdown_files_is_read_with_titles(tmp_path):
    (tmp_path / "a.md").write_text("# Tenancy law\n\nLandlords must...")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("Plain text.")
    (tmp_path / "ignored.pdf").write_bytes(b"%PDF")
    assert [(d.doc_id, d.title) for d in read_corpus(tmp_path)] == [("a.md", "Tenancy law"), ("sub/b.txt", "b")]


def test_missing_corpus_path_is_a_clear_error(tmp_path):
    with pytest.raises(CorpusError, match="does not exist"):
        list(read_corpus(tmp_path / "nope"))


def test_malformed_jsonl_line_names_the_line(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "ok"}\n{broken\n')
    with pytest.raises(CorpusError, match="c.jsonl:2"):
        list(read_corpus(path))


def test_chunks_follow_paragraphs_and_respect_the_word_budget():
    text = "\n\n".join(" ".join(f"w{p}_{i}" for i in range(n)) for p, n in enumerate([30, 30, 120, 10]))
    chunks = chunk_document(SourceDocument("d", "T", text), max_words=50)
    assert [len(c.text.split()) for c in chunks] == [30, 30, 50, 50, 30]
    assert [c.index for c in chunks] == [0, 1, 2, 3, 4]
    assert " ".join(c.text for c in chunks).split() == text.split()
