"""Authenticated, encrypted APIs: real gRPC servers on loopback with real TLS and bearer tokens.

The servers hold every service's generated base servicer, whose methods answer UNIMPLEMENTED:
a call that gets UNIMPLEMENTED went through authentication and authorization.
"""

import importlib
import os
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from embedforge.v1 import embedder_pb2, embedder_pb2_grpc, taskgen_pb2, taskgen_pb2_grpc
from libs.auth import METHOD_ROLES, RELOAD_CHECK_S, Role, TokenFileError, TokenStore, allowed_roles, parse_tokens
from libs.certs import new_ca, new_certificate
from libs.grpc import GrpcServer, GrpcService, traced_channel
from libs.local.broker import free_port
from libs.settings import AuthSettings, TlsSettings

PROTO_MODULES = ("taskgen", "examplegen", "curator", "trainer", "embedder")
TOKENS = {role: f"{role.value}-token-0123456789abcdef" for role in Role}
ALLOWED = grpc.StatusCode.UNIMPLEMENTED  # the base servicer's answer: the call got through


def all_services() -> list[GrpcService]:
    services = []
    for name in PROTO_MODULES:
        api = importlib.import_module(f"embedforge.v1.{name}_pb2")
        api_grpc = importlib.import_module(f"embedforge.v1.{name}_pb2_grpc")
        (service,) = api.DESCRIPTOR.services_by_name.values()
        servicer = getattr(api_grpc, f"{service.name}Servicer")()
        services.append(GrpcService.generated(api_grpc, api, service.name, servicer))
    return services


def write_tokens(path: Path, tokens: dict[Role, str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(f"{role.value}-client {role.value} {token}\n" for role, token in tokens.items()))
    tmp.replace(path)  # a new inode, as a Secret volume's symlink swap gives


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pki")
    ca = new_ca("test CA")
    (folder / "ca.crt").write_bytes(ca.cert_pem)
    new_certificate(ca, "server", ["localhost", "127.0.0.1"]).write(folder / "server.crt", folder / "server.key")
    new_certificate(ca, "client", ["client"]).write(folder / "client.crt", folder / "client.key")
    other = new_ca("another CA")
    (folder / "other-ca.crt").write_bytes(other.cert_pem)
    new_certificate(other, "server", ["localhost", "127.0.0.1"]).write(folder / "other-server.crt", folder / "other-server.key")
    return {path.name: path for path in folder.iterdir()}


def server_tls(pki, mtls: bool = False) -> TlsSettings:
    return TlsSettings(
        enabled=True,
        cert_file=str(pki["server.crt"]),
        key_file=str(pki["server.key"]),
        ca_file=str(pki["ca.crt"]),
        require_client_cert=mtls,
    )


def client_tls(pki, ca: str = "ca.crt", client_cert: bool = False) -> TlsSettings:
    cert, key = (str(pki["client.crt"]), str(pki["client.key"])) if client_cert else ("", "")
    return TlsSettings(enabled=True, ca_file=str(pki[ca]), cert_file=cert, key_file=key)


@pytest.fixture
def tokens_file(tmp_path) -> Path:
    path = tmp_path / "tokens"
    write_tokens(path, TOKENS)
    return path


def start(tls: TlsSettings, auth: AuthSettings, health_port: int = 0) -> GrpcServer:
    server = GrpcServer(all_services(), "127.0.0.1", 0, tls=tls, auth=auth, health_port=health_port)
    server.start()
    server.set_serving(True)
    return server


@pytest.fixture
def server(pki, tokens_file):
    running = start(server_tls(pki), AuthSettings(enabled=True, tokens_file=str(tokens_file)))
    yield running
    running.stop(0)


def taskgen(server: GrpcServer, pki, token: str = "") -> taskgen_pb2_grpc.TaskgenServiceStub:
    return taskgen_pb2_grpc.TaskgenServiceStub(traced_channel(f"127.0.0.1:{server.port}", client_tls(pki), token))


def code_of(call) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def error_of(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def proto_methods() -> set[str]:
    methods = set()
    for name in PROTO_MODULES:
        for service in importlib.import_module(f"embedforge.v1.{name}_pb2").DESCRIPTOR.services_by_name.values():
            methods |= {f"/{service.full_name}/{method.name}" for method in service.methods}
    return methods


def test_every_rpc_in_the_protos_has_its_roles_in_the_table():
    table = {method for method in METHOD_ROLES if method.startswith("/embedforge.")}
    assert proto_methods() == table


def test_admin_may_call_everything_and_search_only_embedder_rpcs():
    assert all(Role.ADMIN in roles for roles in METHOD_ROLES.values())
    searchable = {m for m in proto_methods() if Role.SEARCH in allowed_roles(m)}
    assert searchable == {f"/embedforge.v1.EmbedderService/{name}" for name in ("Embed", "Search", "GetModelInfo")}
    assert allowed_roles("/embedforge.v1.TaskgenService/NotInTheTable") == {Role.ADMIN}


def test_read_role_never_changes_anything():
    writes = {"SubmitJob", "UploadDocuments", "ImportDataset", "StartRun", "CancelRun"}
    for method in proto_methods():
        assert (Role.READ in allowed_roles(method)) == (method.rsplit("/", 1)[1] not in writes), method


def test_a_call_without_a_token_is_unauthenticated(server, pki):
    error = error_of(lambda: taskgen(server, pki).ListJobs(taskgen_pb2.ListJobsRequest()))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "authorization: Bearer" in error.details()


def test_a_call_with_an_unknown_token_is_unauthenticated(server, pki):
    error = error_of(lambda: taskgen(server, pki, "not-a-known-token-at-all").ListJobs(taskgen_pb2.ListJobsRequest()))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error.details() == "invalid bearer token"


def test_a_search_token_may_not_submit_a_job(server, pki):
    error = error_of(lambda: taskgen(server, pki, TOKENS[Role.SEARCH]).SubmitJob(taskgen_pb2.SubmitJobRequest()))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "'search-client' has role search" in error.details() and "SubmitJob needs one of: admin, submit" in error.details()
    assert TOKENS[Role.SEARCH] not in error.details()


def test_a_search_token_may_embed(server, pki):
    embedder = embedder_pb2_grpc.EmbedderServiceStub(
        traced_channel(f"127.0.0.1:{server.port}", client_tls(pki), TOKENS[Role.SEARCH])
    )
    assert code_of(lambda: embedder.Embed(embedder_pb2.EmbedRequest(texts=["x"]))) == ALLOWED


def test_a_read_token_may_read_but_not_submit(server, pki):
    stub = taskgen(server, pki, TOKENS[Role.READ])
    assert code_of(lambda: stub.ListJobs(taskgen_pb2.ListJobsRequest())) == ALLOWED
    assert code_of(lambda: list(stub.WatchJob(taskgen_pb2.WatchJobRequest(job_id="j")))) == ALLOWED
    assert code_of(lambda: stub.SubmitJob(taskgen_pb2.SubmitJobRequest())) == grpc.StatusCode.PERMISSION_DENIED


def test_a_server_stream_refuses_a_missing_token_like_a_unary_call(server, pki):
    assert (
        code_of(lambda: list(taskgen(server, pki).WatchJob(taskgen_pb2.WatchJobRequest(job_id="j"))))
        == grpc.StatusCode.UNAUTHENTICATED
    )


def test_health_is_open_and_reflection_needs_a_token_by_default(server, pki):
    channel = traced_channel(f"127.0.0.1:{server.port}", client_tls(pki))
    response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert response.status == health_pb2.HealthCheckResponse.SERVING
    reflection = channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        request_serializer=lambda m: m,
        response_deserializer=lambda b: b,
    )
    assert code_of(lambda: list(reflection(iter([b""])))) == grpc.StatusCode.UNAUTHENTICATED


def test_health_needs_a_token_when_not_configured_open(pki, tokens_file):
    server = start(server_tls(pki), AuthSettings(enabled=True, tokens_file=str(tokens_file), open_health=False))
    try:

        def check(token):
            channel = traced_channel(f"127.0.0.1:{server.port}", client_tls(pki), token)
            return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())

        assert code_of(lambda: check("")) == grpc.StatusCode.UNAUTHENTICATED
        assert check(TOKENS[Role.SEARCH]).status == health_pb2.HealthCheckResponse.SERVING
    finally:
        server.stop(0)


