"""ruff (pinned in requirements.txt) finds nothing under pyproject.toml's rules, line length included, and
every file is as `ruff format` writes it."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ruff_check_finds_nothing():
    ruff = Path(sys.executable).parent / "ruff"
    assert ruff.is_file(), f"ruff missing from {ruff.parent}: it is pinned in requirements.txt (make test installs it)"
    command = [str(ruff), "check", "--no-cache", "--output-format", "concise", "."]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr


def test_ruff_format_leaves_every_file_as_it_is():
    ruff = Path(sys.executable).parent / "ruff"
    result = subprocess.run([str(ruff), "format", "--check", "--no-cache", "."], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, f"run `.venv/bin/ruff format .`:\n{result.stdout[-20000:]}{result.stderr}"
