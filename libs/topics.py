"""Every Kafka topic the services use and every consumer group that reads them: the one place
where topic names, message types, keys, partitions, retention and cleanup policy are declared.

The chart renders its topic Job, Strimzi KafkaTopic CRs and KEDA triggers from this list
(tools/topics.py writes it to charts/embedforge/files/topics.yaml). Services only check at
start that the topics they use exist (libs.kafka.require_topics); creating them is for local
mode and tests (libs.kafka.ensure_topics, ``python -m libs.local topics``).
"""

from dataclasses import dataclass, replace
from typing import Literal

from google.protobuf.message import Message

from embedforge.v1 import messages_pb2 as pb

WEEK_MS = 7 * 24 * 3600 * 1000
FOREVER = -1


@dataclass(frozen=True)
class Topic:
    """A topic and the protobuf message its values carry. ``key``: what the record key is.
    ``cleanup_policy`` compact keeps the newest record per key, so it suits only topics whose
    key is the record's identity. ``partitions_of``: a topic whose partition count this one
    always has (records go to the partition number of a record there)."""

    name: str
    message_type: type[Message]
    key: str
    partitions: int = 6
    retention_ms: int = WEEK_MS
    cleanup_policy: Literal["delete", "compact"] = "delete"
    partitions_of: str = ""


JOBS = Topic("forge.jobs", pb.Job, "job_id", partitions=3)
TASKS = Topic("forge.tasks", pb.Task, "task_id")
CORPUS_CHUNKS = Topic("forge.corpus.chunks", pb.CorpusChunk, "chunk_id")
EXAMPLES_RAW = Topic("forge.examples.raw", pb.RawExample, "example_id")
# Keys carry the job (curated_key, rejected_key below): the same text in two jobs is two records.
EXAMPLES_CURATED = Topic("forge.examples.curated", pb.CuratedExample, "job_id/content_hash", retention_ms=FOREVER)
EXAMPLES_REJECTED = Topic("forge.examples.rejected", pb.RejectedExample, "job_id/example_id")
MODELS = Topic("forge.models", pb.ModelReady, "model_id", partitions=1, retention_ms=FOREVER, cleanup_policy="compact")
DOCUMENTS = Topic("forge.documents", pb.Document, "doc_id")
DEAD_LETTER = Topic("forge.deadletter", pb.DeadLetter, "the failed record's key", partitions=1)
# The curator's own: candidates are keyed by job so one dedup owner sees all of a job; each
# accepted example goes to the dedup-log partition of its candidate, so the log needs the same count.
CURATOR_CANDIDATES = Topic("forge.curator.candidates", pb.CurationCandidate, "job_id")
CURATOR_DEDUP_LOG = Topic(
    "forge.curator.dedup-log",
    pb.CuratedExample,
    "job_id/content_hash",
    partitions=CURATOR_CANDIDATES.partitions,
    retention_ms=FOREVER,
    cleanup_policy="compact",
    partitions_of=CURATOR_CANDIDATES.name,
)

ALL_TOPICS = (
    JOBS,
    TASKS,
    CORPUS_CHUNKS,
    EXAMPLES_RAW,
    EXAMPLES_CURATED,
    EXAMPLES_REJECTED,
    MODELS,
    DOCUMENTS,
    DEAD_LETTER,
    CURATOR_CANDIDATES,
    CURATOR_DEDUP_LOG,
)


@dataclass(frozen=True)
class ConsumerGroup:
    """A consumer group id (the run-time topic prefix is prepended) and the topics it reads.
    ``per_replica``: each replica joins its own group ``<id>-<replica>`` and so sees every record."""

    id: str
    topics: tuple[Topic, ...]
    per_replica: bool = False

    def for_replica(self, replica: str) -> "ConsumerGroup":
        return replace(self, id=f"{self.id}-{replica}", per_replica=False)


TASKGEN_GROUP = ConsumerGroup("taskgen", (JOBS, EXAMPLES_RAW, EXAMPLES_CURATED, EXAMPLES_REJECTED, MODELS))
EXAMPLEGEN_GROUP = ConsumerGroup("examplegen", (TASKS, CORPUS_CHUNKS, JOBS, DOCUMENTS))
CURATOR_VALIDATE_GROUP = ConsumerGroup("curator", (EXAMPLES_RAW,))
CURATOR_DEDUP_GROUP = ConsumerGroup("curator-dedup", (CURATOR_CANDIDATES,))
# The trainer keeps each job's chunks to mine hard negatives from; the embedder indexes them
# (and the documents of no job, which it cuts with the same libs.corpus.chunk_document).
TRAINER_GROUP = ConsumerGroup("trainer", (EXAMPLES_CURATED, EXAMPLES_REJECTED, JOBS, CORPUS_CHUNKS))
EMBEDDER_DOCUMENTS_GROUP = ConsumerGroup("embedder", (DOCUMENTS, CORPUS_CHUNKS))
EMBEDDER_MODELS_GROUP = ConsumerGroup("embedder-models", (MODELS,), per_replica=True)


@dataclass(frozen=True)
class ServiceTopics:
    """What one service reads in its consumer groups, writes, and reads without a group."""

    groups: tuple[ConsumerGroup, ...]
    produces: tuple[Topic, ...]
    reads: tuple[Topic, ...] = ()

    @property
    def uses(self) -> tuple[Topic, ...]:
        used = {t.name for g in self.groups for t in g.topics} | {t.name for t in self.produces + self.reads}
        return tuple(t for t in ALL_TOPICS if t.name in used)


SERVICES = {
    "taskgen": ServiceTopics((TASKGEN_GROUP,), (JOBS, TASKS, DOCUMENTS, DEAD_LETTER)),
    "examplegen": ServiceTopics((EXAMPLEGEN_GROUP,), (EXAMPLES_RAW, CORPUS_CHUNKS, DEAD_LETTER)),
    "curator": ServiceTopics(
        (CURATOR_VALIDATE_GROUP, CURATOR_DEDUP_GROUP),
        (EXAMPLES_RAW, CURATOR_CANDIDATES, CURATOR_DEDUP_LOG, EXAMPLES_CURATED, EXAMPLES_REJECTED, DEAD_LETTER),
        reads=(CURATOR_DEDUP_LOG, EXAMPLES_CURATED, EXAMPLES_REJECTED),
    ),
    "trainer": ServiceTopics((TRAINER_GROUP,), (MODELS, DEAD_LETTER)),
    "embedder": ServiceTopics((EMBEDDER_DOCUMENTS_GROUP, EMBEDDER_MODELS_GROUP), (DEAD_LETTER,)),
}


def curated_key(example: pb.CuratedExample) -> str:
    """Key of a curated example: one per job and content, so two jobs' equal texts stay apart under compaction."""
    return f"{example.job_id}/{example.content_hash}"


def rejected_key(example: pb.RejectedExample) -> str:
    return f"{example.job_id}/{example.example_id}"
