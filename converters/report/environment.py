"""What a run ran on: machine kind, Python, the export stack's package versions and the commit (for the reports)."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

STACK = ("torch", "numpy", "onnx", "onnxruntime", "onnxscript", "tensorflow", "onnx2tf", "onnx-tf", "ai-edge-litert",
         "litert-torch", "ai-edge-quantizer", "pytest", "pytest-benchmark")


def stack_versions() -> dict[str, str]:
    """Installed versions of the export stack's packages (absent ones are left out)."""
    out = {}
    for name in STACK:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def commit(root: str | Path = ".") -> str | None:
    """The checkout's commit id (``+dirty`` when it has local changes), None outside git."""
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def environment(root: str | Path = ".") -> dict[str, Any]:
    """Machine kind, Python, stack versions and commit of this process."""
    from export_harness.converters.latency.machine import machine_id

    return {"machine_id": machine_id(), "python": platform.python_version(), "platform": platform.platform(),
            "commit": commit(root), "versions": stack_versions()}
