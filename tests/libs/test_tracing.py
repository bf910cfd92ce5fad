"""One trace crosses the Kafka hop: gRPC handler span -> produced message -> consumer span."""

import threading
import time
import uuid

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from embedforge.v1 import messages_pb2 as pb
from embedforge.v1 import taskgen_pb2 as api
from embedforge.v1 import taskgen_pb2_grpc as api_grpc
from libs import topics
from libs.grpc import GrpcServer, GrpcService, traced_channel
from libs.kafka import ConsumerLoop, ProtoProducer, Subscription, per_message
from libs.topics import ConsumerGroup


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


class PublishingServicer(api_grpc.TaskgenServiceServicer):
    """A handler that produces a Job: the producing half of the trace."""

    def __init__(self, producer: ProtoProducer):
        self.producer = producer

    def SubmitJob(self, request, context):
        job = pb.Job(job_id=request.job_id, spec=request.spec)
        self.producer.send_and_wait(topics.JOBS, job.job_id, job)
        return api.SubmitJobResponse(job=api.JobStatus(job_id=job.job_id))


def test_grpc_handler_span_and_consumer_span_share_one_trace(kafka_settings, spans):
    producer = ProtoProducer(kafka_settings, client_id="test")
    server = GrpcServer(
        [GrpcService.generated(api_grpc, api, "TaskgenService", PublishingServicer(producer))],
        "127.0.0.1",
        0,
    )
    server.start()
    consumed = threading.Event()
    stop = threading.Event()
    loop = ConsumerLoop(
        kafka_settings,
        ConsumerGroup("trace-test", (topics.JOBS,)),
        [Subscription(topics.JOBS, per_message(lambda r: consumed.set() or []))],
        producer,
    )
    thread = threading.Thread(target=loop.run, args=(stop,))
    thread.start()
    try:
        job_id = uuid.uuid4().hex
        api_grpc.TaskgenServiceStub(traced_channel(f"127.0.0.1:{server.port}")).SubmitJob(
            api.SubmitJobRequest(job_id=job_id, spec=pb.JobSpec(domain="law"))
        )
        assert consumed.wait(30)
        time.sleep(0.2)
    finally:
        stop.set()
        thread.join()
        server.stop(1)
    finished = spans.get_finished_spans()
    handler = next(s for s in finished if s.name == "embedforge.v1.TaskgenService/SubmitJob")
    consumer = next(s for s in finished if s.name == f"process {topics.JOBS.name}")
    assert consumer.context.trace_id == handler.context.trace_id
    assert consumer.parent is not None and consumer.parent.span_id == handler.context.span_id
