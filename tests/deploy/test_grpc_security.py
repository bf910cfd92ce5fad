"""The chart's gRPC security: cert-manager or an existing Secret for TLS, a tokens Secret,
mounts, probes on the plaintext health port; and a service started from a rendered
Deployment's environment and Secrets serves TLS with token auth."""

import base64

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from embedforge.v1 import taskgen_pb2, taskgen_pb2_grpc
from libs.auth import Role, parse_tokens
from libs.certs import new_ca, new_certificate
from libs.grpc import GrpcServer, GrpcService, traced_channel
from libs.local.broker import free_port
from libs.settings import TlsSettings
from tests.deploy.rendering import RELEASE, SERVICES, helm_template, objects, pod_environment, render
from tests.deploy.test_settings_contract import deployment, settings_from

NAMESPACE = "forge"  # helm_template renders into this namespace


def name(component: str) -> str:
    return f"{RELEASE}-embedforge-{component}"


def volumes(docs: list[dict], service: str) -> dict[str, dict]:
    return {v["name"]: v for v in deployment(docs, service)["spec"]["template"]["spec"]["volumes"]}


def mounts(docs: list[dict], service: str) -> dict[str, str]:
    (container,) = deployment(docs, service)["spec"]["template"]["spec"]["containers"]
    return {m["name"]: m["mountPath"] for m in container["volumeMounts"]}


def generated_tokens(docs: list[dict]) -> str:
    return base64.b64decode(objects(docs, "Secret")[name("grpc-tokens")]["data"]["tokens"]).decode()


def test_default_values_issue_the_certificate_from_a_self_signed_ca_with_cert_manager(renders):
    docs = renders["default"]
    issuers = objects(docs, "Issuer")
    assert issuers[name("grpc-selfsigned")]["spec"] == {"selfSigned": {}}
    assert issuers[name("grpc-ca")]["spec"] == {"ca": {"secretName": name("grpc-ca")}}
    certificates = objects(docs, "Certificate")
    assert certificates[name("grpc-ca")]["spec"]["isCA"] is True
    server = certificates[name("grpc-tls")]["spec"]
    assert server["secretName"] == name("grpc-tls")
    assert server["issuerRef"] == {"name": name("grpc-ca"), "kind": "Issuer", "group": "cert-manager.io"}
    assert {"server auth", "client auth"} <= set(server["usages"])
    for service in SERVICES:
        assert f"{name(service)}.{NAMESPACE}.svc.cluster.local" in server["dnsNames"]
        assert name(service) in server["dnsNames"]


def test_every_service_mounts_the_certificate_and_the_tokens_and_reads_them_from_there(renders):
    docs = renders["default"]
    for service in SERVICES:
        config = objects(docs, "ConfigMap")[name(service)]["data"]
        prefix = f"{service.upper()}_"
        assert volumes(docs, service)["grpc-tls"]["secret"]["secretName"] == name("grpc-tls")
        assert volumes(docs, service)["grpc-auth"]["secret"]["items"] == [{"key": "tokens", "path": "tokens"}]
        assert (
            mounts(docs, service)["grpc-tls"] == "/etc/embedforge/tls"
            and mounts(docs, service)["grpc-auth"] == "/etc/embedforge/auth"
        )
        assert config[prefix + "TLS__CERT_FILE"] == "/etc/embedforge/tls/tls.crt"
        assert config[prefix + "AUTH__TOKENS_FILE"] == "/etc/embedforge/auth/tokens"
        assert (config[prefix + "TLS__ENABLED"], config[prefix + "AUTH__ENABLED"]) == ("true", "true")


def test_generated_tokens_are_a_valid_tokens_file_with_one_token_per_client(helm):
    docs = render(
        helm,
        [],
        {
            "grpcSecurity.auth.clients[0].name": "ops",
            "grpcSecurity.auth.clients[0].role": "admin",
            "grpcSecurity.auth.clients[1].name": "frontend",
            "grpcSecurity.auth.clients[1].role": "search",
        },
    )
    secret = objects(docs, "Secret")[name("grpc-tokens")]
    clients = {client.name: (client.role, token.decode()) for token, client in parse_tokens(generated_tokens(docs))}
    assert {n: role for n, (role, _) in clients.items()} == {"ops": Role.ADMIN, "frontend": Role.SEARCH}
    for client, (_, token) in clients.items():
        assert base64.b64decode(secret["data"][f"{client}.token"]).decode() == token
        assert len(token) >= 32
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_an_existing_certificate_secret_replaces_cert_manager(helm):
    docs = render(helm, [], {"grpcSecurity.tls.existingSecret": "my-grpc-tls"})
    assert not objects(docs, "Certificate") and not objects(docs, "Issuer")
    for service in SERVICES:
        assert volumes(docs, service)["grpc-tls"]["secret"]["secretName"] == "my-grpc-tls"


