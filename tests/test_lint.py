"""The code passes `ruff check` under the rules of pyproject.toml ([tool.ruff])."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PATHS = ["src", "tests", "benchmarks", "docs"]


def _ruff() -> list[str] | None:
    if importlib.util.find_spec("ruff") is not None:
        return [sys.executable, "-m", "ruff"]
    exe = shutil.which("ruff")
    return [exe] if exe else None


def test_ruff_finds_nothing() -> None:
    ruff = _ruff()
    if ruff is None:
        pytest.skip("ruff is not installed (it is in the `test` extra: pip install -e '.[test]')")
    proc = subprocess.run([*ruff, "check", "--no-cache", "--output-format", "concise", *PATHS], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"ruff check {' '.join(PATHS)}:\n{proc.stdout}{proc.stderr}"
