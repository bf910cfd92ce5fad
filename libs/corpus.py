"""Users' documents from disk: a JSONL file, a BEIR folder/corpus.jsonl, or a folder of .txt/.md.

Used wherever a job points at its documents: corpus-grounded generation, ingest into Qdrant,
and the local runner. Documents are cut into chunks in one place, chunk_document, in one unit,
words (whitespace-separated; paragraph-aligned), so the cut does not depend on the model that
will serve them. Examplegen cuts a job's documents once and publishes the chunks on
forge.corpus.chunks (chunk_messages); the trainer mines from those chunks and the embedder
indexes them, so training, mining and serving see the same passages.
"""

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from embedforge.v1 import messages_pb2 as pb

TEXT_SUFFIXES = (".txt", ".md")
# Words per chunk when a job does not set corpus_chunk_words.
DEFAULT_CHUNK_WORDS = 200


@dataclass(frozen=True)
class SourceDocument:
    doc_id: str
    title: str
    text: str
    metadata: dict[str, str] = field(default_factory=dict)


def read_documents(path: str | Path) -> Iterator[SourceDocument]:
    """Yield the documents under ``path``; raises ValueError naming the file and line on bad input.

    JSONL lines need ``text`` and may have ``_id``/``id``, ``title`` and ``metadata`` (a flat
    mapping); a folder holding ``corpus.jsonl`` is read as BEIR; any other folder yields its
    .txt/.md files (id = relative path, title = first Markdown heading or the file name).
    """
    path = Path(path)
    if path.is_dir() and (path / "corpus.jsonl").is_file():
        path = path / "corpus.jsonl"
    if path.is_file():
        yield from _read_jsonl(path)
    elif path.is_dir():
        yield from _read_folder(path)
    else:
        raise ValueError(f"no documents at {path}: expected a JSONL file or a folder")


def _read_jsonl(path: Path) -> Iterator[SourceDocument]:
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON ({exc.msg})") from exc
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise ValueError(f"{path}:{number}: a document is an object with a string 'text'")
            doc_id = str(row.get("_id", row.get("id", number)))
            metadata = {str(k): str(v) for k, v in (row.get("metadata") or {}).items()}
            yield SourceDocument(doc_id, str(row.get("title") or ""), row["text"], metadata)


def _read_folder(folder: Path) -> Iterator[SourceDocument]:
    """The folder's own .txt/.md files: links to files outside it are skipped."""
    inside = folder.resolve()
    for file in sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in TEXT_SUFFIXES and p.is_file() and p.resolve().is_relative_to(inside)
    ):
        text = file.read_text(encoding="utf-8", errors="replace")
        heading = next((ln.lstrip("#").strip() for ln in text.splitlines() if ln.startswith("#")), "")
        relative = str(file.relative_to(folder))
        yield SourceDocument(relative, heading or file.stem, text, {"path": relative})


@dataclass(frozen=True)
class Chunk:
    doc_id: str
    index: int
    title: str
    text: str


def chunk_document(document: SourceDocument, max_words: int = DEFAULT_CHUNK_WORDS) -> list[Chunk]:
    """Paragraph-aligned chunks of at most about ``max_words`` words (long paragraphs are split)."""
    paragraphs = [p.split() for p in re.split(r"\n\s*\n", document.text) if p.strip()]
    chunks, current = [], []
    for words in paragraphs:
        while len(words) > max_words:
            if current:
                chunks.append(current)
                current = []
            chunks.append(words[:max_words])
            words = words[max_words:]
        if current and len(current) + len(words) > max_words:
            chunks.append(current)
            current = []
        current = current + words
    if current:
        chunks.append(current)
    return [Chunk(document.doc_id, i, document.title, " ".join(words)) for i, words in enumerate(chunks)]


def chunk_id(job_id: str, doc_id: str, index: int) -> str:
    """The stable id of a chunk: one per job, document and position."""
    return hashlib.sha256(f"{job_id}|{doc_id}|{index}".encode()).hexdigest()[:24]


def chunk_messages(job_id: str, document: SourceDocument, max_words: int, collection: str = "") -> list[pb.CorpusChunk]:
    """The document's chunks as forge.corpus.chunks messages (no queries asked: ``num_queries`` 0)."""
    chunks = chunk_document(document, max_words)
    return [
        pb.CorpusChunk(
            chunk_id=chunk_id(job_id, document.doc_id, chunk.index),
            job_id=job_id,
            doc_id=document.doc_id,
            title=chunk.title,
            text=chunk.text,
            chunk_index=chunk.index,
            chunk_count=len(chunks),
            collection=collection,
            metadata=document.metadata,
        )
        for chunk in chunks
    ]
