"""The repository is formatted and linted as ruff.toml says (``ruff format`` and ``ruff check``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from ruff.__main__ import find_ruff_bin

REPO = Path(__file__).resolve().parent.parent


def ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([find_ruff_bin(), *args], cwd=REPO, capture_output=True, text=True, check=False)


def test_the_code_is_formatted():
    done = ruff("format", "--check", ".")
    assert done.returncode == 0, f"run `.venv/bin/ruff format .`:\n{done.stdout}{done.stderr}"


def test_the_code_passes_the_linter():
    done = ruff("check", ".")
    assert done.returncode == 0, f"run `.venv/bin/ruff check .`:\n{done.stdout}{done.stderr}"
