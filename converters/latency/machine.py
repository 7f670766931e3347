"""Machine identity: what makes two timings comparable, and the storage key of saved runs."""

from __future__ import annotations

import platform
import re
from collections.abc import Mapping
from typing import Any

from export_harness.converters.util.cpu import cpu_model, usable_cpus


def machine_kind() -> dict[str, Any]:
    """What makes timings comparable: OS, Python, architecture, CPU model and usable CPUs (not clock drift)."""
    return {"system": platform.system(), "python": ".".join(platform.python_version_tuple()[:2]),
            "implementation": platform.python_implementation(), "bits": platform.architecture()[0],
            "machine": platform.machine(), "cpu": cpu_model(), "cpus": usable_cpus()}


def machine_id(kind: Mapping[str, Any] | None = None) -> str:
    """Storage key for baselines: pytest-benchmark's ``Linux-CPython-3.11-64bit`` plus CPU model and count."""
    kind = dict(kind or machine_kind())
    cpu = re.sub(r"[^A-Za-z0-9]+", "_", str(kind["cpu"])).strip("_")[:40] or "cpu"
    return f"{kind['system']}-{kind['implementation']}-{kind['python']}-{kind['bits']}-{cpu}-{kind['cpus']}cpu"
