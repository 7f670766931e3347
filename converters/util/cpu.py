"""This machine's CPU as the harness identifies it: feature flags (declarations that hold only on some CPUs) and a
model string (which latency baselines are comparable). ``/proc/cpuinfo`` is read here and nowhere else."""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import re
from pathlib import Path


@functools.cache
def _cpuinfo() -> str:
    with contextlib.suppress(OSError):
        return Path("/proc/cpuinfo").read_text()
    return ""


def _field(name: str) -> str | None:
    match = re.search(rf"^{re.escape(name)}\s*:\s*(.+)$", _cpuinfo(), re.M)
    return match.group(1).strip() if match else None


@functools.cache
def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags (``/proc/cpuinfo``; ``$HARNESS_CPU_FLAGS``, space-separated, overrides for tests)."""
    override = os.environ.get("HARNESS_CPU_FLAGS")
    if override is not None:
        return frozenset(override.split())
    return frozenset((_field("flags") or "").split())


def cpu_model() -> str:
    """CPU model name with family/model numbers and the widest x86 SIMD level; ``platform.processor()`` where
    ``/proc/cpuinfo`` has no model name.

    Hypervisors often report a bare vendor name for CPUs of different generations, whose timings are not
    comparable: the family/model numbers and SIMD level tell them apart."""
    name = _field("model name")
    if name is None:
        return platform.processor() or platform.machine()
    family, model = _field("cpu family"), _field("model")
    flags = set((_field("flags") or "").split())
    isa = next((level for level in ("avx512f", "avx2", "avx") if level in flags), None)
    parts = [name]
    if family and model:
        parts.append(f"f{family}m{model}")
    if isa:
        parts.append(isa)
    return " ".join(parts)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
