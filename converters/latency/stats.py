"""Robust statistics of latency timings: per-call summaries and the paired artifact / eager rounds the gate judges.

The gate compares ratios, not absolute times: each round's ``target / eager`` cancels what the machine does to both
calls of the round (docs/latency.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass(frozen=True)
class LatencyStats:
    """Robust summary of raw per-call timings, in milliseconds (percentiles by linear interpolation)."""

    rounds: int
    min_ms: float
    q1_ms: float
    median_ms: float
    q3_ms: float
    iqr_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    stdev_ms: float

    @classmethod
    def from_seconds(cls, timings: Sequence[float]) -> LatencyStats:
        if not len(timings):
            raise ValueError("no timings to summarise")
        ms = np.asarray(timings, dtype=np.float64) * 1e3
        q1, med, q3, p90, p95, p99 = np.percentile(ms, [25, 50, 75, 90, 95, 99])
        return cls(
            rounds=int(ms.size), min_ms=float(ms.min()), q1_ms=float(q1), median_ms=float(med), q3_ms=float(q3),
            iqr_ms=float(q3 - q1), p90_ms=float(p90), p95_ms=float(p95), p99_ms=float(p99), max_ms=float(ms.max()),
            mean_ms=float(ms.mean()), stdev_ms=float(ms.std(ddof=1)) if ms.size > 1 else 0.0,
        )

    def throughput(self, batch: int) -> float:
        """Samples per second at the median latency."""
        return batch / (self.median_ms / 1e3) if self.median_ms > 0 else math.inf

    @property
    def rel_iqr(self) -> float:
        return self.iqr_ms / self.median_ms if self.median_ms > 0 else math.inf

    def to_dict(self, digits: int = 4) -> dict[str, float | int]:
        return {k: (_sig(v, digits) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass
class PairedTimings:
    """Per-round seconds per call of the artifact and of the eager reference timed right after it.

    ``target``/``reference`` are on the benchmark's clock (the gated numbers); ``wall_target``/``wall_reference``
    hold the same rounds on the wall clock when the benchmark clock is a CPU clock (for reporting latency).
    """

    target: list[float] = field(default_factory=list)
    reference: list[float] = field(default_factory=list)
    wall_target: list[float] = field(default_factory=list)
    wall_reference: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.target) != len(self.reference):
            raise ValueError(f"paired timings differ in length: {len(self.target)} vs {len(self.reference)}")

    @property
    def ratios(self) -> np.ndarray:
        """Per-round ``target / reference``: above 1 the artifact is slower than PyTorch eager."""
        return np.asarray(self.target, dtype=np.float64) / np.asarray(self.reference, dtype=np.float64)

    @property
    def ratio(self) -> float:
        """Median per-round ratio to eager (the gated quantity)."""
        return float(np.median(self.ratios))

    @property
    def speedup(self) -> float:
        """How many times faster than PyTorch eager (``1 / ratio``), as guide 004's "Speedup" column."""
        return 1.0 / self.ratio

    @property
    def contention(self) -> float | None:
        """Wall time over CPU time of the measured calls (1.0 on an idle core; 2.0 = the thread got half a
        core). Only meaningful when the benchmark clock is a CPU clock."""
        if not self.wall_target:
            return None
        cpu = sum(self.target) + sum(self.reference)
        return (sum(self.wall_target) + sum(self.wall_reference)) / cpu if cpu > 0 else None

    def to_dict(self, digits: int = 4, wall: bool = False) -> dict[str, list[float]]:
        """Raw timings in milliseconds, rounded to ``digits`` significant digits (for benchmark JSON; the wall
        clock arrays only with ``wall=True``: their summary is stored anyway and they double the file)."""
        out = {"target_ms": [_sig(t * 1e3, digits) for t in self.target],
               "eager_ms": [_sig(t * 1e3, digits) for t in self.reference]}
        if wall and self.wall_target:
            out["wall_target_ms"] = [_sig(t * 1e3, digits) for t in self.wall_target]
            out["wall_eager_ms"] = [_sig(t * 1e3, digits) for t in self.wall_reference]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Sequence[float]]) -> PairedTimings:
        def sec(key: str) -> list[float]:
            return [t / 1e3 for t in data.get(key, [])]

        return cls(sec("target_ms"), sec("eager_ms"), sec("wall_target_ms"), sec("wall_eager_ms"))


def _sig(value: float, digits: int) -> float:
    if value == 0 or not math.isfinite(value):
        return float(value)
    return float(f"{value:.{digits}g}")


