"""The protobuf contracts pass `buf lint` (buf.yaml at the repository root, STANDARD rules)."""

import subprocess

from tests.deploy.rendering import REPO, venv_tool


def test_buf_lint_is_clean():
    result = subprocess.run([str(venv_tool("buf")), "lint"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
