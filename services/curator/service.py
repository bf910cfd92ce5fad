"""Curator: consume forge.examples.raw; produce forge.examples.curated and forge.examples.rejected.

Validation runs in one consumer group over the raw topic; dedup runs in a second group over
the internal candidates topic, keyed by job (see stages.py). The gRPC API reads the output
topics, so it answers the same on every replica.
"""

import uuid
from collections.abc import Iterator

from kafka import KafkaConsumer

from embedforge.v1 import curator_pb2 as api
from embedforge.v1 import curator_pb2_grpc as api_grpc
from libs import ids, topics
from libs.grpc import GrpcService, InvalidArgument, Unavailable
from libs.kafka import ConsumerLoop, ProtoProducer, Subscription, physical_name
from libs.service import ServiceParts
from services.curator.consistency import ConsistencyScorer
from services.curator.dedup import DedupIndex
from services.curator.flagembedding import lines_of, raw_examples, to_line
from services.curator.settings import CuratorSettings
from services.curator.stages import DedupLogReader, DedupStage, ValidateStage
from services.curator.validation import Validator
from services.curator.views import OutcomeView, scan

EXPORT_BLOCK_BYTES = 1 << 20


class CuratorServicer(api_grpc.CuratorServiceServicer):
    def __init__(self, settings: CuratorSettings, view: OutcomeView, producer: ProtoProducer):
        self.settings = settings
        self.view = view
        self.producer = producer

    @staticmethod
    def _job_id(job_id: str) -> str:
        if not job_id:
            raise InvalidArgument("job_id is required")
        return ids.check(job_id, "job_id")

    def GetDatasetStats(self, request: api.GetDatasetStatsRequest, context) -> api.GetDatasetStatsResponse:
        try:
            return self.view.stats(self._job_id(request.job_id), self.settings.view_timeout_s)
        except TimeoutError as exc:
            raise Unavailable(str(exc)) from None

    def ListRejected(self, request: api.ListRejectedRequest, context) -> Iterator[api.ListRejectedResponse]:
        job_id, seen = self._job_id(request.job_id), set()
        if request.limit < 0:
            raise InvalidArgument("limit must be >= 0 (0: no limit)")
        for example in scan(self.settings.kafka, topics.EXAMPLES_REJECTED):
            key = topics.rejected_key(example)
            if example.job_id != job_id or key in seen or (request.reason and example.reason != request.reason):
                continue
            seen.add(key)
            yield api.ListRejectedResponse(example=example)
            if request.limit and len(seen) >= request.limit:
                return

    def ExportDataset(self, request: api.ExportDatasetRequest, context) -> Iterator[api.ExportDatasetResponse]:
        job_id, seen, block = self._job_id(request.job_id), set(), []
        size = 0
        for example in scan(self.settings.kafka, topics.EXAMPLES_CURATED):
            key = topics.curated_key(example)
            if example.job_id != job_id or key in seen:
                continue
            seen.add(key)
            line = (to_line(example) + "\n").encode()
            block.append(line)
            size += len(line)
            if size >= EXPORT_BLOCK_BYTES:
                yield api.ExportDatasetResponse(jsonl=b"".join(block))
                block, size = [], 0
        if block:
            yield api.ExportDatasetResponse(jsonl=b"".join(block))

    def ImportDataset(self, request_iterator, context) -> api.ImportDatasetResponse:
        job_id, lines = lines_of(request_iterator)
        self._job_id(job_id)
        import_id = uuid.uuid4().hex
        examples = raw_examples(job_id, import_id, lines)
        self.view.expect(import_id, [e.example_id for e in examples])
        futures = [self.producer.send(topics.EXAMPLES_RAW, e.example_id, e) for e in examples]
        self.producer.flush()
        for future in futures:
            future.get(timeout=30)
        outcomes = self.view.await_outcomes(import_id, self.settings.import_timeout_s)
        accepted = sum(1 for o in outcomes.values() if o == "accepted")
        rejected = sum(1 for o in outcomes.values() if o and o != "accepted")
        return api.ImportDatasetResponse(received=len(examples), accepted=accepted, rejected=rejected)


def check_dedup_partitions(settings: CuratorSettings) -> None:
    """The dedup log must have the candidates topic's partition count (libs/topics.py), or the
    dedup state of a job would not be where the owner of its candidates reads it."""
    consumer = KafkaConsumer(**settings.kafka.client_kwargs())
    try:
        wanted = (topics.CURATOR_CANDIDATES, topics.CURATOR_DEDUP_LOG)
        counts = {
            physical_name(settings.kafka, t): len(consumer.partitions_for_topic(physical_name(settings.kafka, t)) or ())
            for t in wanted
        }
    finally:
        consumer.close()
    if len(set(counts.values())) != 1:
        raise RuntimeError(f"partition counts differ {counts}: dedup state would not follow its candidates")


def build(settings: CuratorSettings) -> ServiceParts:
    check_dedup_partitions(settings)
    producer = ProtoProducer(settings.kafka, client_id="curator")
    scorer = (
        ConsistencyScorer(settings.consistency_model, settings.consistency_batch_size, settings.torch_threads)
        if settings.consistency_model
        else None
    )
    validate = ValidateStage(Validator(settings.validation), scorer)
    index = DedupIndex(settings.dedup.near_duplicate_threshold, settings.dedup.num_perm, settings.dedup.max_bytes)
    reader = DedupLogReader(settings.kafka, index)
    dedup = DedupStage(index, reader)
    view = OutcomeView(settings.kafka).start()
    servicer = CuratorServicer(settings, view, producer)
    return ServiceParts(
        grpc_services=[GrpcService.generated(api_grpc, api, "CuratorService", servicer)],
        consumers=[
            ConsumerLoop(
                settings.kafka,
                topics.CURATOR_VALIDATE_GROUP,
                [Subscription(topics.EXAMPLES_RAW, validate.handle, batch=True)],
                producer,
            ),
            ConsumerLoop(
                settings.kafka,
                topics.CURATOR_DEDUP_GROUP,
                [Subscription(topics.CURATOR_CANDIDATES, dedup.handle, batch=True)],
                producer,
            ),
        ],
        producer=producer,
        on_shutdown=[view.stop, reader.close],
    )
