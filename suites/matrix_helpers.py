"""Whole matrix sessions for the self-tests: run ``suites/test_matrix.py`` in a separate pytest process on the
session's artifact cache and compare what two runs decided."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from export_harness.plugin.project import cache_dir

ROOT = Path(__file__).resolve().parent.parent
VERDICT_AND_METRICS = ("cell", "model", "target", "outcome", "status", "stage", "message", "worst", "parity")


def run_matrix(pytestconfig: pytest.Config, report: Path, selection: str, *args: str,
               timeout: float = 1200) -> subprocess.CompletedProcess[str]:
    """``pytest suites/test_matrix.py -k SELECTION`` with its report at ``report``."""
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "suites" / "test_matrix.py"), "-p", "no:cacheprovider",
           "-q", "-k", selection, f"--harness-cache={cache_dir(pytestconfig)}", f"--harness-report={report}", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def essentials(cells: list[dict]) -> dict[str, dict]:
    """What two runs of the same cells must agree on: verdict, stage, message and every metric."""
    return {c["cell"]: {k: c[k] for k in VERDICT_AND_METRICS} for c in cells}
