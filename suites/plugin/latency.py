"""pytest glue for the latency suite: options, case generation, the per-benchmark driver, gate and summary.

Part of the harness plugin (:mod:`export_harness.plugin`). The measuring and the statistics live in
``converters/latency/measure.py`` and ``converters/latency/gate.py``; this module only orchestrates pytest-benchmark.
Usage and design: docs/latency.md.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from export_harness.converters.cache import artifact_sha256
from export_harness.plugin import project
from export_harness.plugin.accuracy import accuracy_gate_of
from export_harness.plugin.cells import cells
from export_harness.plugin.core import get_harness, harness_tier
from export_harness.plugin.lazy import LazyModule

if TYPE_CHECKING:
    import numpy as np

    from export_harness.converters import conformance
    from export_harness.converters.conformance import CellResult
    from export_harness.converters.latency import gate as lg
    from export_harness.converters.latency import measure as lat
    from export_harness.converters.target import Target
    from export_harness.models.spec import ModelSpec
else:  # imported when a latency item needs them
    np = LazyModule("numpy")
    conformance = LazyModule("export_harness.converters.conformance")
    lat = LazyModule("export_harness.converters.latency.measure")
    lg = LazyModule("export_harness.converters.latency.gate")

EAGER = "torch:eager"
"""Pseudo-target name of the PyTorch eager rows (the reference every speedup is measured against)."""
ACCURACY_PASSED = ("passed", "within stored baseline")
"""``accuracy_gate_of`` verdicts that mean an accuracy cell passed these exact bytes."""

SCOPES = ("smoke", "full")
STATE_KEY = pytest.StashKey["LatencyState"]()


# ------------------------------------------------------------------------------------------------ options


def _positive(kind: type, *, zero: bool = False) -> Any:
    """An argparse ``type=`` that accepts a finite number > 0 (>= 0 with ``zero``): a bad value is a usage error."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
            raise argparse.ArgumentTypeError(f"expected a finite number {'>= 0' if zero else '> 0'}, got {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _batches(text: str) -> tuple[int, ...]:
    """``1,4,16`` -> (1, 4, 16); empty, non-integer or non-positive sizes are usage errors."""
    try:
        sizes = tuple(int(b) for b in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,4,16, got {text!r}") from None
    if min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be positive, got {text!r}")
    return sizes


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("latency", "latency suite and regression gate (docs/latency.md)")
    group.addoption("--latency-scope", default=os.environ.get("HARNESS_LATENCY_SCOPE"), choices=SCOPES,
                    help="smoke (default; full with --harness-tier=full): smoke models at batch 1, small time budget; "
                         "full: every passing cell at every batch size (env HARNESS_LATENCY_SCOPE)")
    group.addoption("--latency-batches", default=None, metavar="1,4,16", type=_batches,
                    help="batch sizes to time (default: [bench] batches of the config in full scope, 1 in smoke)")
    group.addoption("--latency-seconds", default=None, type=_positive(float), metavar="S",
                    help="time budget per benchmark in seconds of the benchmark clock (default [bench] seconds, "
                         "smoke_seconds in smoke scope)")
    group.addoption("--latency-threads", default=None, type=_positive(int, zero=True), metavar="N",
                    help="intra-op threads for eager/TorchScript/ONNX Runtime (default [bench] threads; 0 = runtime "
                         "defaults)")
    group.addoption("--latency-config", default=None, metavar="FILE",
                    help="latency settings, gate thresholds and budgets, layered over the harness's defaults "
                         "(default: baselines/latency.toml in the rootdir when it exists)")
    group.addoption("--latency-gate", action="store_true",
                    help="compare every benchmark with the baseline and fail on a confirmed regression")
    group.addoption("--latency-baseline", default="baseline", metavar="REF",
                    help="baseline for --latency-gate: a JSON path, or a run in the storage's machine folder: a "
                         "name (default 'baseline': the newest NNNN_baseline.json), a number, latest, -1")
    group.addoption("--latency-baseline-missing", default="error", choices=("error", "foreign"),
                    help="when this machine kind has no baseline: error (default), or foreign = gate against "
                         "the baseline of another machine kind in the storage, reported but never failing "
                         "(what CI on unknown hardware wants)")
    group.addoption("--latency-baseline-sessions", default=None, type=int, metavar="N",
                    help="pool the newest N runs saved under the baseline's name (default [gate] baseline_sessions)")
    group.addoption("--latency-budgets", default=None, metavar="PROFILE",
                    help="opt in to the latency budgets of PROFILE (cpu, gpu, mps, or your own) from the config")
    group.addoption("--latency-selftest", default=None, choices=("fast", "full"),
                    help="gate self-tests: fast (default; full with --harness-tier=full) or full (adds the heavier, "
                         "latency_heavy-marked ones)")
    group.addoption("--latency-machine-id", default="auto", metavar="auto|pytest-benchmark|NAME",
                    help="folder key of saved runs under --benchmark-storage: auto = OS-Python-bits-CPU model-CPU "
                         "count (default), pytest-benchmark = its own OS-Python-bits key, or a NAME")
    group.addoption("--latency-report", default=None, metavar="PATH",
                    help="write every benchmark's summary and gate verdict as JSON to PATH")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "latency_heavy: heavier latency-gate self-tests (--latency-selftest=full)")


def _start(config: pytest.Config) -> LatencyState:
    """The session's latency state, started once a latency item is collected (an unrelated pytest run never pays
    for it): pytest-benchmark's storage keyed by machine, and with ``--latency-gate`` the baseline loaded (a
    missing or damaged one is a usage error)."""
    state = _state(config)
    if not state.started:
        state.started = True
        _key_storage_by_machine(config, state)
        if config.getoption("--latency-gate"):
            state.load_baseline()
    return state


def _key_storage_by_machine(config: pytest.Config, state: LatencyState) -> None:
    """Make pytest-benchmark save and look up runs under ``STORAGE/<machine kind>/`` instead of its
    OS-Python-bits folder, so baselines of different CPUs never mix (pytest-benchmark 5.3.1 attributes)."""
    bs = getattr(config, "_benchmarksession", None)
    choice = config.getoption("--latency-machine-id")
    if bs is None or choice == "pytest-benchmark":
        state.machine_id = getattr(bs, "machine_id", None) or lat.machine_id()
        return
    state.machine_id = lat.machine_id() if choice == "auto" else choice
    bs.machine_id = state.machine_id
    if hasattr(bs.storage, "default_machine_id"):
        bs.storage.default_machine_id = state.machine_id


# ------------------------------------------------------------------------------------------------- state


@dataclass
class Record:
    """What the summary table, the speedup table and ``--latency-report`` show for one benchmark."""

    id: str
    model: str
    target: str
    batch: int
    extra: dict[str, Any]
    verdict: lg.Verdict | None = None


@dataclass
class LatencyState:
    """Per-session settings, the baseline and everything measured (attached to the pytest config)."""

    config: pytest.Config
    settings: lat.BenchSettings
    gate: lg.GateConfig
    budgets: list[lg.Budget]
    scope: str
    batches: tuple[int, ...]
    threads: int
    machine_id: str = ""
    baseline: lg.Baseline | None = None
    allocator: str = ""
    records: list[Record] = field(default_factory=list)
    budget_results: list[dict[str, Any]] = field(default_factory=list)
    selftest: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    started: bool = False
    _conformance: dict[str, CellResult] = field(default_factory=dict)
    _hashes: dict[str, str] = field(default_factory=dict)

    @property
    def plan(self) -> lat.TimingPlan:
        seconds = self.config.getoption("--latency-seconds")
        if seconds is None and self.scope == "smoke":
            seconds = self.settings.smoke_seconds
        if seconds is None:
            return self.settings.plan
        return lat.TimingPlan(**{**self.settings.plan.__dict__, "seconds": seconds})

    def storage_dir(self) -> Path | None:
        bs = getattr(self.config, "_benchmarksession", None)
        path = getattr(getattr(bs, "storage", None), "path", None)
        return Path(path) / self.machine_id if path is not None else None

    def load_baseline(self) -> None:
        ref = self.config.getoption("--latency-baseline")
        directory = self.storage_dir()
        try:
            if directory is None and not ref.endswith(".json"):
                raise FileNotFoundError("--benchmark-storage is not a file:// storage")
            sessions = self.config.getoption("--latency-baseline-sessions") or self.gate.baseline_sessions
            baseline = lg.load_baseline(directory or Path("."), ref, sessions)
        except lg.BaselineError as exc:
            raise pytest.UsageError(f"--latency-gate: {exc}") from None
        except FileNotFoundError as exc:
            parent = directory.parent if directory else None
            others = sorted(p.name for p in parent.iterdir() if p.is_dir()) if parent and parent.is_dir() else []
            for other in others if self.config.getoption("--latency-baseline-missing") == "foreign" else ():
                with contextlib.suppress(FileNotFoundError):
                    try:
                        baseline = lg.load_baseline(parent / other, ref, sessions)
                    except lg.BaselineError as damaged:
                        raise pytest.UsageError(f"--latency-gate: {damaged}") from None
                    # Verdicts on it are "foreign" (reported, never failing) unless gate.machine_mismatch says
                    # otherwise: the machine kind recorded in every benchmark differs from this one.
                    self.notes.append(f"no baseline {ref!r} for machine kind {self.machine_id}; compared with "
                                      f"{other}'s (reported, not gated: another machine kind)")
                    self.baseline = baseline
                    return
            raise pytest.UsageError(
                f"--latency-gate: no baseline {ref!r} for machine kind {self.machine_id} ({exc}). Machine folders "
                f"present: {', '.join(others) or 'none'}. Record one on this machine kind with: pytest "
                f"suites/test_latency.py --latency-scope=full --benchmark-storage=file://baselines/benchmarks "
                f"--benchmark-save=baseline, {self.gate.baseline_sessions} times (or pass "
                f"--latency-baseline=PATH to compare across machines deliberately)") from None
        self.baseline = baseline

    def conformance(self, harness: Any, spec: ModelSpec, target: Target) -> CellResult:
        """The cell's conformance result, run once per session (a failed one has ``status == "failed"``). Only
        the result is kept, never the exception: its traceback would keep sessions and tensors alive."""
        key = f"{spec.name}-{target.name}"
        if key not in self._conformance:
            try:
                self._conformance[key] = conformance.run_cell(
                    harness.cell_spec(spec), target, harness.reference_model(spec), cache=harness.cache,
                    thresholds=harness.thresholds, targets=harness.targets, identities=harness.identities)
            except conformance.CellFailure as failure:
                self._conformance[key] = failure.result
        return self._conformance[key]

    def content_hash(self, artifact: Any) -> str:
        if artifact.key not in self._hashes:
            self._hashes[artifact.key] = artifact_sha256(artifact.path)
        return self._hashes[artifact.key]


def _state(config: pytest.Config) -> LatencyState:
    state = config.stash.get(STATE_KEY, None)
    if state is None:
        path = project.project_file(config, "--latency-config", "latency.toml")
        try:
            data = lg.load_toml(path)
            settings = lat.BenchSettings.from_mapping(data.get("bench", {}))
            gate = lg.GateConfig.from_mapping(data.get("gate", {}))
            budgets = lg.load_budgets(data.get("budgets", []))
        except (OSError, ValueError, TypeError) as exc:
            raise pytest.UsageError(f"--latency-config {path or lg.DEFAULT_CONFIG}: {exc}") from None
        scope = config.getoption("--latency-scope") or ("full" if harness_tier(config) == "full" else "smoke")
        batches = config.getoption("--latency-batches") or (settings.batches if scope == "full" else (1,))
        threads = config.getoption("--latency-threads")
        profile = config.getoption("--latency-budgets")
        if profile and not any(b.profile == profile for b in budgets):
            known = sorted({b.profile for b in budgets})
            raise pytest.UsageError(f"--latency-budgets: no budgets for profile {profile!r}; known: {known}")
        state = LatencyState(config=config, settings=settings, gate=gate, budgets=budgets, scope=scope,
                             batches=batches, threads=settings.threads if threads is None else threads)
        config.stash[STATE_KEY] = state
    return state


# ------------------------------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class LatencyCase:
    """One benchmark: a model, a target (``None`` = PyTorch eager) and a batch size."""

    spec: ModelSpec
    target: Target | None
    batch: int

    @property
    def target_name(self) -> str:
        return self.target.name if self.target else EAGER

    @property
    def cell_id(self) -> str:
        return f"{self.spec.name}-{self.target_name}"

    @property
    def id(self) -> str:
        return f"{self.cell_id}-b{self.batch}"

    def __repr__(self) -> str:
        return f"LatencyCase({self.id})"


@dataclass(frozen=True)
class BudgetCase:
    spec: ModelSpec
    target: Target | None
    budget: lg.Budget

    @property
    def id(self) -> str:
        return f"{self.spec.name}-{self.target.name if self.target else EAGER}"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "latency_case" not in metafunc.fixturenames and "budget_case" not in metafunc.fixturenames:
        return
    from export_harness.models.spec import star_match

    config = metafunc.config
    state, harness = _state(config), get_harness(config)
    timed = {s.name for s in harness.models.specs() if state.scope == "full" or s.smoke}
    if "latency_case" in metafunc.fixturenames:
        params = []
        for spec, target, shared in cells(harness, eager=True):
            if spec.name not in timed or (state.scope == "smoke" and target is not None and not any(
                    star_match(g, target.name) for g in state.settings.smoke_targets)):
                continue
            for batch in state.batches if spec.dynamic_batch else (1,):
                case = LatencyCase(spec, target, batch)
                marks = [m for m in shared if m.name != "smoke" or batch == 1]  # smoke rows: batch 1 only
                params.append(pytest.param(case, id=case.id, marks=marks))
        metafunc.parametrize("latency_case", params)
    if "budget_case" in metafunc.fixturenames:
        profile = config.getoption("--latency-budgets")
        if not profile:  # opt-in only: one placeholder, deselected in pytest_collection_modifyitems
            metafunc.parametrize("budget_case", [pytest.param(None, id="budgets-not-requested")])
            return
        params = []
        for spec, target, shared in cells(harness, eager=True):
            name = target.name if target else EAGER
            budget = next((b for b in state.budgets if b.profile == profile and b.applies(spec.name, name)), None)
            if budget is not None:
                case = BudgetCase(spec, target, budget)
                params.append(pytest.param(case, id=case.id, marks=[m for m in shared if m.name == "skip"]))
        metafunc.parametrize("budget_case", params)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    keep, drop = [], []
    budgets_on = bool(config.getoption("--latency-budgets"))
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec and "budget_case" in callspec.params and not budgets_on:
            drop.append(item)  # budgets are opt-in: not even collected as skipped
        else:
            keep.append(item)
        selftest = config.getoption("--latency-selftest") or ("full" if harness_tier(config) == "full" else "fast")
        if item.get_closest_marker("latency_heavy") and selftest != "full":
            item.add_marker(pytest.mark.skip(reason="heavier gate self-test: run with --latency-selftest=full "
                                                    "(tox -e bench does)"))
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
    if any(_is_latency_item(item) for item in items):
        _start(config)


def _is_latency_item(item: pytest.Item) -> bool:
    return bool({"latency", "latency_state"} & set(getattr(item, "fixturenames", ())))


# ------------------------------------------------------------------------------------------------ driver


@dataclass
class Prepared:
    """A benchmark ready to time: conformance passed, inputs built, runner loaded with fixed threads."""

    case: LatencyCase
    inputs: dict[str, np.ndarray]
    runner: Any
    eager: lat.EagerRunner
    threads: dict[str, Any]
    memory: dict[str, Any]
    artifact: dict[str, Any]
    conformance: dict[str, Any]
    reload: Callable[[], Any] | None = None

    def call_target(self) -> Callable[[], Any]:
        return lat.timed_call(self.runner, self.inputs)

    def call_eager(self) -> Callable[[], Any]:
        eager, inputs = self.eager, self.inputs
        return lambda: eager(inputs)


@dataclass
class Timed:
    clock: str
    clock_reason: str
    rounds: int
    iterations: int
    target: list[float]
    wall: list[float]
    paired: lat.PairedTimings | None
    exchange: list[float] = field(default_factory=list)
    """Out-of-process runtimes: the harness's per-call exchange cost per round (outside the timed region)."""


class LatencyDriver:
    """Per-test handle over the session state: prepare, bench, record, gate (see ``suites/test_latency.py``)."""

    def __init__(self, state: LatencyState, request: pytest.FixtureRequest) -> None:
        self.state = state
        self.request = request

    def require_timing(self, benchmark: Any) -> None:
        """Skip (saying why) when pytest-benchmark will not time anything: under pytest-xdist or
        ``--benchmark-disable`` it runs the function once, and a latency measured that way means nothing."""
        if getattr(benchmark, "disabled", False):
            pytest.skip("benchmarks disabled (pytest-xdist -n, or --benchmark-disable): latency is only measured "
                        "in a serial run")

    # -- prepare
    def prepare(self, case: LatencyCase, harness: Any) -> Prepared:
        """Conformance first (a failing cell is skipped, saying why), then inputs, runner, threads and memory."""
        state = self.state
        spec, target = case.spec, case.target
        model = harness.reference_model(spec)  # the weights the accuracy gates measured: one artifact, one sha256
        eager = lat.EagerRunner(spec, model)
        inputs = spec.example_inputs(case.batch, seed=0)
        if target is None:
            with lat.PeakRss() as probe:
                eager(inputs)
            return Prepared(case, inputs, eager, eager, lat.runner_threads(eager) | {"requested": state.threads},
                            probe.result(), {}, {"status": "reference"})
        result = state.conformance(harness, spec, target)
        if result.status != "passed":
            failed = result
            limitation = spec.limitation_for(target.name)
            known = f" (declared limitation: {limitation.reason})" if limitation else ""
            first = failed.message.splitlines()[0] if failed.message else ""
            pytest.skip(f"conformance failed at stage {failed.stage}{known}: {first[:300]}")
        artifact = conformance.export_artifact(target, harness.cell_spec(spec), model, harness.cache, harness.targets,
                                   harness.identities)

        def load() -> tuple[Any, dict[str, Any]]:
            return lat.load_runner(target, artifact, spec, state.threads)

        with lat.PeakRss() as probe:
            runner, threads = load()
            pid = lat.runtime_pid(runner)
            if pid != "self":  # out-of-process runtime: its own peak, from here on (the load is not covered)
                probe = lat.PeakRss(pid).__enter__()
            runner(inputs)  # the first call allocates the runtime's buffers for this batch
        probe.__exit__(None, None, None)
        memory = probe.result() | {"covers": "load + first run" if pid == "self" else "first run (runtime process)"}
        meta = artifact.meta
        sha256 = state.content_hash(artifact)
        info = {"cache_key": artifact.key, "sha256": sha256, "size_bytes": meta.get("size_bytes"),
                "file": meta.get("main"), "target": target.name,
                "weights": harness.weights_records.get(spec.name, {}).get("source"),
                "accuracy_gate": accuracy_gate_of(self.request.config, f"{spec.name}-{target.name}", sha256)}
        worst = result.worst()
        return Prepared(case, inputs, runner, eager, threads, memory, info,
                        {"status": result.status, **{k: v for k, v in worst.items() if v is not None}},
                        reload=lambda: load()[0])

    # -- bench
    def bench(self, prepared: Prepared, benchmark: Any) -> Timed:
        """pytest-benchmark pedantic with a fixed round count. Each round interleaves artifact and eager calls;
        pytest-benchmark's timer is a clock that runs only during the artifact's calls (its numbers are the
        artifact's per-call times), and every round also yields the paired eager time for the ratio."""
        state, case = self.state, prepared.case
        target_fn = prepared.call_target()
        reference = None if case.target is None else prepared.call_eager()
        schedule = lat.schedule_rounds(target_fn, reference, prepared.runner, state.plan, state.threads,
                                       state.settings.clock)
        clock, why, rounds, rounds_runner = schedule.clock, schedule.why, schedule.rounds, schedule.runner
        iterations = rounds_runner.iterations
        artifact_clock = rounds_runner.clock
        benchmark._timer = _named(artifact_clock, f"artifact-only-{clock}")  # pytest-benchmark 5.3.1 (pinned)
        benchmark.group = f"{case.spec.name} b{case.batch}"
        gc.collect()
        try:
            benchmark.pedantic(rounds_runner.round, rounds=rounds, iterations=1, warmup_rounds=0)
        finally:
            rounds_runner.release()  # pytest-benchmark holds the clock (and so this object) for the whole session
        timings = rounds_runner.timings
        target_times = [float(t) for t in benchmark.stats.stats.data]
        if not np.allclose(target_times, timings.target, rtol=1e-9, atol=1e-12):
            raise AssertionError("pytest-benchmark's data and the interleaved rounds disagree")
        wall = timings.wall_target if clock != "wall" else []
        paired = None
        if reference is not None:
            paired = lat.PairedTimings(timings.target, timings.reference, timings.wall_target if wall else [],
                                       timings.wall_reference if wall else [])
        return Timed(clock, why, rounds, iterations, target_times, wall, paired, rounds_runner.exchange)

    # -- record
    def record(self, prepared: Prepared, timed: Timed, benchmark: Any) -> Record:
        """Fill ``benchmark.extra_info`` (saved in the run's JSON) and the session summary."""
        case = prepared.case
        stats = lat.LatencyStats.from_seconds(timed.target)
        wall = lat.LatencyStats.from_seconds(timed.wall) if timed.wall else stats
        extra: dict[str, Any] = {
            "cell": case.cell_id, "model": case.spec.name, "target": case.target_name, "batch": case.batch,
            "clock": timed.clock, "clock_reason": timed.clock_reason, "rounds": timed.rounds,
            "iterations_per_round": timed.iterations, "threads": prepared.threads,
            "allocator": self.state.allocator, "latency_ms": stats.to_dict(), "wall_ms": wall.to_dict(),
            "throughput_per_s": round(stats.throughput(case.batch), 2),
            "wall_throughput_per_s": round(wall.throughput(case.batch), 2),
            "peak_rss": prepared.memory, "artifact": prepared.artifact, "conformance": prepared.conformance,
            "versions": _versions(case.target), "runtime": _jsonable(getattr(prepared.runner, "info", {})),
            "machine_kind": lat.machine_kind(), "machine_id": self.state.machine_id, "scope": self.state.scope,
        }
        if timed.exchange:
            extra["exchange_ms"] = {"median": round(1e3 * float(np.median(timed.exchange)), 4),
                                    "what": "per call, the harness's IPC and .npz exchange with the runtime's "
                                            "process, outside the timed invokes (not in latency_ms)"}
        if timed.paired is not None:
            eager = lat.LatencyStats.from_seconds(timed.paired.reference)
            contention = timed.paired.contention
            extra["contention"] = round(contention, 3) if contention else None
            extra.update({"eager_ms": eager.to_dict(), "ratio_to_eager": round(timed.paired.ratio, 5),
                          "speedup_vs_eager": round(timed.paired.speedup, 4), "paired": timed.paired.to_dict()})
        else:
            extra.update({"ratio_to_eager": 1.0, "speedup_vs_eager": 1.0})
        benchmark.extra_info.update(extra)
        rec = Record(case.id, case.spec.name, case.target_name, case.batch, benchmark.extra_info)
        self.state.records.append(rec)
        return rec

    # -- gate
    def gate(self, prepared: Prepared, timed: Timed, record: Record) -> None:
        """Noise-aware gate against the baseline (only with ``--latency-gate``); fails a confirmed regression."""
        state, case = self.state, prepared.case
        if not self.request.config.getoption("--latency-gate") or state.baseline is None:
            return
        name = self.request.node.name
        entry = state.baseline.entries.get(name)
        if case.target is None or timed.paired is None:
            verdict = lg.Verdict("ok", "PyTorch eager: the reference of every ratio, reported, not gated")
        elif entry is None:
            verdict = lg.Verdict("no-baseline", f"{name} is not in {state.baseline.path.name}: new benchmark")
        elif entry.ratios is None or not entry.extra.get("clock"):
            verdict = lg.Verdict("incomplete-baseline", f"{name} in {state.baseline.path} has no paired per-round "
                                 f"timings or clock (extra_info missing or damaged): nothing to compare with; "
                                 f"re-record the baseline")
        else:
            verdict = self._judge(prepared, timed, entry)
        record.verdict = verdict
        benchmark_gate = {"baseline": [str(p) for p in state.baseline.paths], **verdict.to_dict()}
        record.extra["gate"] = benchmark_gate
        if verdict.failing:
            base = entry.extra if entry else {}
            pytest.fail(
                f"[latency] {case.id}: {verdict.message}\n  absolute ({timed.clock}): artifact "
                f"{record.extra['latency_ms']['median_ms']:.3f} ms vs baseline "
                f"{(base.get('latency_ms') or {}).get('median_ms', float('nan')):.3f} ms; eager "
                f"{record.extra['eager_ms']['median_ms']:.3f} ms vs "
                f"{(base.get('eager_ms') or {}).get('median_ms', float('nan')):.3f} ms; versions now "
                f"{record.extra['versions']} vs baseline {base.get('versions')}; baseline "
                f"{state.baseline.path}", pytrace=False)

    def _judge(self, prepared: Prepared, timed: Timed, entry: lg.BaselineEntry) -> lg.Verdict:
        state = self.state
        base = entry.extra
        differs = [f"{k} {base.get(k)!r} vs {v!r}" for k, v in
                   (("clock", timed.clock), ("batch", prepared.case.batch)) if base.get(k) != v]
        base_threads = (base.get("threads") or {}).get("requested")
        if base_threads != state.threads:
            differs.append(f"threads {base_threads!r} vs {state.threads!r}")
        if differs:
            return lg.Verdict("incomparable", "baseline measured differently: " + "; ".join(differs)
                              + " (re-record the baseline or use its settings)")
        foreign = lg.kind_mismatch(base.get("machine_kind"), lat.machine_kind())
        if foreign and state.gate.machine_mismatch == "error":
            pytest.fail(f"[latency] baseline machine kind differs ({foreign}) and gate.machine_mismatch = 'error'",
                        pytrace=False)
        if foreign and state.gate.machine_mismatch == "gate":
            foreign = None

        def remeasure() -> np.ndarray:
            runner = prepared.reload() if prepared.reload else prepared.runner
            inputs = prepared.inputs
            timer, target_clocks = lat.CLOCKS[timed.clock], lat.clocks_for(timed.clock, runner)
            fns = [lat.timed_call(runner, inputs), prepared.call_eager()]
            lat.warm_up(fns, state.plan, timer, [target_clocks[0], timer])
            return lat.measure_paired(fns[0], fns[1], timed.rounds, timed.iterations, timer, target_clocks).ratios

        return lg.decide(timed.paired.ratios, entry.ratios, state.gate, remeasure, foreign,
                         contention=timed.paired.contention, between=entry.between_spread)

    # -- budgets
    def check_budget(self, case: BudgetCase, harness: Any) -> dict[str, Any]:
        """Time single calls at batch 1 on the wall clock and hold them to the case's budget."""
        state = self.state
        prepared = self.prepare(LatencyCase(case.spec, case.target, 1), harness)
        fn = prepared.call_target()
        wall = lat.clocks_for("wall", prepared.runner)[1]  # an out-of-process runtime's own wall clock
        lat.warm_up([fn], state.plan, time.perf_counter, [wall])
        per_call = lat.time_call(fn, wall)
        rounds = int(max(20, min(state.settings.budget_rounds, state.settings.budget_seconds / max(per_call, 1e-6))))
        stats = lat.LatencyStats.from_seconds(lat.measure(fn, rounds, 1, wall))
        peak = prepared.memory.get("peak_mb")
        problems = case.budget.violations(stats, 1, peak)
        result = {"id": case.id, "profile": case.budget.profile, "stats_ms": stats.to_dict(),
                  "throughput_per_s": round(stats.throughput(1), 1), "peak_rss_mb": peak,
                  "violations": problems, "source": case.budget.source}
        state.budget_results.append(result)
        if problems:
            pytest.fail(f"[latency budget {case.budget.profile}] {case.id} at batch 1 ({rounds} calls, wall clock, "
                        f"{state.threads} thread(s)): " + "; ".join(problems) + f" [{case.budget.source}]",
                        pytrace=False)
        return result


def _named(fn: Callable[[], float], name: str) -> Callable[[], float]:
    """A clock whose name pytest-benchmark records in the run's JSON (``options.timer``)."""

    def clock() -> float:
        return fn()

    clock.__name__ = name
    return clock


def _versions(target: Target | None) -> dict[str, str]:
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


@pytest.fixture
def latency(request: pytest.FixtureRequest) -> Iterator[LatencyDriver]:
    """The latency driver for one test, with the configured torch intra-op threads in force."""
    state = _start(request.config)
    with lat.torch_threads(state.threads), lat.pinned_allocator(state.settings.pin_allocator) as allocator:
        state.allocator = allocator
        yield LatencyDriver(state, request)


@pytest.fixture
def latency_state(request: pytest.FixtureRequest) -> Iterator[LatencyState]:
    """The session's latency settings, with the configured threads and allocator in force (self-tests)."""
    state = _start(request.config)
    with lat.torch_threads(state.threads), lat.pinned_allocator(state.settings.pin_allocator) as allocator:
        state.allocator = allocator
        yield state


# ------------------------------------------------------------------------------------------------ report


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state: LatencyState | None = config.stash.get(STATE_KEY, None)
    if state is None:
        return
    tr = terminalreporter
    for note in state.notes:
        tr.write_line(f"[latency] {note}", yellow=True)
    if state.records:
        _write_table(tr, state)
        _write_speedups(tr, state)
        _write_gate(tr, state)
    if state.budget_results:
        tr.section("latency budgets")
        for res in state.budget_results:
            s = res["stats_ms"]
            tr.write_line(f"{res['id']:<44} {res['profile']:<5} median {s['median_ms']:.2f} p95 {s['p95_ms']:.2f} "
                          f"p99 {s['p99_ms']:.2f} ms  {res['throughput_per_s']:.0f}/s  "
                          f"{'; '.join(res['violations']) or 'within budget'}")
    if state.selftest:
        tr.section("latency gate self-test")
        for line in state.selftest.get("lines", []):
            tr.write_line(line)
    report = config.getoption("--latency-report")
    if report and (state.records or state.selftest or state.budget_results):
        path = Path(report)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"machine_id": state.machine_id, "scope": state.scope, "threads": state.threads,
                   "baseline": str(state.baseline.path) if state.baseline else None,
                   "benchmarks": [{"id": r.id, **{k: v for k, v in r.extra.items() if k != "paired"},
                                   "verdict": r.verdict.to_dict() if r.verdict else None} for r in state.records],
                   "budgets": state.budget_results, "selftest": state.selftest}
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(payload, indent=1, default=str))
        os.replace(tmp, path)
        tr.write_line(f"latency report written to {report}")


