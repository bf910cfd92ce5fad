"""Kafka topics and the one protobuf message type each carries (the data-flow contract)."""

from dataclasses import dataclass

from google.protobuf.message import Message

from embedforge.v1 import messages_pb2 as pb


@dataclass(frozen=True)
class Topic:
    name: str
    message_type: type[Message]
    partitions: int = 6
    retention_ms: int = 7 * 24 * 3600 * 1000


JOBS = Topic("forge.jobs", pb.Job, partitions=3)
TASKS = Topic("forge.tasks", pb.Task)
CORPUS_CHUNKS = Topic("forge.corpus.chunks", pb.CorpusChunk)
EXAMPLES_RAW = Topic("forge.examples.raw", pb.RawExample)
EXAMPLES_CURATED = Topic("forge.examples.curated", pb.CuratedExample, retention_ms=-1)
EXAMPLES_REJECTED = Topic("forge.examples.rejected", pb.RejectedExample)
MODELS = Topic("forge.models", pb.ModelReady, partitions=1, retention_ms=-1)
DOCUMENTS = Topic("forge.documents", pb.Document)
DEAD_LETTER = Topic("forge.deadletter", pb.DeadLetter, partitions=1)

ALL_TOPICS = (JOBS, TASKS, CORPUS_CHUNKS, EXAMPLES_RAW, EXAMPLES_CURATED, EXAMPLES_REJECTED, MODELS, DOCUMENTS, DEAD_LETTER)


def curated_key(example: pb.CuratedExample) -> str:
    """Key of a curated example: one per job and content, so two jobs' equal texts stay apart under compaction."""
    return f"{example.job_id}/{example.content_hash}"


def rejected_key(example: pb.RejectedExample) -> str:
    return f"{example.job_id}/{example.example_id}"
