"""Bulk loading from files: JSONL / BEIR corpus rows and folders of .txt/.md, through the CLI."""

import json
import subprocess
import sys

import pytest

from libs.local.runtime import REPO_ROOT, python_env
from services.embedder.ingest import read_documents
from services.embedder.vectorstore import VectorStore, connect


def test_jsonl_rows_become_documents_with_id_title_text_and_metadata(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        json.dumps({"_id": "b1", "title": "BEIR", "text": "beir row"}) + "\n\n" + json.dumps({"id": 7, "text": "plain row", "metadata": {"year": 2024}}) + "\n"
    )
    documents = list(read_documents(corpus, "c"))
    assert [(d.doc_id, d.title, d.text, dict(d.metadata), d.collection) for d in documents] == [
        ("b1", "BEIR", "beir row", {}, "c"),
        ("7", "", "plain row", {"year": "2024"}, "c"),
    ]


def test_a_row_without_an_id_is_reported_with_its_line(tmp_path):
    corpus = tmp_path / "bad.jsonl"
    corpus.write_text(json.dumps({"text": "no id"}) + "\n")
    with pytest.raises(ValueError, match="bad.jsonl:1: no document id"):
        list(read_documents(corpus))


def test_a_folder_gives_its_txt_and_md_files_by_relative_path(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("alpha")
    (tmp_path / "sub" / "b.md").write_text("# beta")
    (tmp_path / "skip.json").write_text("{}")
    assert [(d.doc_id, d.title, d.text) for d in read_documents(tmp_path)] == [("a.txt", "a", "alpha"), ("sub/b.md", "b", "# beta")]


def test_the_cli_indexes_a_corpus_into_the_embedded_store_idempotently(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "text": f"Document {i} of the bulk load."}) + "\n" for i in range(5)))
    env = {**python_env(), "EMBEDDER_STATE_DIR": str(tmp_path / "state")}
    command = [sys.executable, "-m", "services.embedder.ingest", str(corpus), "--collection", "bulk"]
    for _ in range(2):
        result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout.strip().splitlines()[-1]) == {"indexed": 5, "chunks": 5, "collection": "bulk"}
    store = VectorStore(connect(path=str(tmp_path / "state" / "qdrant")))
    try:
        assert store.count("bulk") == 5
    finally:
        store.close()
