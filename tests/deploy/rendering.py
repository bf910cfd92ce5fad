"""Rendering the chart with helm and picking objects out of the render (shared by tests/deploy)."""

import re
import shlex
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
INSTALLS_DIR = REPO / ".cache" / "readme-installs"


def readme_installs() -> dict[str, list[Path]]:
    """The installs the chart README shows: each ``cat > NAME <<'EOF'`` values file is written
    under .cache, and each ``helm install ... -f ...`` becomes the list of values files it passes."""
    text = (CHART / "README.md").read_text()
    section = text.split("<!-- installs:begin -->", 1)[1].split("<!-- installs:end -->", 1)[0]
    INSTALLS_DIR.mkdir(parents=True, exist_ok=True)
    installs = {}
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        written = {}
        for name, body in re.findall(r"cat > (\S+) <<'EOF'\n(.*?)\nEOF\n", block, re.S):
            written[name] = INSTALLS_DIR / name
            written[name].write_text(body + "\n")
        (command,) = [line for line in block.replace("\\\n", " ").splitlines() if line.startswith("helm install ")]
        args = shlex.split(command)
        files = [args[i + 1] for i, arg in enumerate(args) if arg == "-f"]
        assert args[3] == "charts/embedforge" and files, f"an install must pass the chart and values files: {command}"
        installs[f"readme-{Path(files[-1]).stem}"] = [written.get(f, REPO / f) for f in files]
    return installs


# Custom resources (Strimzi, KEDA, cert-manager): kubernetes-validate has no schema for them; tests assert their fields.
CRD_KINDS = {"KafkaTopic", "ScaledObject", "TriggerAuthentication", "Certificate", "Issuer"}
VALUES_FILES = {
    "default": [],
    "gpu": [CHART / "values-gpu.yaml"],
    "minimal": [CHART / "values-minimal.yaml"],
    "external": [CHART / "values-external.yaml"],
    **readme_installs(),
}


def venv_tool(name: str) -> Path:
    tool = VENV_BIN / name
    if not tool.is_file():
        pytest.fail(f"{name} missing from {VENV_BIN}: it is pinned in requirements.txt (make test installs it)")
    return tool


def helm_template(
    helm: Path, values: list[Path], sets: dict[str, str] | None = None, release: str = RELEASE
) -> subprocess.CompletedProcess:
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
    ConfigMaps and rendered Secrets (envFrom), then its env entries. A Secret reference takes ``secrets[(name, key)]``
    (default: a placeholder naming the reference); downward-API fields take a placeholder."""
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    configmaps = objects(docs, "ConfigMap")
    environment: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            environment.update(configmaps[source["configMapRef"]["name"]]["data"])
        elif "secretRef" in source:  # only Secrets the chart itself renders can be read here
            rendered = objects(docs, "Secret").get(source["secretRef"]["name"])
            environment.update(rendered["stringData"] if rendered else {})
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
    return {
        name: (int(partitions), int(retention), cleanup)
        for name, partitions, retention, cleanup in (line.split() for line in lines)
    }