def _write_table(tr: Any, state: LatencyState) -> None:
    tr.section(f"latency ({state.scope} scope, {state.threads} thread(s), machine {state.machine_id})")
    width = max(len(r.id) for r in state.records) + 1
    tr.write_line(f"{'benchmark':<{width}} {'clock':<5} {'rounds':>7} {'median':>8} {'iqr':>7} {'p90':>8} {'p99':>8} "
                  f"{'wall_med':>8} {'samples/s':>9} {'x_eager':>7} {'rss+MB':>6}  gate")
    for rec in sorted(state.records, key=lambda r: (r.model, r.batch, r.target != EAGER, r.target)):
        e = rec.extra
        s, w = e["latency_ms"], e["wall_ms"]
        rss = (e.get("peak_rss") or {}).get("peak_delta_mb")
        clock = "cpu" if e["clock"] == "thread-cpu" else "wall"
        tr.write_line(
            f"{rec.id:<{width}} {clock:<5} {e['rounds']:>4}x{e['iterations_per_round']:<2} {s['median_ms']:>8.3f} "
            f"{s['iqr_ms']:>7.3f} {s['p90_ms']:>8.3f} {s['p99_ms']:>8.3f} {w['median_ms']:>8.3f} "
            f"{e['throughput_per_s']:>9.1f} {e['speedup_vs_eager']:>6.2f}x {_fmt(rss, '.0f'):>6}  "
            f"{rec.verdict.status if rec.verdict else '-'}")
    gated = [r for r in state.records if r.target != EAGER]
    passed = [r for r in gated if (r.extra["artifact"].get("accuracy_gate") or {}).get("verdict") in ACCURACY_PASSED]
    tr.write_line(f"accuracy-gated artifacts: {len(passed)} of {len(gated)} timed artifacts are the exact bytes "
                  "(sha256) an accuracy cell passed (extra_info.artifact.accuracy_gate has the verdict)")
    tr.write_line("times in ms per call; clock cpu = thread CPU time (one thread, in-process), wall = wall clock; "
                  "x_eager = speedup vs PyTorch eager measured in the same rounds; rss+MB = peak RSS added by "
                  "loading and running the artifact (peak_rss in extra_info has the absolute peak)")


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _write_speedups(tr: Any, state: LatencyState) -> None:
    for batch in sorted({r.batch for r in state.records}):
        rows = [r for r in state.records if r.batch == batch]
        tr.section(f"speedup vs PyTorch eager (batch size = {batch})", sep="-")
        for model in sorted({r.model for r in rows}):
            tr.write_line(f"{model}")
            mine = sorted((r for r in rows if r.model == model), key=lambda r: -r.extra["speedup_vs_eager"])
            width = max(len(r.target) for r in mine) + 1
            tr.write_line(f"  {'target':<{width}} | {'Latency (ms)':>12} | {'eager, same rounds':>18} | "
                          f"{'Throughput':>11} | {'Speedup':>7}")
            for r in mine:
                e = r.extra
                paired = (e.get("eager_ms") or e["latency_ms"])["median_ms"]
                tr.write_line(f"  {r.target:<{width}} | {e['latency_ms']['median_ms']:>12.2f} | {paired:>18.2f} | "
                              f"{e['throughput_per_s']:>9.1f}/s | {e['speedup_vs_eager']:>6.2f}x")


