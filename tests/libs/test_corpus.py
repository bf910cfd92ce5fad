"""Documents are read from JSONL, BEIR folders and folders of text files, and cut into chunks."""

import pytest

from libs.corpus import SourceDocument, chunk_document, chunk_id, chunk_messages, read_documents


def test_beir_folder_is_read_from_its_corpus_jsonl(shared_data):
    documents = list(read_documents(shared_data / "xquad-en"))
    assert len(documents) == 240
    assert all(d.doc_id and d.text for d in documents)


def test_jsonl_ids_titles_and_metadata_are_kept(tmp_path):
    (tmp_path / "docs.jsonl").write_text(
        '{"id": "a", "title": "T", "text": "alpha", "metadata": {"lang": "en"}}\n\n{"text": "beta"}\n'
    )
    a, b = read_documents(tmp_path / "docs.jsonl")
    assert (a.doc_id, a.title, a.text, a.metadata) == ("a", "T", "alpha", {"lang": "en"})
    assert (b.doc_id, b.title) == ("3", "")


def test_folder_of_text_files_uses_relative_paths_and_headings(tmp_path):
    (tmp_path / "guides").mkdir()
    (tmp_path / "guides" / "setup.md").write_text("intro\n# Installing the agent\nRun the installer.")
    (tmp_path / "notes.txt").write_text("plain notes")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    docs = {d.doc_id: d for d in read_documents(tmp_path)}
    assert set(docs) == {"guides/setup.md", "notes.txt"}
    assert docs["guides/setup.md"].title == "Installing the agent" and docs["notes.txt"].title == "notes"


def test_a_folder_yields_only_its_own_files_not_links_out_of_it(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "secret.txt").write_text("secret")
    (tmp_path / "docs" / "own.txt").write_text("own text")
    (tmp_path / "docs" / "inner.md").symlink_to(tmp_path / "docs" / "own.txt")
    (tmp_path / "docs" / "leak.txt").symlink_to(tmp_path / "secret.txt")
    assert sorted(d.doc_id for d in read_documents(tmp_path / "docs")) == ["inner.md", "own.txt"]


@pytest.mark.parametrize(
    ("content", "message"),
    [("{not json\n", "docs.jsonl:1: not JSON"), ('{"title": "x"}\n', "docs.jsonl:1: a document is an object")],
)
def test_bad_jsonl_lines_are_named(tmp_path, content, message):
    (tmp_path / "docs.jsonl").write_text(content)
    with pytest.raises(ValueError, match=message):
        list(read_documents(tmp_path / "docs.jsonl"))


def test_missing_path_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no documents at"):
        list(read_documents(tmp_path / "nope"))


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


def test_chunk_messages_are_the_documents_chunks_with_their_position_and_count():
    document = SourceDocument("d", "T", "One two.\n\nThree four five.", {"lang": "en"})
    messages = chunk_messages("job", document, max_words=3, collection="c")
    assert [(m.chunk_id, m.text, m.chunk_index, m.chunk_count) for m in messages] == [
        (chunk_id("job", "d", i), c.text, i, 2) for i, c in enumerate(chunk_document(document, max_words=3))
    ]
    fields = {(m.job_id, m.doc_id, m.title, m.collection, m.metadata["lang"], m.num_queries) for m in messages}
    assert fields == {("job", "d", "T", "c", "en", 0)}