def test_the_plaintext_health_port_serves_health_only(pki, tokens_file):
    server = start(
        server_tls(pki), AuthSettings(enabled=True, tokens_file=str(tokens_file), open_health=False), health_port=free_port()
    )
    try:
        plain = grpc.insecure_channel(f"127.0.0.1:{server.health_port}")
        assert (
            health_pb2_grpc.HealthStub(plain).Check(health_pb2.HealthCheckRequest(), timeout=5).status
            == health_pb2.HealthCheckResponse.SERVING
        )
        assert (
            code_of(lambda: taskgen_pb2_grpc.TaskgenServiceStub(plain).ListJobs(taskgen_pb2.ListJobsRequest(), timeout=5))
            == grpc.StatusCode.UNIMPLEMENTED
        )
        server.set_serving(False)
        assert (
            health_pb2_grpc.HealthStub(plain).Check(health_pb2.HealthCheckRequest(), timeout=5).status
            == health_pb2.HealthCheckResponse.NOT_SERVING
        )
    finally:
        server.stop(0)


def test_a_plaintext_client_cannot_talk_to_a_tls_server(server):
    assert (
        code_of(
            lambda: taskgen_pb2_grpc.TaskgenServiceStub(traced_channel(f"127.0.0.1:{server.port}")).ListJobs(
                taskgen_pb2.ListJobsRequest(), timeout=5
            )
        )
        == grpc.StatusCode.UNAVAILABLE
    )


def test_a_client_refuses_a_server_certificate_from_another_ca(server, pki):
    stub = taskgen_pb2_grpc.TaskgenServiceStub(
        traced_channel(f"127.0.0.1:{server.port}", client_tls(pki, ca="other-ca.crt"), TOKENS[Role.ADMIN])
    )
    assert code_of(lambda: stub.ListJobs(taskgen_pb2.ListJobsRequest(), timeout=5)) == grpc.StatusCode.UNAVAILABLE


