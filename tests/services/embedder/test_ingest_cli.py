"""Bulk loading from files (read by libs.corpus) through the CLI."""

import json
import subprocess
import sys

from libs.local.runtime import REPO_ROOT, python_env
from services.embedder.ingest import read_documents
from services.embedder.settings import QdrantSettings
from services.embedder.vectorstore import VectorStore, connect


def test_files_become_document_messages_for_the_collection(tmp_path):
    (tmp_path / "a.txt").write_text("alpha")
    (tmp_path / "b.md").write_text("# Beta\nbeta text")
    documents = list(read_documents(tmp_path, "notes"))
    assert [(d.doc_id, d.title, d.collection) for d in documents] == [("a.txt", "a", "notes"), ("b.md", "Beta", "notes")]
    assert dict(documents[0].metadata) == {"path": "a.txt"}


def test_the_cli_indexes_a_corpus_into_the_embedded_store(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "text": f"Document {i} of the bulk load."}) + "\n" for i in range(5)))
    env = {**python_env(), "EMBEDDER_STATE_DIR": str(tmp_path / "state")}
    command = [sys.executable, "-m", "services.embedder.ingest", str(corpus), "--collection", "bulk"]
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"indexed": 5, "chunks": 5, "collection": "bulk"}
    store = VectorStore(connect(QdrantSettings(), str(tmp_path / "state")))
    try:
        assert store.count("bulk") == 5
    finally:
        store.close()
