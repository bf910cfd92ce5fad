"""The Helm chart, checked offline: lint, schema validation and the rendered objects.

Each values file (default, gpu, minimal, external) is rendered with `helm template` for
Kubernetes 1.33 and the objects are asserted on: restricted pods, probes, limits, GPU
placement, secrets (Kafka topics: test_topics.py; KEDA: test_keda.py).
"""

import json
import re
import subprocess
import sys

import kubernetes_validate
import pytest

from libs import topics
from libs.grpc import GrpcServer
from tests.deploy.rendering import (
    CHART,
    CRD_KINDS,
    KUBE_VERSION,
    RELEASE,
    SERVICES,
    VALUES_FILES,
    component,
    helm_template,
    job_topics,
    objects,
    pod_spec,
    render,
)

CREDENTIAL = re.compile(r"(?i)(passw|secret|api_?key|access_?key|credential|(^|_)token($|_))")
GPU = "nvidia.com/gpu"
# Topics each autoscaled service consumes (DESIGN.md): its replicas are consumer-group members.
CONSUMES = {
    "taskgen": [topics.JOBS],
    "examplegen": [topics.TASKS, topics.CORPUS_CHUNKS],
    "curator": [topics.EXAMPLES_RAW],
    "trainer": [topics.EXAMPLES_CURATED],
    "embedder": [topics.MODELS, topics.DOCUMENTS, topics.CORPUS_CHUNKS],
}
values_names = pytest.mark.parametrize("values", list(VALUES_FILES))


def containers(docs: list[dict]):
    """(owner object, container) for every container and init container of every pod template."""
    for doc in docs:
        spec = pod_spec(doc)
        if spec is not None:
            for container in spec.get("initContainers", []) + spec["containers"]:
                yield doc, container


def service_deployment(docs: list[dict], service: str) -> dict:
    return objects(docs, "Deployment")[f"{RELEASE}-embedforge-{service}"]


def service_config(docs: list[dict], service: str) -> dict[str, str]:
    return objects(docs, "ConfigMap")[f"{RELEASE}-embedforge-{service}"]["data"]


def env_of(container: dict) -> dict[str, dict]:
    return {entry["name"]: entry for entry in container.get("env", [])}