def test_a_token_is_never_sent_in_plaintext():
    with pytest.raises(ValueError, match="needs TLS"):
        traced_channel("127.0.0.1:1", TlsSettings(enabled=False), TOKENS[Role.ADMIN])


def test_auth_without_tls_refuses_to_start(tokens_file):
    with pytest.raises(ValueError, match="auth.enabled needs tls.enabled"):
        GrpcServer([], "127.0.0.1", 0, auth=AuthSettings(enabled=True, tokens_file=str(tokens_file)))


def test_a_rotated_token_file_takes_effect_without_a_restart(server, pki, tokens_file):
    old, new = TOKENS[Role.SUBMIT], "rotated-submit-token-fedcba9876543210"
    assert code_of(lambda: taskgen(server, pki, old).SubmitJob(taskgen_pb2.SubmitJobRequest())) == ALLOWED
    write_tokens(tokens_file, {**TOKENS, Role.SUBMIT: new})
    time.sleep(RELOAD_CHECK_S + 0.2)
    assert code_of(lambda: taskgen(server, pki, old).SubmitJob(taskgen_pb2.SubmitJobRequest())) == grpc.StatusCode.UNAUTHENTICATED
    assert code_of(lambda: taskgen(server, pki, new).SubmitJob(taskgen_pb2.SubmitJobRequest())) == ALLOWED


def test_a_broken_token_file_keeps_the_last_good_tokens(server, pki, tokens_file, caplog):
    tokens_file.write_text("admin admin s3cr3t-x\n")
    os.utime(tokens_file, ns=(time.time_ns(), time.time_ns() + 10**9))
    time.sleep(RELOAD_CHECK_S + 0.2)
    assert code_of(lambda: taskgen(server, pki, TOKENS[Role.ADMIN]).ListJobs(taskgen_pb2.ListJobsRequest())) == ALLOWED
    assert "keeping the previous tokens" in caplog.text and "s3cr3t-x" not in caplog.text


def test_a_renewed_certificate_is_served_on_the_next_connection(pki, tokens_file, tmp_path):
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_bytes(pki["server.crt"].read_bytes())
    key.write_bytes(pki["server.key"].read_bytes())
    tls = TlsSettings(enabled=True, cert_file=str(cert), key_file=str(key), ca_file=str(pki["ca.crt"]))
    server = start(tls, AuthSettings(enabled=True, tokens_file=str(tokens_file)))
    try:

        def call(ca):
            channel = traced_channel(f"127.0.0.1:{server.port}", client_tls(pki, ca=ca), TOKENS[Role.READ])
            return taskgen_pb2_grpc.TaskgenServiceStub(channel).ListJobs(taskgen_pb2.ListJobsRequest(), timeout=5)

        assert code_of(lambda: call("ca.crt")) == ALLOWED
        for source, target in ((pki["other-server.crt"], cert), (pki["other-server.key"], key)):
            tmp = target.with_name(target.name + ".new")
            tmp.write_bytes(source.read_bytes())
            tmp.replace(target)
        assert code_of(lambda: call("other-ca.crt")) == ALLOWED
        assert code_of(lambda: call("ca.crt")) == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(0)


def test_mtls_refuses_a_client_without_a_certificate(pki, tokens_file):
    server = start(server_tls(pki, mtls=True), AuthSettings(enabled=True, tokens_file=str(tokens_file)))
    try:
        target = f"127.0.0.1:{server.port}"
        without = taskgen_pb2_grpc.TaskgenServiceStub(traced_channel(target, client_tls(pki), TOKENS[Role.ADMIN]))
        assert code_of(lambda: without.ListJobs(taskgen_pb2.ListJobsRequest(), timeout=5)) == grpc.StatusCode.UNAVAILABLE
        with_cert = taskgen_pb2_grpc.TaskgenServiceStub(
            traced_channel(target, client_tls(pki, client_cert=True), TOKENS[Role.ADMIN])
        )
        assert code_of(lambda: with_cert.ListJobs(taskgen_pb2.ListJobsRequest(), timeout=5)) == ALLOWED
    finally:
        server.stop(0)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("a admin 0123456789abcdef extra\n", "expected `<client name> <role> <token>`"),
        ("a owner 0123456789abcdef\n", "unknown role 'owner'"),
        ("a admin s3cr3t-x\n", "shorter than 16"),
        ("a admin 0123456789abcdef\na read fedcba9876543210\n", "client 'a' appears twice"),
        ("# only a comment\n", "no tokens"),
    ],
)
def test_a_malformed_tokens_file_is_refused_naming_the_line_not_the_token(text, problem):
    with pytest.raises(TokenFileError, match=problem.replace("(", r"\(").replace("`", ".")) as caught:
        parse_tokens(text)
    assert "0123456789abcdef" not in str(caught.value) and "s3cr3t-x" not in str(caught.value)


def test_a_missing_tokens_file_refuses_start(tmp_path):
    with pytest.raises(TokenFileError, match="cannot read tokens file"):
        TokenStore(tmp_path / "absent")
