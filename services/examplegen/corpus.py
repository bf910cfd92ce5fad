"""Ids of the chunks (libs.corpus.chunk_document) that corpus-grounded queries are written for."""

import hashlib


def chunk_id(job_id: str, doc_id: str, index: int) -> str:
    return hashlib.sha256(f"{job_id}|{doc_id}|{index}".encode()).hexdigest()[:24]