@values_names
def test_helm_lint_strict_passes(helm, values):
    args = [str(helm), "lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION]
    for path in VALUES_FILES[values]:
        args += ["-f", str(path)]
    result = subprocess.run(args, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@values_names
def test_render_validates_strictly_against_the_kubernetes_schema(renders, values):
    for doc in renders[values]:
        if doc["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {error.message} at {list(error.path)}")


@values_names
def test_every_service_has_a_deployment_service_configmap_and_serviceaccount(renders, values):
    docs = renders[values]
    for kind in ("Deployment", "Service", "ConfigMap", "ServiceAccount"):
        found = {component(doc) for doc in objects(docs, kind).values()}
        assert set(SERVICES) <= found, f"{kind} missing for {set(SERVICES) - found}"


def test_service_port_is_named_grpc_and_reaches_the_container_port(renders):
    docs = renders["default"]
    for service in SERVICES:
        port = objects(docs, "Service")[f"{RELEASE}-embedforge-{service}"]["spec"]["ports"][0]
        (container,) = service_deployment(docs, service)["spec"]["template"]["spec"]["containers"]
        assert port["name"] == "grpc" and port["targetPort"] == "grpc"
        assert {"name": "grpc", "containerPort": port["port"], "protocol": "TCP"} in container["ports"]


@values_names
def test_every_pod_runs_restricted_as_non_root(renders, values):
    for doc in renders[values]:
        spec = pod_spec(doc)
        if spec is None:
            continue
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"].get("runAsUser", 1) != 0, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
    for doc, container in containers(renders[values]):
        context = container["securityContext"]
        assert context["runAsNonRoot"] is True, container["name"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["capabilities"]["drop"] == ["ALL"], container["name"]


@values_names
def test_every_read_only_container_gets_an_emptydir_tmp(renders, values):
    for doc, container in containers(renders[values]):
        volumes = {v["name"]: v for v in pod_spec(doc).get("volumes", [])}
        tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
        assert tmp and "emptyDir" in volumes[tmp[0]["name"]], container["name"]


@values_names
def test_every_service_mounts_a_writable_state_dir(renders, values):
    docs = renders[values]
    for service in SERVICES:
        state_dir = service_config(docs, service)[f"{service.upper()}_STATE_DIR"]
        spec = service_deployment(docs, service)["spec"]["template"]["spec"]
        (mount,) = [m for m in spec["containers"][0]["volumeMounts"] if m["mountPath"] == state_dir]
        assert not mount.get("readOnly", False)
        volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
        assert "emptyDir" in volume or "persistentVolumeClaim" in volume


@values_names
def test_every_long_running_container_has_liveness_and_readiness_probes(renders, values):
    for doc in renders[values]:
        spec = pod_spec(doc)
        if spec is None or doc["kind"] in ("Job", "Pod"):  # run to completion (init containers too)
            continue
        for container in spec["containers"]:
            assert "livenessProbe" in container and "readinessProbe" in container, container["name"]


@values_names
def test_services_are_probed_with_native_grpc_health_checks(renders, values):
    """On the plaintext health-only port when the API serves TLS (kubelet probes cannot speak TLS)."""
    docs = renders[values]
    for service in SERVICES:
        (container,) = service_deployment(docs, service)["spec"]["template"]["spec"]["containers"]
        config = service_config(docs, service)
        tls = config[f"{service.upper()}_TLS__ENABLED"] == "true"
        port = int(config[f"{service.upper()}_GRPC_HEALTH_PORT" if tls else f"{service.upper()}_GRPC_PORT"])
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert container[probe]["grpc"] == {"port": port}, (service, probe)


@values_names
def test_every_container_has_cpu_and_memory_requests_and_limits(renders, values):
    for doc, container in containers(renders[values]):
        resources = container["resources"]
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources.get(bound, {})), f"{container['name']} {bound}"


def test_default_values_request_no_gpu_and_no_gpu_nodes(renders):
    docs = renders["default"]
    assert not any(GPU in c["resources"].get("limits", {}) for _, c in containers(docs))
    for doc in docs:
        spec = pod_spec(doc)
        if spec is not None:
            assert not any(t.get("key") == GPU for t in spec.get("tolerations", [])), doc["metadata"]["name"]
    assert "vllm" not in {component(d) for d in docs}


def test_gpu_values_put_only_trainer_embedder_and_vllm_on_gpu_nodes(renders):
    docs = renders["gpu"]
    gpu_pods = set()
    for doc in docs:
        spec = pod_spec(doc)
        if spec is None:
            continue
        gpus = [c["resources"]["limits"].get(GPU, 0) for c in spec["containers"]]
        on_gpu_pool = spec.get("nodeSelector", {}).get("nvidia.com/gpu.present") == "true"
        tolerates = any(t.get("key") == GPU for t in spec.get("tolerations", []))
        if any(gpus):
            gpu_pods.add(component(doc))
            assert on_gpu_pool and tolerates, doc["metadata"]["name"]
        else:
            assert not on_gpu_pool and not tolerates, doc["metadata"]["name"]
    assert gpu_pods == {"trainer", "embedder", "vllm"}


def test_gpu_pods_run_under_the_gpu_pools_runtime_class_and_others_under_the_default(renders):
    for doc in renders["gpu"]:
        spec = pod_spec(doc)
        if spec is not None:
            expected = "nvidia" if component(doc) in {"trainer", "embedder", "vllm"} else None
            assert spec.get("runtimeClassName") == expected, doc["metadata"]["name"]
    assert not any("runtimeClassName" in (pod_spec(d) or {}) for d in renders["default"])


def test_a_components_priority_and_runtime_class_replace_its_pools(helm, tmp_path):
    values = tmp_path / "classes.yaml"
    values.write_text(
        "nodePools: {gpu: {priorityClassName: gpu-batch}}\n"
        "services: {trainer: {gpu: 1, priorityClassName: training-high}, embedder: {gpu: 1, runtimeClassName: kata-nvidia}}\n"
    )
    docs = render(helm, [values])
    specs = {s: service_deployment(docs, s)["spec"]["template"]["spec"] for s in SERVICES}
    assert specs["trainer"]["priorityClassName"] == "training-high"
    assert (specs["embedder"]["priorityClassName"], specs["embedder"]["runtimeClassName"]) == ("gpu-batch", "kata-nvidia")
    assert not any("priorityClassName" in specs[s] for s in ("taskgen", "examplegen", "curator"))


def quantity_mebibytes(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024**2}
    return float(quantity[:-2]) * units[quantity[-2:]]


@values_names
def test_every_pod_requests_the_ephemeral_storage_its_disk_emptydirs_may_fill(renders, values):
    for doc in renders[values]:
        spec = pod_spec(doc)
        if spec is None:
            continue
        disk = [v["emptyDir"] for v in spec.get("volumes", []) if "emptyDir" in v and v["emptyDir"].get("medium") != "Memory"]
        assert all("sizeLimit" in d for d in disk), doc["metadata"]["name"]
        requested = sum(
            quantity_mebibytes(c["resources"].get("requests", {}).get("ephemeral-storage", "0Mi")) for c in spec["containers"]
        )
        assert requested >= sum(quantity_mebibytes(d["sizeLimit"]) for d in disk), doc["metadata"]["name"]


def test_gpu_values_run_cuda_images_for_trainer_and_embedder(renders):
    docs = renders["gpu"]
    for service in SERVICES:
        image = service_deployment(docs, service)["spec"]["template"]["spec"]["containers"][0]["image"]
        assert image.endswith("-cuda") == (service in {"trainer", "embedder"}), image


def test_secret_values_appear_only_in_secrets(helm):
    sentinels = {
        "llm.existingSecret": "",
        "llm.apiKeys.OPENAI_API_KEY": "sk-sentinel-openai",
        "llm.apiKeys.ANTHROPIC_API_KEY": "sk-sentinel-anthropic",
    }
    docs = render(helm, VALUES_FILES["external"], sentinels)
    holders = {f"{d['kind']}/{d['metadata']['name']}" for d in docs if "sk-sentinel" in json.dumps(d)}
    assert holders == {f"Secret/{RELEASE}-embedforge-llm"}
    for service in SERVICES:
        (container,) = service_deployment(docs, service)["spec"]["template"]["spec"]["containers"]
        gets_keys = {"secretRef": {"name": f"{RELEASE}-embedforge-llm"}} in container["envFrom"]
        assert gets_keys == (service in {"taskgen", "examplegen"}), service


@values_names
def test_configmaps_hold_no_credentials_and_credentials_come_from_secrets(renders, values):
    docs = renders[values]
    for configmap in objects(docs, "ConfigMap").values():
        assert not [k for k in configmap["data"] if CREDENTIAL.search(k)], configmap["metadata"]["name"]
    for _, container in containers(docs):
        for name, entry in env_of(container).items():
            if CREDENTIAL.search(name):
                assert "secretKeyRef" in entry.get("valueFrom", {}), f"{container['name']}: {name}"


def test_external_values_take_kafka_qdrant_and_s3_credentials_from_their_secrets(renders):
    docs = renders["external"]
    refs = {}
    for service in SERVICES:
        (container,) = service_deployment(docs, service)["spec"]["template"]["spec"]["containers"]
        for name, entry in env_of(container).items():
            if "secretKeyRef" in entry.get("valueFrom", {}):
                refs[name] = entry["valueFrom"]["secretKeyRef"]["name"]
    assert refs["TASKGEN_KAFKA__SASL_PASSWORD"] == "embedforge-kafka"
    assert refs["EMBEDDER_QDRANT__API_KEY"] == "embedforge-qdrant"
    assert refs["TRAINER_KAFKA__SASL_USERNAME"] == "embedforge-kafka"
    assert refs["AWS_SECRET_ACCESS_KEY"] == "embedforge-s3"


def test_only_trainer_and_embedder_get_the_object_storage_credentials(renders):
    docs = renders["external"]
    for service in SERVICES:
        (container,) = service_deployment(docs, service)["spec"]["template"]["spec"]["containers"]
        assert ("AWS_SECRET_ACCESS_KEY" in env_of(container)) == (service in {"trainer", "embedder"}), service


def test_data_roots_reach_the_services_that_read_jobs_data_as_json(renders):
    docs = renders["external"]
    for service in ("taskgen", "examplegen", "trainer"):
        assert json.loads(service_config(docs, service)[f"{service.upper()}_DATA__ROOTS"]) == ["s3://embedforge-corpora/jobs"]
    for service in ("curator", "embedder"):
        assert f"{service.upper()}_DATA__ROOTS" not in service_config(docs, service)
    assert not any(k.endswith("_DATA__ROOTS") for k in service_config(renders["default"], "examplegen"))  # none by default


@pytest.mark.parametrize(
    "root",
    ["s3://key:secret@bucket/prefix", "s3://bucket/prefix/../other", "relative/folder", "http://bucket/x", "s3://bucket/p?x=1"],
)
def test_a_data_root_with_credentials_dots_or_another_scheme_is_refused_by_the_schema(helm, root):
    result = helm_template(helm, [], {"services.examplegen.dataRoots[0]": root})
    assert result.returncode != 0
    assert "dataRoots" in result.stderr and "secret@" not in result.stdout


def test_data_roots_in_both_places_are_refused(helm):
    result = helm_template(
        helm, [], {"services.trainer.dataRoots[0]": "/data", "services.trainer.config.DATA__ROOTS": '["/other"]'}
    )
    assert result.returncode != 0
    assert "not both" in result.stderr


def test_a_config_key_that_looks_like_a_credential_is_refused(helm):
    result = helm_template(helm, [], {"services.taskgen.config.LLM__API_KEY": "sk-oops"})
    assert result.returncode != 0
    assert "looks like a credential" in result.stderr
    assert "sk-oops" not in result.stdout


def test_autoscalers_exist_for_taskgen_examplegen_and_curator(renders):
    hpas = objects(renders["default"], "HorizontalPodAutoscaler").values()
    assert {component(h) for h in hpas} == {"taskgen", "examplegen", "curator"}
    for hpa in hpas:
        assert hpa["spec"]["scaleTargetRef"]["name"] == hpa["metadata"]["name"]
        assert "replicas" not in service_deployment(renders["default"], component(hpa))["spec"]


@values_names
def test_autoscalers_never_exceed_the_partitions_of_the_consumed_topics(renders, values):
    docs = renders[values]
    partitions = {t.name: t.partitions for t in topics.ALL_TOPICS}
    if objects(docs, "Job"):
        partitions = {name: p for name, (p, _, _) in job_topics(docs).items()}
    for hpa in objects(docs, "HorizontalPodAutoscaler").values():
        bound = max(partitions[t.name] for t in CONSUMES[component(hpa)])
        assert hpa["spec"]["maxReplicas"] <= bound, component(hpa)


def test_every_service_has_a_disruption_budget(renders):
    pdbs = objects(renders["default"], "PodDisruptionBudget").values()
    assert {component(p) for p in pdbs} == set(SERVICES)
    for pdb in pdbs:
        assert (
            pdb["spec"]["selector"]["matchLabels"]
            == service_deployment(renders["default"], component(pdb))["spec"]["selector"]["matchLabels"]
        )


@values_names
def test_termination_grace_covers_the_sigterm_drain(renders, values):
    docs = renders[values]
    for service in SERVICES:
        spec = service_deployment(docs, service)["spec"]["template"]["spec"]
        grace = float(service_config(docs, service)[f"{service.upper()}_SHUTDOWN_GRACE_S"])
        pre_stop = spec["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
        # run_service: gRPC stop, consumer join and producer flush are each bounded by the grace.
        assert spec["terminationGracePeriodSeconds"] > pre_stop + 3 * grace, service


def test_network_policies_are_rendered_only_when_enabled(renders):
    assert not objects(renders["default"], "NetworkPolicy")
    policies = objects(renders["external"], "NetworkPolicy").values()
    assert {component(p) for p in policies} == set(SERVICES)
    for policy in policies:
        (rule,) = policy["spec"]["ingress"]
        assert rule["ports"] == [{"port": "grpc", "protocol": "TCP"}, {"port": "health", "protocol": "TCP"}]


def test_in_cluster_qdrant_is_the_one_the_embedder_uses(renders):
    docs = renders["minimal"]
    (statefulset,) = objects(docs, "StatefulSet").values()
    service = objects(docs, "Service")[statefulset["spec"]["serviceName"]]
    http = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "http")
    assert service_config(docs, "embedder")["EMBEDDER_QDRANT__URL"] == f"http://{service['metadata']['name']}:{http}"
    assert not objects(renders["default"], "StatefulSet")


def test_default_storage_is_a_shared_claim_for_trainer_and_embedder(renders):
    docs = renders["default"]
    (claim,) = objects(docs, "PersistentVolumeClaim")
    for service in SERVICES:
        volumes = service_deployment(docs, service)["spec"]["template"]["spec"]["volumes"]
        claims = {v["persistentVolumeClaim"]["claimName"] for v in volumes if "persistentVolumeClaim" in v}
        assert claims == ({claim} if service in {"trainer", "embedder"} else set()), service


def test_s3_storage_needs_no_claim_and_passes_the_uri(renders):
    docs = renders["external"]
    assert not objects(docs, "PersistentVolumeClaim")
    for service in ("trainer", "embedder"):
        assert service_config(docs, service)[f"{service.upper()}_STORAGE__URI"] == "s3://embedforge-artifacts/prod"


def test_without_a_claim_trainer_and_embedder_need_object_storage(helm, tmp_path):
    no_claim = tmp_path / "no-claim.yaml"
    no_claim.write_text("storage: {persistence: {enabled: false}}\n")
    result = helm_template(helm, [no_claim])
    assert result.returncode != 0
    assert "set storage.uri" in result.stderr
    assert helm_template(helm, [no_claim], {"storage.uri": "s3://bucket/prefix"}).returncode == 0


def test_a_storage_uri_with_credentials_is_refused(helm):
    result = helm_template(helm, [], {"storage.uri": "s3://AKIAEXAMPLE:secret@bucket/prefix"})
    assert result.returncode != 0
    assert "secret@bucket" not in result.stdout


def test_a_mistyped_value_is_rejected_by_the_values_schema(helm):
    result = helm_template(helm, [], {"services.taskgen.replicas": "3"})
    assert result.returncode != 0
    assert "replicas" in result.stderr


def test_sasl_without_a_credentials_secret_is_refused(helm):
    result = helm_template(helm, [], {"kafka.securityProtocol": "SASL_SSL", "kafka.saslMechanism": "PLAIN"})
    assert result.returncode != 0
    assert "kafka.sasl.existingSecret" in result.stderr


@values_names
def test_pods_sharing_a_read_write_once_claim_run_on_one_node(renders, values):
    docs = renders[values]
    for claim in objects(docs, "PersistentVolumeClaim").values():
        if "ReadWriteMany" in claim["spec"]["accessModes"]:
            continue
        users = sorted(
            component(d)
            for d in objects(docs, "Deployment").values()
            if any(
                v.get("persistentVolumeClaim", {}).get("claimName") == claim["metadata"]["name"] for v in pod_spec(d)["volumes"]
            )
        )
        for user in users[:-1]:  # all but one follow another user of the claim onto its node
            terms = (
                pod_spec(service_deployment(docs, user))
                .get("affinity", {})
                .get("podAffinity", {})
                .get("requiredDuringSchedulingIgnoredDuringExecution", [])
            )
            assert any(
                t["topologyKey"] == "kubernetes.io/hostname"
                and t["labelSelector"]["matchLabels"].get("app.kubernetes.io/component") in users
                for t in terms
            ), f"{user} shares ReadWriteOnce claim {claim['metadata']['name']} with {users} on any node"


def test_helm_test_pod_reports_each_service_health_and_fails_unless_all_serve(renders):
    """The `helm test` script, run here against real gRPC health servers on loopback."""
    docs = renders["default"]
    (pod,) = objects(docs, "Pod").values()
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    script, *targets = container["args"]
    services = objects(docs, "Service")
    health_ports = {
        name: {p["name"]: p["port"] for p in service["spec"]["ports"]}["health"] for name, service in services.items()
    }
    assert sorted(targets) == sorted(f"{RELEASE}-embedforge-{s}:{health_ports[f'{RELEASE}-embedforge-{s}']}" for s in SERVICES)

    serving, draining = GrpcServer([], "127.0.0.1", 0), GrpcServer([], "127.0.0.1", 0)
    for server in (serving, draining):
        server.start()
    serving.set_serving(True)
    draining.set_serving(False)

    def run(*ports: int) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", script, *(f"127.0.0.1:{p}" for p in ports)], capture_output=True, text=True, timeout=60
        )

    try:
        healthy = run(serving.port)
        assert healthy.returncode == 0, healthy.stderr
        assert healthy.stdout.split() == [f"127.0.0.1:{serving.port}", "SERVING"]
        unhealthy = run(serving.port, draining.port)
        assert unhealthy.returncode == 1
        assert f"127.0.0.1:{draining.port} NOT_SERVING" in unhealthy.stdout
    finally:
        serving.stop(0)
        draining.stop(0)


@values_names
def test_every_service_reports_traces_under_its_own_otel_service_name(renders, values):
    docs = renders[values]
    for service in SERVICES:
        (container,) = service_deployment(docs, service)["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["OTEL_SERVICE_NAME"].endswith(service), service


@values_names
def test_a_new_trainer_starts_only_after_the_old_one_stopped(renders, values):
    """Two trainers would both restore and train the same runs from storage."""
    assert service_deployment(renders[values], "trainer")["spec"]["strategy"] == {"type": "Recreate"}


def test_more_than_one_trainer_is_refused(helm, tmp_path):
    two = tmp_path / "two-trainers.yaml"
    two.write_text("services:\n  trainer:\n    replicaCount: 2\n")
    refused = helm_template(helm, [two])
    assert refused.returncode != 0 and "one trainer owns the runs" in refused.stderr
