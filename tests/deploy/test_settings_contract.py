"""The settings contract: every variable the chart renders for a service is a field of its
settings class and reaches the code with the rendered value, for every values file; the
chart README's settings reference is generated from the same classes."""

import json
import os
import subprocess
import sys

import pytest
from pydantic import SecretStr

from libs.settings import load_settings
from tests.deploy.rendering import REPO, RELEASE, SERVICES, VALUES_FILES, helm_template, objects, pod_environment, render
from tools.settings_reference import SETTINGS


def deployment(docs: list[dict], service: str) -> dict:
    return objects(docs, "Deployment")[f"{RELEASE}-embedforge-{service}"]


def settings_from(environment: dict[str, str], service: str, monkeypatch):
    """The service's settings in exactly this environment (nothing else under its prefix)."""
    prefix = f"{service.upper()}_"
    for key in list(os.environ):
        if key.startswith(prefix):
            monkeypatch.delenv(key)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    return load_settings(SETTINGS[service])


def setting_value(settings, variable: str, prefix: str):
    value = settings
    for part in variable.removeprefix(prefix).lower().split("__"):
        value = getattr(value, part)
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def same(value, rendered: str) -> bool:
    if isinstance(value, bool):
        return value == (rendered.lower() in ("1", "true", "yes", "on"))
    if isinstance(value, (int, float)):
        return value == type(value)(float(rendered))
    if isinstance(value, list):  # a list setting is rendered as JSON
        return value == json.loads(rendered)
    return str(value) == rendered


@pytest.mark.parametrize("values", list(VALUES_FILES))
@pytest.mark.parametrize("service", SERVICES)
def test_every_rendered_setting_reaches_the_service_settings(renders, values, service, monkeypatch):
    docs = renders[values]
    environment = pod_environment(docs, deployment(docs, service))
    settings = settings_from(environment, service, monkeypatch)
    prefix = f"{service.upper()}_"
    rendered = {k: v for k, v in environment.items() if k.startswith(prefix)}
    assert rendered, "no settings rendered"
    for variable, text in rendered.items():
        assert same(setting_value(settings, variable, prefix), text), f"{variable}={text!r} did not reach the settings"


def test_gpu_values_send_every_llm_call_to_the_charts_vllm(renders, monkeypatch):
    docs = renders["gpu"]
    (vllm,) = [s for s in objects(docs, "Service").values() if s["metadata"]["labels"]["app.kubernetes.io/component"] == "vllm"]
    api_base = f"http://{vllm['metadata']['name']}:{vllm['spec']['ports'][0]['port']}/v1"
    for service in ("taskgen", "examplegen"):
        workload = deployment(docs, service)
        llm = settings_from(pod_environment(docs, workload), service, monkeypatch).llm
        assert (llm.model, llm.api_base) == ("hosted_vllm/qwen2.5-7b-instruct", api_base)
        (wait,) = workload["spec"]["template"]["spec"]["initContainers"]
        assert wait["command"] == ["python", "-m", "libs.llm_endpoint", api_base]
    for service in ("curator", "trainer", "embedder"):
        assert "initContainers" not in deployment(docs, service)["spec"]["template"]["spec"]


def test_external_values_reach_qdrant_with_the_key_from_its_secret(renders, monkeypatch):
    docs = renders["external"]
    environment = pod_environment(docs, deployment(docs, "embedder"), {("embedforge-qdrant", "api-key"): "qdrant-key"})
    qdrant = settings_from(environment, "embedder", monkeypatch).qdrant
    assert (qdrant.url, qdrant.api_key.get_secret_value()) == ("https://qdrant.example.internal:6333", "qdrant-key")


def test_a_mistyped_config_key_makes_the_service_refuse_to_start(helm, tmp_path):
    docs = render(helm, [], {"services.taskgen.config.LLM__MODLE": "openai/gpt-4o-mini"})
    environment = {
        **pod_environment(docs, deployment(docs, "taskgen")),
        "PATH": os.environ["PATH"],
        "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'gen'}",
    }
    environment["TASKGEN_STATE_DIR"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "services.taskgen"], env=environment, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert "TASKGEN_LLM__MODLE: no such setting (closest: TASKGEN_LLM__MODEL)" in result.stderr


def test_embedded_qdrant_refuses_more_than_one_embedder_replica(helm, tmp_path):
    two_replicas = tmp_path / "two-replicas.yaml"
    two_replicas.write_text("services:\n  embedder:\n    replicaCount: 2\n")
    refused = helm_template(helm, [two_replicas], {"qdrant.url": ""})
    assert refused.returncode != 0 and "embedded Qdrant" in refused.stderr
    autoscaled = helm_template(helm, [VALUES_FILES["gpu"][0]], {"qdrant.url": ""})
    assert autoscaled.returncode != 0 and "embedded Qdrant" in autoscaled.stderr
    docs = render(helm, [], {"qdrant.url": ""})
    assert not [k for k in objects(docs, "ConfigMap")[f"{RELEASE}-embedforge-embedder"]["data"] if "QDRANT" in k]


def test_changing_one_services_config_restarts_only_that_service(helm, renders):
    before = {
        s: deployment(renders["default"], s)["spec"]["template"]["metadata"]["annotations"]["checksum/config"] for s in SERVICES
    }
    docs = render(helm, [], {"services.taskgen.config.BRAINSTORM_BATCH": "10"})
    after = {s: deployment(docs, s)["spec"]["template"]["metadata"]["annotations"]["checksum/config"] for s in SERVICES}
    assert {s for s in SERVICES if before[s] != after[s]} == {"taskgen"}


def test_chart_readme_settings_reference_is_generated_from_the_settings_classes():
    result = subprocess.run([sys.executable, "tools/settings_reference.py", "--check"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
