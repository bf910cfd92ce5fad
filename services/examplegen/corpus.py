"""Cutting the user's documents (read by libs.corpus) into chunks to write corpus-grounded
queries for."""

import hashlib
import re
from dataclasses import dataclass

from libs.corpus import SourceDocument


@dataclass(frozen=True)
class Chunk:
    doc_id: str
    index: int
    title: str
    text: str


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
