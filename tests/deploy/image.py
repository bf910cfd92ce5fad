"""The service images as the one Dockerfile and skaffold.yaml's build arguments define them
(shared by tests/deploy): instructions, stages, and each service's final ENV and ENTRYPOINT."""

import json
import re
from pathlib import Path

import yaml

from tests.deploy.rendering import REPO

DOCKERFILE = REPO / "Dockerfile"
SKAFFOLD = REPO / "skaffold.yaml"


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
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


def stages(path: Path = DOCKERFILE) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for instruction, args in instructions(path):
        if instruction == "FROM":
            result.append([])
        if result:
            result[-1].append((instruction, args))
    return result


def build_args(service: str) -> dict[str, str]:
    """What skaffold.yaml passes when it builds the service's image."""
    (artifact,) = [a for a in yaml.safe_load(SKAFFOLD.read_text())["build"]["artifacts"] if a["image"] == f"embedforge/{service}"]
    return {name: str(value) for name, value in artifact["docker"].get("buildArgs", {}).items()}


def expand(text: str, variables: dict[str, str]) -> str:
    """Docker's ${NAME} / $NAME substitution; names without a value stay as they are."""
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables.get(m.group(1) or m.group(2), m.group(0)), text)


def final_stage(service: str) -> list[tuple[str, str]]:
    """The final stage of the service's image, its build arguments substituted."""
    *_, last = stages()
    declared = {a.split("=", 1)[0]: (a.split("=", 1)[1] if "=" in a else "") for i, a in last if i == "ARG"}
    variables = {name: build_args(service).get(name, default) for name, default in declared.items()}
    return [(i, a if i in ("ENTRYPOINT", "CMD", "RUN") else expand(a, variables)) for i, a in last]


def environment(service: str) -> dict[str, str]:
    """The final stage's ENV (``$PATH`` and the like left for the caller to map)."""
    result = {}
    for instruction, args in final_stage(service):
        if instruction == "ENV":
            result.update(pair.split("=", 1) for pair in args.split())
    return result


def entrypoint(service: str) -> list[str]:
    (args,) = [a for i, a in final_stage(service) if i == "ENTRYPOINT"]
    return json.loads(args)
