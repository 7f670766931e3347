"""Memory from ``/proc`` (Linux): the peak resident memory of the process that runs an artifact, what is free."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any


def read_rss_kb(pid: int | str = "self") -> dict[str, int]:
    """``VmRSS`` (resident now) and ``VmHWM`` (peak resident) of a process, in kB, from ``/proc``."""
    text = Path(f"/proc/{pid}/status").read_text()
    out = {}
    for key in ("VmRSS", "VmHWM"):
        match = re.search(rf"^{key}:\s+(\d+)\s+kB", text, re.M)
        if match:
            out[key] = int(match.group(1))
    return out


def reset_peak_rss(pid: int | str = "self") -> bool:
    """Reset the process's ``VmHWM`` to its current RSS (Linux >= 4.0, ``clear_refs`` value 5)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class PeakRss:
    """Peak resident memory of a process while a block runs (the process that executes the runtime).

    ``with PeakRss(pid) as probe: load and run`` then ``probe.result()``: ``peak_mb`` (process peak during the
    block), ``peak_delta_mb`` (peak minus resident before: what loading and running this artifact needed on top
    of what the process already held) and ``retained_delta_mb`` (resident after minus before). Allocator reuse
    can hide memory freed by earlier cells, so the delta is what this load *added*, not a standalone footprint.
    """

    def __init__(self, pid: int | str = "self") -> None:
        self.pid = pid
        self.before: dict[str, int] = {}
        self.after: dict[str, int] = {}
        self.reset = False

    def __enter__(self) -> PeakRss:
        try:
            self.reset = reset_peak_rss(self.pid)
            self.before = read_rss_kb(self.pid)
        except OSError:
            self.before = {}
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):
            self.after = read_rss_kb(self.pid)

    def result(self) -> dict[str, Any]:
        if not self.before or not self.after:
            return {"pid": str(self.pid), "method": "unavailable (no /proc)", "peak_mb": None,
                    "peak_delta_mb": None, "retained_delta_mb": None}
        before, peak, now = self.before["VmRSS"], self.after["VmHWM"], self.after["VmRSS"]
        method = "VmHWM reset via /proc/PID/clear_refs" if self.reset else \
            "VmHWM not resettable: process-lifetime peak, delta is a lower bound"
        return {"pid": str(self.pid), "method": method, "rss_before_mb": round(before / 1024, 1),
                "peak_mb": round(peak / 1024, 1), "peak_delta_mb": round(max(0, peak - before) / 1024, 1),
                "retained_delta_mb": round((now - before) / 1024, 1)}




def available_bytes() -> int:
    """Memory the kernel says is available now (``MemAvailable``), else the physical memory's size."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
