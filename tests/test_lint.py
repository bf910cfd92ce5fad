"""ruff (pinned in requirements.txt) finds nothing under pyproject.toml's rules, line length included."""

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
