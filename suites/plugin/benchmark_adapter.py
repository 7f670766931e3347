"""The one place that reaches into pytest-benchmark's private attributes (pytest-benchmark 5.3.1, pinned).

- ``config._benchmarksession``: the session object, whose ``machine_id`` and ``storage`` (``path``,
  ``default_machine_id``) decide where runs are saved and looked up;
- ``BenchmarkFixture._timer``: the timer pedantic mode reads around each round (set per benchmark here, because the
  clock is chosen after warm-up, too late for ``@pytest.mark.benchmark(timer=...)``).

Everything else the latency plugin uses is pytest-benchmark's public surface: ``benchmark.pedantic``, ``.disabled``,
``.group``, ``.extra_info`` and ``.stats``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


def _session(config: Any) -> Any | None:
    return getattr(config, "_benchmarksession", None)


def storage_path(config: Any) -> Path | None:
    """The ``--benchmark-storage`` folder when it is a ``file://`` storage, else ``None``."""
    path = getattr(getattr(_session(config), "storage", None), "path", None)
    return Path(path) if path is not None else None


def own_machine_id(config: Any) -> str | None:
    """pytest-benchmark's own machine key (``Linux-CPython-3.11-64bit``), ``None`` without the plugin."""
    return getattr(_session(config), "machine_id", None)


def key_storage(config: Any, machine_id: str) -> bool:
    """Make pytest-benchmark save and look up runs under ``STORAGE/<machine_id>/``; False without the plugin."""
    bs = _session(config)
    if bs is None:
        return False
    bs.machine_id = machine_id
    if hasattr(bs.storage, "default_machine_id"):
        bs.storage.default_machine_id = machine_id
    return True


def _named(fn: Callable[[], float], name: str) -> Callable[[], float]:
    """A clock whose name pytest-benchmark records in the run's JSON (``options.timer``)."""

    def clock() -> float:
        return fn()

    clock.__name__ = name
    return clock


def pedantic(benchmark: Any, round_fn: Callable[[], Any], rounds: int, clock: Callable[[], float],
             clock_name: str) -> list[float]:
    """``rounds`` pedantic rounds of ``round_fn`` (one iteration, no warm-up) timed on ``clock``, recorded under
    ``clock_name``; returns the per-round times pytest-benchmark stored."""
    benchmark._timer = _named(clock, clock_name)
    benchmark.pedantic(round_fn, rounds=rounds, iterations=1, warmup_rounds=0)
    return [float(t) for t in benchmark.stats.stats.data]
