"""Test-only runners for the latency self-tests (not part of the harness: nothing under converters/ uses them)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from export_harness.converters.latency.timing import Inputs, Timer


class SlowedRunner:
    """Wraps a runner and spins before each call for ``factor - 1`` times the previous call's duration, so
    every call takes ``factor`` times as long (``factor=1.2`` is a 20% regression).

    Injects a known slowdown for the gate's self-tests. Spinning, not sleeping, so the slowdown behaves like
    extra computation on the same core. The spin comes *before* the call so the PyTorch eager reference, which
    follows each artifact call in a round, runs exactly as it does without the wrapper (spinning after the call
    leaves a gap in which a neighbour can evict the eager model's cache lines, slowing eager instead).
    """

    def __init__(self, runner: Callable[[Inputs], Any], factor: float, timer: Timer = time.perf_counter) -> None:
        if factor < 1.0:
            raise ValueError(f"slowdown factor must be >= 1, got {factor}")
        self.runner = runner
        self.factor = factor
        self.timer = timer
        self.last = 0.0
        self.info = {**dict(getattr(runner, "info", {}) or {}), "injected_slowdown": factor}

    def __call__(self, inputs: Inputs) -> Any:
        end = self.timer() + self.last * (self.factor - 1.0)
        while self.timer() < end:
            pass
        t0 = self.timer()
        out = self.runner(inputs)
        self.last = self.timer() - t0
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.runner, name)
