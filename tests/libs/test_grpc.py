"""The gRPC server base: error mapping, health, and a drain that lets in-flight calls finish."""

import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from embedforge.v1 import taskgen_pb2 as api
from embedforge.v1 import taskgen_pb2_grpc as api_grpc
from libs.grpc import GrpcServer, GrpcService, InvalidArgument, NotFound


class ScriptedServicer(api_grpc.TaskgenServiceServicer):
    """Behaviour chosen by the job id, to exercise each error path."""

    def __init__(self):
        self.started = threading.Event()

    def GetJob(self, request, context):
        if request.job_id == "invalid":
            raise InvalidArgument("job_id is malformed")
        if request.job_id == "value-error":
            raise ValueError("limit must be positive")
        if request.job_id == "missing":
            raise NotFound("job 'missing' not found")
        if request.job_id == "bug":
            raise KeyError("secret internals")
        if request.job_id == "slow":
            self.started.set()
            time.sleep(1.0)
        return api.GetJobResponse(job=api.JobStatus(job_id=request.job_id))

    def WatchJob(self, request, context):
        yield api.WatchJobResponse(job=api.JobStatus(job_id=request.job_id))
        raise InvalidArgument("stream broke on purpose")


@pytest.fixture
def server():
    servicer = ScriptedServicer()
    running = GrpcServer([GrpcService.generated(api_grpc, api, "TaskgenService", servicer)], "127.0.0.1", 0)
    running.start()
    running.set_serving(True)
    running.servicer = servicer
    yield running
    running.stop(0)


def stub(server):
    return api_grpc.TaskgenServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))


@pytest.mark.parametrize(
    ("job_id", "code", "message"),
    [
        ("invalid", grpc.StatusCode.INVALID_ARGUMENT, "job_id is malformed"),
        ("value-error", grpc.StatusCode.INVALID_ARGUMENT, "limit must be positive"),
        ("missing", grpc.StatusCode.NOT_FOUND, "job 'missing' not found"),
        ("bug", grpc.StatusCode.INTERNAL, "internal error (logged by the service)"),
    ],
)
def test_handler_exceptions_map_to_status_codes_with_messages(server, job_id, code, message):
    with pytest.raises(grpc.RpcError) as error:
        stub(server).GetJob(api.GetJobRequest(job_id=job_id))
    assert error.value.code() == code
    assert error.value.details() == message


def test_streaming_handler_errors_are_mapped_after_earlier_responses(server):
    responses = stub(server).WatchJob(api.WatchJobRequest(job_id="j"))
    assert next(responses).job.job_id == "j"
    with pytest.raises(grpc.RpcError) as error:
        next(responses)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_health_reports_each_service_and_not_serving_while_draining(server):
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
    for name in ("", "embedforge.v1.TaskgenService"):
        assert health.Check(health_pb2.HealthCheckRequest(service=name)).status == health_pb2.HealthCheckResponse.SERVING
    server.set_serving(False)
    assert health.Check(health_pb2.HealthCheckRequest(service="")).status == health_pb2.HealthCheckResponse.NOT_SERVING


def test_stop_lets_an_in_flight_call_finish_within_the_grace_period(server):
    result = {}
    call = threading.Thread(target=lambda: result.update(job=stub(server).GetJob(api.GetJobRequest(job_id="slow")).job.job_id))
    call.start()
    assert server.servicer.started.wait(5)
    server.stop(grace_s=5)
    call.join()
    assert result == {"job": "slow"}
