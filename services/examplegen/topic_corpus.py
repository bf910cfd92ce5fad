"""Chunks of the documents that arrive on forge.documents for a job.

A job without ``corpus_path`` takes its corpus from the documents topic: every chunk of a
document carrying the job's id is published (for the trainer's mining and the embedder's
index), and every new chunk gets one query until the job's ``corpus_queries`` are planned
(continuous generation: the job waits for more documents). Documents can arrive before their
job; they wait in ``state_dir`` until it does.

Layout under ``<state_dir>/topic_corpus/<sha256(job_id)>/``: ``job.pb`` (the Job),
``parked.jsonl`` (documents that came before the job) and ``planned.txt`` (chunk ids that got
a query, appended before the chunks are handed to the consumer loop to publish). A chunk
already planned is planned again when its document is redelivered: the same chunk id gives
the same example ids downstream, which examplegen does not write twice.
"""

import hashlib
from pathlib import Path

from google.protobuf import json_format

from embedforge.v1 import messages_pb2 as pb
from libs.corpus import SourceDocument, chunk_messages
from libs.jobspec import corpus_chunk_words


def takes_topic_documents(job: pb.Job) -> bool:
    return not job.spec.corpus_path


class TopicCorpus:
    """Per-job state for documents from the topic. Used from the one consumer-loop thread."""

    def __init__(self, state_dir: Path):
        self.root = state_dir / "topic_corpus"

    def _folder(self, job_id: str) -> Path:
        return self.root / hashlib.sha256(job_id.encode()).hexdigest()[:32]

    def job(self, job_id: str) -> pb.Job | None:
        path = self._folder(job_id) / "job.pb"
        return pb.Job.FromString(path.read_bytes()) if path.exists() else None

    def add_job(self, job: pb.Job) -> list[pb.Document]:
        """Remember ``job``; returns the documents that arrived before it, if it takes them."""
        folder = self._folder(job.job_id)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "job.pb").write_bytes(job.SerializeToString())
        parked = folder / "parked.jsonl"
        if not parked.exists():
            return []
        if not takes_topic_documents(job):
            parked.unlink()
            return []
        return [json_format.Parse(line, pb.Document()) for line in parked.read_text(encoding="utf-8").splitlines()]

    def park(self, document: pb.Document) -> None:
        folder = self._folder(document.job_id)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "parked.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json_format.MessageToJson(document, indent=None) + "\n")

    def plan(self, job: pb.Job, documents: list[pb.Document]) -> list[tuple[pb.CorpusChunk, int]]:
        """Every chunk of ``documents`` with its number of queries: one for the chunks already
        planned, then for new ones while the job's budget lasts, none for the rest."""
        path = self._folder(job.job_id) / "planned.txt"
        planned = set(path.read_text().split()) if path.exists() else set()
        words = corpus_chunk_words(job.spec)
        chosen, new_ids = [], []
        for document in documents:
            source = SourceDocument(document.doc_id, document.title, document.text, dict(document.metadata))
            for chunk in chunk_messages(job.job_id, source, words, document.collection or job.spec.collection):
                if chunk.chunk_id not in planned and len(planned) < job.spec.corpus_queries:
                    planned.add(chunk.chunk_id)
                    new_ids.append(chunk.chunk_id)
                chosen.append((chunk, 1 if chunk.chunk_id in planned else 0))
        if new_ids:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as handle:
                handle.write("".join(i + "\n" for i in new_ids))
        return chosen
