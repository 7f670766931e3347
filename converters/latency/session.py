"""One latency session without pytest: settings, baseline selection, comparability, prepare, bench, remeasure, record.

The pytest plugin (``suites/plugin/latency.py``) and ``export-harness benchmark`` (``converters/cli/benchmark.py``)
both drive benchmarks through these functions, so a benchmark is loaded, timed and judged the same way by either.
Nothing here knows about a test framework: the caller runs the rounds (:func:`bench` takes a ``run`` hook, which
the plugin points at pytest-benchmark) and turns exceptions and failing verdicts into its own errors.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from export_harness.converters.defaults import check_numbers
from export_harness.converters.latency import gate as lg
from export_harness.converters.latency import process_control as pc
from export_harness.converters.latency.machine import machine_kind
from export_harness.converters.latency.memory import PeakRss
from export_harness.converters.latency.stats import LatencyStats, PairedTimings
from export_harness.converters.latency.timing import (
    CLOCKS,
    Inputs,
    Schedule,
    TimingPlan,
    clocks_for,
    measure,
    measure_paired,
    schedule_rounds,
    time_call,
    timed_call,
    warm_up,
)

EAGER = "torch:eager"
"""Pseudo-target name of the PyTorch eager rows (the reference every speedup is measured against)."""


# ---------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class BenchSettings:
    """``[bench]`` of ``converters/defaults/latency.toml``: what to time and how (documented in that file)."""

    batches: tuple[int, ...] = (1, 4, 16)
    threads: int = 1
    clock: str = "auto"
    pin_allocator: bool = True
    plan: TimingPlan = field(default_factory=TimingPlan)
    smoke_seconds: float = 1.0
    smoke_targets: tuple[str, ...] = ("onnx:fp32", "torchscript:trace")
    budget_rounds: int = 200
    budget_seconds: float = 10.0

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> BenchSettings:
        data = dict(data)
        plan_keys = {f for f in TimingPlan.__dataclass_fields__}
        own = set(cls.__dataclass_fields__) - {"plan"}
        unknown = sorted(set(data) - plan_keys - own)
        if unknown:
            raise ValueError(f"unknown [bench] keys {unknown}; known: {sorted(plan_keys | own)}")
        plan = TimingPlan(**{k: data.pop(k) for k in list(data) if k in plan_keys})
        if "batches" in data:
            data["batches"] = tuple(int(b) for b in data["batches"])
        if "smoke_targets" in data:
            data["smoke_targets"] = tuple(str(t) for t in data["smoke_targets"])
        settings = cls(plan=plan, **data)
        check_numbers(plan, "[bench]")
        check_numbers(settings, "[bench]")
        if settings.clock not in ("auto", "thread-cpu", "wall"):
            raise ValueError(f"[bench] clock must be auto, thread-cpu or wall, got {settings.clock!r}")
        if not settings.batches or min(settings.batches) < 1:
            raise ValueError(f"[bench] batches must be positive integers, got {settings.batches}")
        return settings


def plan_with_seconds(plan: TimingPlan, seconds: float | None) -> TimingPlan:
    """``plan`` with another time budget per benchmark (``None`` keeps it)."""
    return plan if seconds is None else TimingPlan(**{**plan.__dict__, "seconds": seconds})


# ---------------------------------------------------------------------------------------------- baseline


class BaselineUnavailable(Exception):
    """No baseline named ``ref`` for this machine kind (and no foreign one taken): ``reason`` says why, ``others``
    lists the machine folders present in the storage."""

    def __init__(self, ref: str, machine_id: str, reason: str, others: list[str]) -> None:
        super().__init__(f"no baseline {ref!r} for machine kind {machine_id} ({reason})")
        self.ref, self.machine_id, self.reason, self.others = ref, machine_id, reason, others


def select_baseline(directory: Path | None, ref: str, sessions: int, machine_id: str, *, foreign: bool = False,
                    no_storage: str = "no storage folder") -> tuple[lg.Baseline, str | None]:
    """The baseline to gate against and a note for the summary (``None`` when it is this machine kind's own).

    ``directory`` is this machine kind's folder of saved runs (``None``: no folder storage, only a JSON path works).
    With ``foreign`` a missing baseline falls back to the first other machine folder holding one (its verdicts are
    reported, not gated). A damaged file raises :class:`~export_harness.converters.latency.gate.BaselineError`;
    nothing usable raises :class:`BaselineUnavailable`."""
    try:
        if directory is None and not ref.endswith(".json"):
            raise FileNotFoundError(no_storage)
        return lg.load_baseline(directory or Path("."), ref, sessions), None
    except FileNotFoundError as exc:
        parent = directory.parent if directory else None
        others = sorted(p.name for p in parent.iterdir() if p.is_dir()) if parent and parent.is_dir() else []
        for other in others if foreign else ():
            try:
                baseline = lg.load_baseline(parent / other, ref, sessions)
            except FileNotFoundError:
                continue
            # Verdicts on it are "foreign" (reported, never failing) unless gate.machine_mismatch says otherwise:
            # the machine kind recorded in every benchmark differs from this one.
            return baseline, (f"no baseline {ref!r} for machine kind {machine_id}; compared with {other}'s "
                              f"(reported, not gated: another machine kind)")
        raise BaselineUnavailable(ref, machine_id, str(exc), others) from None


class MachineMismatch(Exception):
    """The baseline's machine kind differs and ``gate.machine_mismatch = 'error'``."""


def incomparable(base: Mapping[str, Any], clock: str, batch: int, threads: int) -> list[str]:
    """How the baseline entry (its ``extra_info``) was measured differently from this benchmark; empty = comparable."""
    differs = [f"{k} {base.get(k)!r} vs {v!r}" for k, v in (("clock", clock), ("batch", batch)) if base.get(k) != v]
    base_threads = (base.get("threads") or {}).get("requested")
    if base_threads != threads:
        differs.append(f"threads {base_threads!r} vs {threads!r}")
    return differs


def foreign_kind(base: Mapping[str, Any], gate: lg.GateConfig) -> str | None:
    """The machine-kind difference the verdict reports as foreign (``None``: same kind, or gated anyway)."""
    foreign = lg.kind_mismatch(base.get("machine_kind"), machine_kind())
    if foreign and gate.machine_mismatch == "error":
        raise MachineMismatch(f"baseline machine kind differs ({foreign}) and gate.machine_mismatch = 'error'")
    return None if foreign and gate.machine_mismatch == "gate" else foreign


# ---------------------------------------------------------------------------------------------- prepare


class EagerRunner:
    """PyTorch eager on named numpy inputs, as a Runner (the reference every ratio is taken against)."""

    def __init__(self, spec: Any, model: Any) -> None:
        import torch

        self.spec = spec
        self.model = model
        self.info = {"runtime": "torch", "mode": "eager", "version": torch.__version__}

    def __call__(self, inputs: Inputs) -> dict[str, np.ndarray]:
        from export_harness.models.spec import run_torch

        return run_torch(self.spec, self.model, dict(inputs))


def load_eager(eager: EagerRunner, inputs: Inputs, threads: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(threads record, peak RSS of the first run) of PyTorch eager."""
    with PeakRss() as probe:
        eager(inputs)
    return pc.runner_threads(eager) | {"requested": threads}, probe.result()


def load_target(target: Any, artifact: Any, spec: Any, inputs: Inputs, threads: int
                ) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """(runner, threads record, peak RSS) of an artifact loaded with fixed threads; the peak covers the load and
    the first call (which allocates the runtime's buffers for this batch), or for a runtime in another process
    that process's first call (the load is not covered)."""
    with PeakRss() as probe:
        runner, threads_record = pc.load_runner(target, artifact, spec, threads)
        pid = pc.runtime_pid(runner)
        if pid != "self":
            probe = PeakRss(pid).__enter__()
        runner(inputs)
    probe.__exit__(None, None, None)
    covers = "load + first run" if pid == "self" else "first run (runtime process)"
    return runner, threads_record, probe.result() | {"covers": covers}


@dataclass
class Prepared:
    """A benchmark ready to time: inputs built, runner loaded with fixed threads, memory measured."""

    case: Any
    inputs: dict[str, np.ndarray]
    runner: Any
    eager: EagerRunner
    threads: dict[str, Any]
    memory: dict[str, Any]
    artifact: dict[str, Any]
    conformance: dict[str, Any]
    reload: Callable[[], Any] | None = None

    def call_target(self) -> Callable[[], Any]:
        return timed_call(self.runner, self.inputs)

    def call_eager(self) -> Callable[[], Any]:
        eager, inputs = self.eager, self.inputs
        return lambda: eager(inputs)


# ------------------------------------------------------------------------------------------------ bench


@dataclass
class Timed:
    """What one benchmark's rounds measured."""

    clock: str
    clock_reason: str
    rounds: int
    iterations: int
    target: list[float]
    wall: list[float]
    """The artifact's rounds on the wall clock when the benchmark clock is a CPU clock (else empty: ``target``)."""
    paired: PairedTimings | None
    exchange: list[float] = field(default_factory=list)
    """Out-of-process runtimes: the harness's per-call exchange cost per round (outside the timed region)."""
    rounds_timings: PairedTimings = field(default_factory=PairedTimings)
    """Every round as measured, wall clock included."""


def bench(target: Callable[[], Any], reference: Callable[[], Any] | None, runner: Any, plan: TimingPlan,
          threads: int, clock: str = "auto", run: Callable[[Schedule], None] | None = None) -> Timed:
    """Pick the clock, warm up, fix rounds and iterations (:func:`~.timing.schedule_rounds`), then run the rounds:
    ``run(schedule)`` when given (it must call ``schedule.runner.round`` once per round), else ``schedule.rounds``
    rounds. Each round interleaves artifact and ``reference`` (PyTorch eager) calls."""
    schedule = schedule_rounds(target, reference, runner, plan, threads, clock)
    rounds_runner = schedule.runner
    try:
        if run is None:
            rounds_runner.run(schedule.rounds)
        else:
            run(schedule)
    finally:
        rounds_runner.release()
    timings = rounds_runner.timings
    wall = timings.wall_target if schedule.clock != "wall" else []
    paired = None
    if reference is not None:
        paired = PairedTimings(timings.target, timings.reference, timings.wall_target if wall else [],
                               timings.wall_reference if wall else [])
    return Timed(schedule.clock, schedule.why, len(timings.target), rounds_runner.iterations, list(timings.target),
                 wall, paired, rounds_runner.exchange, timings)


def remeasure(prepared: Prepared, timed: Timed, plan: TimingPlan) -> np.ndarray:
    """A fresh measurement of the same benchmark (a reloaded runner when the caller can reload one) on the same
    clock, rounds and iterations: its per-round ratios to eager, for the gate's confirmation."""
    runner = prepared.reload() if prepared.reload else prepared.runner
    timer, target_clocks = CLOCKS[timed.clock], clocks_for(timed.clock, runner)
    fns = [timed_call(runner, prepared.inputs), prepared.call_eager()]
    warm_up(fns, plan, timer, [target_clocks[0], timer])
    return measure_paired(fns[0], fns[1], timed.rounds, timed.iterations, timer, target_clocks).ratios


def time_single_calls(fn: Callable[[], Any], runner: Any, plan: TimingPlan, settings: BenchSettings
                      ) -> tuple[LatencyStats, int]:
    """Single calls on the wall clock (an out-of-process runtime's own): their stats and how many were timed."""
    wall = clocks_for("wall", runner)[1]
    warm_up([fn], plan, time.perf_counter, [wall])
    per_call = time_call(fn, wall)
    rounds = int(max(20, min(settings.budget_rounds, settings.budget_seconds / max(per_call, 1e-6))))
    return LatencyStats.from_seconds(measure(fn, rounds, 1, wall)), rounds


# ----------------------------------------------------------------------------------------------- judge


def judge(name: str, prepared: Prepared, timed: Timed, baseline: lg.Baseline, gate: lg.GateConfig, threads: int,
          plan: TimingPlan) -> lg.Verdict:
    """The gate's verdict on one benchmark against ``baseline`` (raises :class:`MachineMismatch`)."""
    entry = baseline.entries.get(name)
    if prepared.case.target is None or timed.paired is None:
        return lg.Verdict("ok", "PyTorch eager: the reference of every ratio, reported, not gated")
    if entry is None and name in baseline.lost:
        return lg.Verdict("incomplete-baseline", f"{name} is listed in {baseline.path.name}'s {lg.MANIFEST} but its "
                          "benchmark is missing: the baseline is damaged or was edited; re-record it")
    if entry is None:
        return lg.Verdict("no-baseline", f"{name} is not in {baseline.path.name}: new benchmark")
    if entry.ratios is None or not entry.extra.get("clock"):
        return lg.Verdict("incomplete-baseline", f"{name} in {baseline.path} has no paired per-round timings or "
                          f"clock (extra_info missing or damaged): nothing to compare with; re-record the baseline")
    differs = incomparable(entry.extra, timed.clock, prepared.case.batch, threads)
    if differs:
        return lg.Verdict("incomparable", "baseline measured differently: " + "; ".join(differs)
                          + " (re-record the baseline or use its settings)")
    foreign = foreign_kind(entry.extra, gate)
    return lg.decide(timed.paired.ratios, entry.ratios, gate, lambda: remeasure(prepared, timed, plan), foreign,
                     contention=timed.paired.contention, between=entry.between_spread)


# ---------------------------------------------------------------------------------------------- record


def record_fields(prepared: Prepared, timed: Timed, *, allocator: str, machine_id: str, scope: str
                  ) -> dict[str, Any]:
    """A benchmark's saved record (pytest-benchmark's ``extra_info``; the ``--latency-report`` rows)."""
    case = prepared.case
    stats = LatencyStats.from_seconds(timed.target)
    wall = LatencyStats.from_seconds(timed.wall) if timed.wall else stats
    extra: dict[str, Any] = {
        "cell": case.cell_id, "model": case.spec.name, "target": case.target_name, "batch": case.batch,
        "clock": timed.clock, "clock_reason": timed.clock_reason, "rounds": timed.rounds,
        "iterations_per_round": timed.iterations, "threads": prepared.threads,
        "allocator": allocator, "latency_ms": stats.to_dict(), "wall_ms": wall.to_dict(),
        "throughput_per_s": round(stats.throughput(case.batch), 2),
        "wall_throughput_per_s": round(wall.throughput(case.batch), 2),
        "peak_rss": prepared.memory, "artifact": prepared.artifact, "conformance": prepared.conformance,
        "versions": versions(case.target), "runtime": _jsonable(getattr(prepared.runner, "info", {})),
        "machine_kind": machine_kind(), "machine_id": machine_id, "scope": scope,
    }
    if timed.exchange:
        extra["exchange_ms"] = {"median": round(1e3 * float(np.median(timed.exchange)), 4),
                                "what": "per call, the harness's IPC and .npz exchange with the runtime's "
                                        "process, outside the timed invokes (not in latency_ms)"}
    if timed.paired is not None:
        eager = LatencyStats.from_seconds(timed.paired.reference)
        contention = timed.paired.contention
        extra["contention"] = round(contention, 3) if contention else None
        extra.update({"eager_ms": eager.to_dict(), "ratio_to_eager": round(timed.paired.ratio, 5),
                      "speedup_vs_eager": round(timed.paired.speedup, 4), "paired": timed.paired.to_dict()})
    else:
        extra.update({"ratio_to_eager": 1.0, "speedup_vs_eager": 1.0})
    return extra


def versions(target: Any | None) -> dict[str, str]:
    import onnxruntime
    import torch

    out = {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
           "onnxruntime": onnxruntime.__version__}
    if target is not None:
        out.update(target.versions())
    return out


def _jsonable(value: Any) -> Any:
    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return str(value)
