"""Rendering the chart with helm and picking objects out of the render (shared by tests/deploy)."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "embedforge"
VENV_BIN = Path(sys.executable).parent
KUBE_VERSION = "1.33.0"
RELEASE = "ef"
SERVICES = sorted(p.parent.name for p in (REPO / "services").glob("*/__main__.py"))
# Custom resources (Strimzi, KEDA): kubernetes-validate has no schema for them; tests assert their fields.
CRD_KINDS = {"KafkaTopic", "ScaledObject", "TriggerAuthentication"}
VALUES_FILES = {
    "default": [],
    "gpu": [CHART / "values-gpu.yaml"],
    "minimal": [CHART / "values-minimal.yaml"],
    "external": [CHART / "values-external.yaml"],
}


def venv_tool(name: str) -> Path:
    tool = VENV_BIN / name
    if not tool.is_file():
        pytest.fail(f"{name} missing from {VENV_BIN}: it is pinned in requirements.txt (make test installs it)")
    return tool


def helm_template(helm: Path, values: list[Path], sets: dict[str, str] | None = None, release: str = RELEASE) -> subprocess.CompletedProcess:
    args = [str(helm), "template", release, str(CHART), "--namespace", "forge", "--kube-version", KUBE_VERSION]
    for path in values:
        args += ["-f", str(path)]
    for key, value in (sets or {}).items():
        args += ["--set-string", f"{key}={value}"]
    return subprocess.run(args, capture_output=True, text=True)


def render(helm: Path, values: list[Path], sets: dict[str, str] | None = None, release: str = RELEASE) -> list[dict]:
    """The chart's objects for these values files and --set-string overrides."""
    result = helm_template(helm, values, sets, release)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def objects(docs: list[dict], kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def component(doc: dict) -> str:
    return doc["metadata"]["labels"]["app.kubernetes.io/component"]


def pod_spec(doc: dict) -> dict | None:
    if doc["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet"):
        return doc["spec"]["template"]["spec"]
    if doc["kind"] == "Pod":
        return doc["spec"]
    return None


def pod_environment(docs: list[dict], workload: dict, secrets: dict[tuple[str, str], str] | None = None) -> dict[str, str]:
    """The environment of a workload's main container as Kubernetes would build it: its
    ConfigMaps (envFrom), then its env entries. A Secret reference takes ``secrets[(name, key)]``
    (default: a placeholder naming the reference); downward-API fields take a placeholder."""
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    configmaps = objects(docs, "ConfigMap")
    environment: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            environment.update(configmaps[source["configMapRef"]["name"]]["data"])
    for entry in container.get("env", []):
        if "value" in entry:
            environment[entry["name"]] = entry["value"]
        elif "secretKeyRef" in entry.get("valueFrom", {}):
            ref = entry["valueFrom"]["secretKeyRef"]
            environment[entry["name"]] = (secrets or {}).get((ref["name"], ref["key"]), f"secret:{ref['name']}/{ref['key']}")
        else:
            environment[entry["name"]] = f"field:{entry['name']}"
    return environment


def job_topics(docs: list[dict]) -> dict[str, tuple[int, int, str]]:
    """The topic Job's topics: name -> (partitions, retention.ms, cleanup.policy)."""
    (job,) = objects(docs, "Job").values()
    (container,) = job["spec"]["template"]["spec"]["containers"]
    (entry,) = [e for e in container["env"] if e["name"] == "TOPICS"]
    lines = entry["value"].strip().splitlines()
    return {name: (int(partitions), int(retention), cleanup) for name, partitions, retention, cleanup in (line.split() for line in lines)}
