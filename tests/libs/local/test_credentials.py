"""Local mode's CA, server certificate and admin token: made once, kept, and what every local
service and examples/client.py use."""

import subprocess
import sys

import pytest

from embedforge.v1 import taskgen_pb2 as api
from embedforge.v1 import taskgen_pb2_grpc as api_grpc
from libs.grpc import GrpcServer, GrpcService
from libs.local.credentials import ensure_credentials
from libs.local.runtime import REPO_ROOT, python_env
from services.taskgen.settings import TaskgenSettings


class OneJob(api_grpc.TaskgenServiceServicer):
    def ListJobs(self, request, context):
        return api.ListJobsResponse(jobs=[api.JobStatus(job_id="job-1")])


@pytest.fixture
def credentials(tmp_path):
    return ensure_credentials(tmp_path / "run")


@pytest.fixture
def taskgen(credentials, monkeypatch):
    """A server configured as a local service is: from the environment the runtime gives it."""
    for name, value in credentials.service_env("TASKGEN_").items():
        monkeypatch.setenv(name, value)
    settings = TaskgenSettings()
    server = GrpcServer(
        [GrpcService.generated(api_grpc, api, "TaskgenService", OneJob())],
        "127.0.0.1",
        0,
        tls=settings.tls,
        auth=settings.auth,
    )
    server.start()
    yield server
    server.stop(0)


def test_credentials_are_private_and_kept_across_runs(credentials, tmp_path):
    assert {p.name for p in credentials.folder.iterdir()} == {"ca.crt", "server.crt", "server.key", "tokens", "admin.token"}
    assert credentials.folder.stat().st_mode & 0o777 == 0o700
    for path in (credentials.key_file, credentials.token_file, credentials.tokens_file):
        assert path.stat().st_mode & 0o777 == 0o600
    assert ensure_credentials(tmp_path / "run").token == credentials.token


def test_missing_files_are_made_anew_with_a_new_token(credentials, tmp_path):
    token = credentials.token
    credentials.cert_file.unlink()
    assert ensure_credentials(tmp_path / "run").token != token


def client(credentials, server, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "examples/client.py", "--taskgen", f"127.0.0.1:{server.port}", *args, "jobs"],
        cwd=REPO_ROOT,
        env=python_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_example_client_calls_a_local_service_with_the_local_ca_and_token(credentials, taskgen):
    listed = client(credentials, taskgen, "--ca-file", str(credentials.ca_file), "--token-file", str(credentials.token_file))
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("job-1 ")


def test_example_client_without_the_token_is_refused(credentials, taskgen, tmp_path):
    wrong = tmp_path / "wrong.token"
    wrong.write_text("not-the-local-admin-token\n")
    refused = client(credentials, taskgen, "--ca-file", str(credentials.ca_file), "--token-file", str(wrong))
    assert refused.returncode == 1
    assert "UNAUTHENTICATED: invalid bearer token" in refused.stderr


def test_usage_shows_a_grpcurl_line_with_the_ca_and_the_token_file(credentials):
    usage = credentials.usage("127.0.0.1:50051")
    assert (
        f'grpcurl -cacert {credentials.ca_file} -H "authorization: Bearer $(cat {credentials.token_file})" 127.0.0.1:50051 list'
        in usage
    )
    assert credentials.token not in usage
