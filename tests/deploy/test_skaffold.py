"""skaffold.yaml (skaffold itself is not obtainable offline): one artifact per service built
from files that exist, a helm release of this chart whose image values reach every service,
and cpu/gpu/dev profiles whose patches apply to the config."""

import copy
import re

import pytest
import yaml

from tests.deploy.image import DOCKERFILE, SKAFFOLD
from tests.deploy.rendering import CHART, REPO, SERVICES, objects, render


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(SKAFFOLD.read_text())


def artifacts(config: dict) -> dict[str, dict]:
    return {a["image"]: a for a in config["build"]["artifacts"]}


def release(config: dict) -> dict:
    (only,) = config["deploy"]["helm"]["releases"]
    return only


def apply_patches(config: dict, patches: list[dict]) -> dict:
    """JSON-patch add/replace (what the profiles use); a path that does not exist fails."""
    patched = copy.deepcopy(config)
    for patch in patches:
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in patch["path"].lstrip("/").split("/")]
        node = patched
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if patch["op"] == "add" and isinstance(node, list):
            node.insert(len(node) if last == "-" else int(last), patch["value"])
        elif patch["op"] == "replace":
            if isinstance(node, list):
                node[int(last)]  # noqa: B018 - must exist
                node[int(last)] = patch["value"]
            else:
                assert last in node, f"replace of missing {patch['path']}"
                node[last] = patch["value"]
        elif patch["op"] == "add":
            node[last] = patch["value"]
        else:
            raise AssertionError(f"unsupported op {patch['op']}")
    return patched


def profile(config: dict, name: str) -> dict:
    return apply_patches(config, next(p for p in config["profiles"] if p["name"] == name).get("patches", []))


def test_every_service_has_exactly_one_artifact(config):
    images = [a["image"] for a in config["build"]["artifacts"]]
    assert sorted(images) == sorted(f"embedforge/{s}" for s in SERVICES)


def test_every_artifact_builds_its_service_from_the_one_dockerfile(config):
    for artifact in config["build"]["artifacts"]:
        assert artifact.get("context", ".") == "." and artifact["docker"]["dockerfile"] == "Dockerfile", artifact["image"]
        assert artifact["docker"]["buildArgs"]["SERVICE"] == artifact["image"].split("/")[-1]
        assert (REPO / "services" / artifact["docker"]["buildArgs"]["SERVICE"] / "__main__.py").is_file()


def test_build_args_are_ones_the_dockerfile_declares(config):
    declared = set(re.findall(r"^ARG (\w+)", DOCKERFILE.read_text(), re.M))
    for artifact in config["build"]["artifacts"]:
        assert set(artifact["docker"].get("buildArgs", {})) <= declared, artifact["image"]


def test_helm_release_deploys_this_chart(config):
    chart = REPO / release(config)["chartPath"]
    assert chart.resolve() == CHART.resolve()


def test_image_value_templates_cover_every_artifact_and_service(config):
    templates = release(config)["setValueTemplates"]
    for service in SERVICES:
        key = f"embedforge_{service}"
        assert templates[f"services.{service}.image.repository"] == f"{{{{.IMAGE_REPO_{key}}}}}"
        assert templates[f"services.{service}.image.tag"] == f"{{{{.IMAGE_TAG_{key}}}}}@{{{{.IMAGE_DIGEST_{key}}}}}"


def test_deployed_images_are_the_built_ones(helm, config):
    """What skaffold would set (repo + tag@digest) ends up as each service's container image."""
    digest = "sha256:" + "0" * 64
    sets = {}
    for service in SERVICES:
        sets[f"services.{service}.image.repository"] = f"registry.local/embedforge/{service}"
        sets[f"services.{service}.image.tag"] = f"abc123@{digest}"
    docs = render(helm, [CHART / "values-gpu.yaml"], sets)
    for service in SERVICES:
        (container,) = objects(docs, "Deployment")[f"ef-embedforge-{service}"]["spec"]["template"]["spec"]["containers"]
        assert container["image"] == f"registry.local/embedforge/{service}:abc123@{digest}"


def test_profiles_cpu_gpu_and_dev_exist_and_their_patches_apply(config):
    assert {p["name"] for p in config["profiles"]} >= {"cpu", "gpu", "dev"}
    for name in ("cpu", "gpu", "dev"):
        patched = profile(config, name)
        for values in release(patched)["valuesFiles"]:
            assert (REPO / values).is_file(), f"profile {name}: {values}"


def torch_variants(config: dict) -> dict[str, str]:
    return {a["image"]: a["docker"].get("buildArgs", {}).get("TORCH_VARIANT", "cpu") for a in config["build"]["artifacts"]}


def test_gpu_profile_builds_cuda_only_for_trainer_and_embedder_and_uses_gpu_values(config):
    patched = profile(config, "gpu")
    cuda = {image: variant for image, variant in torch_variants(patched).items() if variant.startswith("cu")}
    assert set(cuda) == {"embedforge/trainer", "embedforge/embedder"}
    assert torch_variants(patched)["embedforge/taskgen"] == torch_variants(patched)["embedforge/examplegen"] == "none"
    assert "charts/embedforge/values-gpu.yaml" in release(patched)["valuesFiles"]


def test_cpu_profile_builds_cpu_images_or_ones_without_torch(config):
    assert set(torch_variants(profile(config, "cpu")).values()) == {"cpu", "none"}


def test_dev_port_forwards_reach_services_the_chart_renders(helm, config):
    rel = release(config)
    dev = next(p for p in config["profiles"] if p["name"] == "dev")
    docs = render(helm, [REPO / v for v in release(profile(config, "dev"))["valuesFiles"]], release=rel["name"])
    services = objects(docs, "Service")
    for forward in dev["portForward"]:
        assert forward["namespace"] == rel["namespace"]
        assert forward["port"] in [p["port"] for p in services[forward["resourceName"]]["spec"]["ports"]]