def test_an_issuer_of_the_cluster_signs_instead_of_the_self_signed_ca(renders):
    docs = renders["external"]
    assert not objects(docs, "Issuer")
    (certificate,) = objects(docs, "Certificate").values()
    assert certificate["spec"]["issuerRef"] == {"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    config = objects(docs, "ConfigMap")[name("taskgen")]["data"]
    assert config["TASKGEN_TLS__REQUIRE_CLIENT_CERT"] == "true"


def test_an_existing_tokens_secret_is_mounted_and_none_is_generated(renders):
    docs = renders["external"]
    assert name("grpc-tokens") not in objects(docs, "Secret")
    for service in SERVICES:
        assert volumes(docs, service)["grpc-auth"]["secret"]["secretName"] == "embedforge-grpc-tokens"


def values_file(tmp_path, text: str):
    path = tmp_path / "values.yaml"
    path.write_text(text)
    return path


def test_auth_without_tls_is_refused(helm, tmp_path):
    result = helm_template(helm, [values_file(tmp_path, "grpcSecurity: {tls: {enabled: false}}\n")])
    assert result.returncode != 0
    assert "grpcSecurity.auth.enabled needs grpcSecurity.tls.enabled" in result.stderr


def test_without_tls_probes_use_the_api_port_and_nothing_is_mounted(helm, tmp_path):
    docs = render(helm, [values_file(tmp_path, "grpcSecurity: {tls: {enabled: false}, auth: {enabled: false}}\n")])
    assert not objects(docs, "Certificate") and name("grpc-tokens") not in objects(docs, "Secret")
    for service in SERVICES:
        (container,) = deployment(docs, service)["spec"]["template"]["spec"]["containers"]
        assert [p["name"] for p in container["ports"]] == ["grpc"]
        assert container["readinessProbe"]["grpc"]["port"] == container["ports"][0]["containerPort"]
        assert "grpc-tls" not in volumes(docs, service) and "grpc-auth" not in volumes(docs, service)
        config = objects(docs, "ConfigMap")[name(service)]["data"]
        assert (config[f"{service.upper()}_TLS__ENABLED"], config[f"{service.upper()}_AUTH__ENABLED"]) == ("false", "false")


class OneJob(taskgen_pb2_grpc.TaskgenServiceServicer):
    def ListJobs(self, request, context):
        return taskgen_pb2.ListJobsResponse(jobs=[taskgen_pb2.JobStatus(job_id="job-1")])


def test_a_service_started_from_the_rendered_deployment_serves_tls_with_token_auth(renders, tmp_path, monkeypatch):
    """The Secrets as cert-manager and the chart fill them, mounted where the pod has them (under tmp_path)."""
    docs = renders["default"]
    dns_names = objects(docs, "Certificate")[name("grpc-tls")]["spec"]["dnsNames"]
    (tmp_path / "tls").mkdir()
    (tmp_path / "auth").mkdir()
    ca = new_ca("cert-manager CA")
    (tmp_path / "tls" / "ca.crt").write_bytes(ca.cert_pem)
    new_certificate(ca, "taskgen", dns_names).write(tmp_path / "tls" / "tls.crt", tmp_path / "tls" / "tls.key")
    (tmp_path / "auth" / "tokens").write_text(generated_tokens(docs))
    admin_token = base64.b64decode(objects(docs, "Secret")[name("grpc-tokens")]["data"]["admin.token"]).decode()

    environment = {
        k: v.replace("/etc/embedforge", str(tmp_path)) for k, v in pod_environment(docs, deployment(docs, "taskgen")).items()
    }
    environment["TASKGEN_GRPC_HEALTH_PORT"] = str(free_port())  # the chart's fixed 8086 may be taken on this machine
    settings = settings_from(environment, "taskgen", monkeypatch)
    server = GrpcServer(
        [GrpcService.generated(taskgen_pb2_grpc, taskgen_pb2, "TaskgenService", OneJob())],
        "127.0.0.1",
        0,
        tls=settings.tls,
        auth=settings.auth,
        health_port=settings.grpc_health_port,
    )
    server.start()
    server.set_serving(True)
    try:
        client_tls = TlsSettings(
            enabled=True,
            ca_file=str(tmp_path / "tls" / "ca.crt"),
            cert_file="",
            key_file="",
            server_name=f"{name('taskgen')}.{NAMESPACE}.svc",
        )
        stub = lambda token: taskgen_pb2_grpc.TaskgenServiceStub(traced_channel(f"127.0.0.1:{server.port}", client_tls, token))  # noqa: E731
        assert [job.job_id for job in stub(admin_token).ListJobs(taskgen_pb2.ListJobsRequest(), timeout=10).jobs] == ["job-1"]
        with pytest.raises(grpc.RpcError) as refused:
            stub("").ListJobs(taskgen_pb2.ListJobsRequest(), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        probe = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{server.health_port}"))
        assert probe.Check(health_pb2.HealthCheckRequest(), timeout=10).status == health_pb2.HealthCheckResponse.SERVING
    finally:
        server.stop(0)
