"""The user's own documents: read a corpus (JSONL, BEIR corpus.jsonl, or a folder of
.txt/.md) and cut it into chunks to write corpus-grounded queries for."""

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

TEXT_KEYS = ("text", "contents", "content", "body", "passage")
ID_KEYS = ("_id", "id", "doc_id", "docid")


class CorpusError(ValueError):
    """A corpus path that does not exist or holds nothing readable."""


@dataclass(frozen=True)
class SourceDocument:
    doc_id: str
    title: str
    text: str


@dataclass(frozen=True)
class Chunk:
    doc_id: str
    index: int
    title: str
    text: str


def read_corpus(path: str | Path) -> Iterator[SourceDocument]:
    """Documents of a JSONL file (one object per line with text/contents and optional
    _id/id and title; BEIR corpus.jsonl is one), a BEIR folder, or a folder of .txt/.md."""
    path = Path(path)
    if path.is_dir() and (path / "corpus.jsonl").is_file():
        path = path / "corpus.jsonl"
    if path.is_file():
        yield from _read_jsonl(path)
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in (".txt", ".md") and p.is_file())
        if not files:
            raise CorpusError(f"{path} holds no .txt or .md files")
        for file in files:
            text = file.read_text(encoding="utf-8", errors="replace").strip()
            if text:
                yield SourceDocument(str(file.relative_to(path)), _markdown_title(text) or file.stem, text)
    else:
        raise CorpusError(f"corpus path {path} does not exist")


def _read_jsonl(path: Path) -> Iterator[SourceDocument]:
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CorpusError(f"{path}:{number}: not JSON ({exc})") from exc
            text = next((str(row[k]) for k in TEXT_KEYS if row.get(k)), "")
            if not text.strip():
                continue
            doc_id = next((str(row[k]) for k in ID_KEYS if row.get(k) not in (None, "")), f"{path.stem}-{number}")
            yield SourceDocument(doc_id, str(row.get("title") or ""), text.strip())


def _markdown_title(text: str) -> str:
    match = re.match(r"#\s+(.+)", text)
    return match.group(1).strip() if match else ""


def chunk_document(document: SourceDocument, max_words: int = 200) -> list[Chunk]:
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
    return hashlib.sha256(f"{job_id}|{doc_id}|{index}".encode()).hexdigest()[:24]
