"""Job intake: SubmitJob publishes to forge.jobs; the jobs consumer registers each job."""

import threading
import uuid

from embedforge.v1 import messages_pb2 as pb
from embedforge.v1 import taskgen_pb2 as api
from embedforge.v1 import taskgen_pb2_grpc as api_grpc
from libs import topics
from libs.grpc import GrpcService, InvalidArgument, NotFound
from libs.kafka import ConsumerLoop, Outgoing, ProtoProducer, Received, Subscription, per_message
from libs.service import ServiceParts
from services.taskgen.settings import TaskgenSettings

WATCH_POLL_S = 0.5


class JobRegistry:
    """Jobs this replica has seen, with their status; changes wake watchers."""

    def __init__(self):
        self._jobs: dict[str, api.JobStatus] = {}
        self._changed = threading.Condition()

    def upsert(self, job: pb.Job) -> api.JobStatus:
        with self._changed:
            status = self._jobs.get(job.job_id)
            if status is None:
                status = api.JobStatus(job_id=job.job_id, spec=job.spec, state=api.JOB_STATE_QUEUED, created_at=job.created_at)
                status.updated_at.GetCurrentTime()
                self._jobs[job.job_id] = status
                self._changed.notify_all()
            return status

    def get(self, job_id: str) -> api.JobStatus:
        with self._changed:
            if job_id not in self._jobs:
                raise NotFound(f"job {job_id!r} not found")
            status = api.JobStatus()
            status.CopyFrom(self._jobs[job_id])
            return status

    def list(self, limit: int) -> list[api.JobStatus]:
        with self._changed:
            jobs = sorted(self._jobs.values(), key=lambda j: j.created_at.ToNanoseconds(), reverse=True)
            return jobs[: limit or None]

    def wait_for_change(self, timeout_s: float) -> None:
        with self._changed:
            self._changed.wait(timeout_s)


class TaskgenServicer(api_grpc.TaskgenServiceServicer):
    def __init__(self, registry: JobRegistry, producer: ProtoProducer):
        self.registry = registry
        self.producer = producer

    def SubmitJob(self, request: api.SubmitJobRequest, context) -> api.SubmitJobResponse:
        if not request.spec.domain.strip():
            raise InvalidArgument("spec.domain must describe the domain")
        job = pb.Job(job_id=request.job_id or uuid.uuid4().hex, spec=request.spec)
        job.created_at.GetCurrentTime()
        self.producer.send_and_wait(topics.JOBS, job.job_id, job)
        return api.SubmitJobResponse(job=self.registry.upsert(job))

    def GetJob(self, request: api.GetJobRequest, context) -> api.GetJobResponse:
        return api.GetJobResponse(job=self.registry.get(request.job_id))

    def ListJobs(self, request: api.ListJobsRequest, context) -> api.ListJobsResponse:
        return api.ListJobsResponse(jobs=self.registry.list(request.limit))

    def WatchJob(self, request: api.WatchJobRequest, context):
        last = None
        while context.is_active():
            status = self.registry.get(request.job_id)
            if status != last:
                yield api.WatchJobResponse(job=status)
                last = status
            if status.state in (api.JOB_STATE_SUCCEEDED, api.JOB_STATE_FAILED):
                return
            self.registry.wait_for_change(WATCH_POLL_S)


def build(settings: TaskgenSettings) -> ServiceParts:
    registry = JobRegistry()
    producer = ProtoProducer(settings.kafka, client_id="taskgen")

    def register_job(record: Received) -> list[Outgoing]:
        registry.upsert(record.message)
        return []

    consumer = ConsumerLoop(settings.kafka, "taskgen", [Subscription(topics.JOBS, per_message(register_job))], producer)
    servicer = TaskgenServicer(registry, producer)
    return ServiceParts(
        grpc_services=[GrpcService(api_grpc.add_TaskgenServiceServicer_to_server, servicer, api.DESCRIPTOR.services_by_name["TaskgenService"].full_name)],
        consumers=[consumer],
        producer=producer,
    )