def _write_gate(tr: Any, state: LatencyState) -> None:
    if state.baseline is None:
        return
    verdicts = [r for r in state.records if r.verdict]
    counts: dict[str, int] = {}
    for r in verdicts:
        counts[r.verdict.status] = counts.get(r.verdict.status, 0) + 1
    tr.section("latency gate")
    b = state.baseline
    tr.write_line(f"baseline: {b.path.parent}/ {', '.join(p.name for p in b.paths)} ({len(b.paths)} session(s), "
                  f"newest {b.datetime[:19]}, commit {str(b.commit_info.get('id', '?'))[:10]})")
    if len(b.paths) < 2:
        tr.write_line("note: a single-session baseline cannot tell run-to-run noise from a regression; record "
                      f"{state.gate.baseline_sessions} sessions (docs/latency.md)")
    foreign = lg.kind_mismatch(b.machine_kind, lat.machine_kind())
    if foreign:
        tr.write_line(f"WARNING: baseline machine kind differs: {foreign} (gate.machine_mismatch = "
                      f"{state.gate.machine_mismatch!r})")
    g = state.gate
    tr.write_line(f"rule: ratio-to-eager slower than the baseline by > max({g.min_effect:.0%}, noise) with "
                  f"Mann-Whitney p < {g.alpha}, re-measured once above {g.remeasure_above:.0%} and judged on the "
                  f"pooled rounds; unstable = noise > {g.max_noise:.0%}, round spread > {g.max_spread:.0%}, "
                  f"baseline run-to-run spread > {g.max_between:.0%}, or wall/CPU > x{g.max_contention:g}")
    tr.write_line("verdicts: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    for r in verdicts:
        if r.verdict.status not in ("ok",):
            tr.write_line(f"  {r.verdict.status:<12} {r.id}: {r.verdict.message}")
