"""pytest glue for the latency suite: options, case generation, the per-benchmark driver, gate and summary.

Part of the harness plugin (:mod:`export_harness.plugin`). Loading, timing, judging and recording a benchmark live
in the pytest-free ``converters/latency/session.py`` (shared with ``export-harness benchmark``); this module maps
options, pytest items and outcomes onto it and runs the rounds through pytest-benchmark (whose private attributes
only ``benchmark_adapter.py`` touches). Usage and design: docs/latency.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from export_harness.converters.cache import artifact_sha256
from export_harness.plugin import benchmark_adapter, project
from export_harness.plugin.accuracy import accuracy_gate_of
from export_harness.plugin.cells import cells
from export_harness.plugin.core import get_harness, harness_tier
from export_harness.plugin.lazy import LazyModule

if TYPE_CHECKING:
    import numpy as np

    from export_harness.converters import conformance
    from export_harness.converters.conformance import CellResult
    from export_harness.converters.latency import gate as lg
    from export_harness.converters.latency import machine
    from export_harness.converters.latency import process_control as pc
    from export_harness.converters.latency import session as ls
    from export_harness.converters.latency.session import Prepared, Timed
    from export_harness.converters.target import Target
    from export_harness.models.spec import ModelSpec
else:  # imported when a latency item needs them
    np = LazyModule("numpy")
    conformance = LazyModule("export_harness.converters.conformance")
    lg = LazyModule("export_harness.converters.latency.gate")
    machine = LazyModule("export_harness.converters.latency.machine")
    pc = LazyModule("export_harness.converters.latency.process_control")
    ls = LazyModule("export_harness.converters.latency.session")

EAGER = "torch:eager"
"""Pseudo-target name of the PyTorch eager rows (the reference every speedup is measured against; the same string
as ``session.EAGER``, kept here so collecting tests never imports the session)."""
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
    OS-Python-bits folder, so baselines of different CPUs never mix."""
    choice = config.getoption("--latency-machine-id")
    own = benchmark_adapter.own_machine_id(config)
    if own is None or choice == "pytest-benchmark":
        state.machine_id = own or machine.machine_id()
        return
    state.machine_id = machine.machine_id() if choice == "auto" else choice
    benchmark_adapter.key_storage(config, state.machine_id)


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
    settings: ls.BenchSettings
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
    def plan(self) -> ls.TimingPlan:
        seconds = self.config.getoption("--latency-seconds")
        if seconds is None and self.scope == "smoke":
            seconds = self.settings.smoke_seconds
        return ls.plan_with_seconds(self.settings.plan, seconds)

    def storage_dir(self) -> Path | None:
        path = benchmark_adapter.storage_path(self.config)
        return path / self.machine_id if path is not None else None

    def load_baseline(self) -> None:
        ref = self.config.getoption("--latency-baseline")
        sessions = self.config.getoption("--latency-baseline-sessions") or self.gate.baseline_sessions
        foreign = self.config.getoption("--latency-baseline-missing") == "foreign"
        try:
            self.baseline, note = ls.select_baseline(self.storage_dir(), ref, sessions, self.machine_id,
                                                     foreign=foreign,
                                                     no_storage="--benchmark-storage is not a file:// storage")
        except lg.BaselineError as exc:
            raise pytest.UsageError(f"--latency-gate: {exc}") from None
        except ls.BaselineUnavailable as exc:
            raise pytest.UsageError(
                f"--latency-gate: {exc}. Machine folders present: {', '.join(exc.others) or 'none'}. Record one on "
                f"this machine kind with: pytest suites/test_latency.py --latency-scope=full "
                f"--benchmark-storage=file://baselines/benchmarks --benchmark-save=baseline, "
                f"{self.gate.baseline_sessions} times (or pass --latency-baseline=PATH to compare across machines "
                f"deliberately)") from None
        if note:
            self.notes.append(note)

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
            settings = ls.BenchSettings.from_mapping(data.get("bench", {}))
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
        eager = ls.EagerRunner(spec, model)
        inputs = spec.example_inputs(case.batch, seed=0)
        if target is None:
            threads, memory = ls.load_eager(eager, inputs, state.threads)
            return ls.Prepared(case, inputs, eager, eager, threads, memory, {}, {"status": "reference"})
        result = state.conformance(harness, spec, target)
        if result.status != "passed":
            failed = result
            declared = harness.expectations.for_cell(f"{spec.name}-{target.name}")
            known = f" (declared: {declared.reason})" if declared else ""
            first = failed.message.splitlines()[0] if failed.message else ""
            pytest.skip(f"conformance failed at stage {failed.stage}{known}: {first[:300]}")
        artifact = conformance.export_artifact(target, harness.cell_spec(spec), model, harness.cache, harness.targets,
                                               harness.identities)
        runner, threads, memory = ls.load_target(target, artifact, spec, inputs, state.threads)
        meta = artifact.meta
        sha256 = state.content_hash(artifact)
        info = {"cache_key": artifact.key, "sha256": sha256, "size_bytes": meta.get("size_bytes"),
                "file": meta.get("main"), "target": target.name,
                "weights": harness.weights_records.get(spec.name, {}).get("source"),
                "accuracy_gate": accuracy_gate_of(self.request.config, f"{spec.name}-{target.name}", sha256)}
        worst = result.worst()
        return ls.Prepared(case, inputs, runner, eager, threads, memory, info,
                           {"status": result.status, **{k: v for k, v in worst.items() if v is not None}},
                           reload=lambda: pc.load_runner(target, artifact, spec, state.threads)[0])

    # -- bench
    def bench(self, prepared: Prepared, benchmark: Any) -> Timed:
        """The session's rounds (:func:`~export_harness.converters.latency.session.bench`) run by pytest-benchmark's
        pedantic mode with a fixed round count: its timer is a clock that runs only during the artifact's calls, so
        its numbers are the artifact's per-call times, and every round also yields the paired eager time."""
        state, case = self.state, prepared.case
        reference = None if case.target is None else prepared.call_eager()
        stored: list[float] = []

        def run(schedule: Any) -> None:
            benchmark.group = f"{case.spec.name} b{case.batch}"
            gc.collect()
            stored.extend(benchmark_adapter.pedantic(benchmark, schedule.runner.round, schedule.rounds,
                                                     schedule.runner.clock, f"artifact-only-{schedule.clock}"))

        timed = ls.bench(prepared.call_target(), reference, prepared.runner, state.plan, state.threads,
                         state.settings.clock, run=run)
        if not np.allclose(stored, timed.target, rtol=1e-9, atol=1e-12):
            raise AssertionError("pytest-benchmark's data and the interleaved rounds disagree")
        timed.target = stored
        return timed

    # -- record
    def record(self, prepared: Prepared, timed: Timed, benchmark: Any) -> Record:
        """Fill ``benchmark.extra_info`` (saved in the run's JSON) and the session summary."""
        case = prepared.case
        benchmark.extra_info.update(ls.record_fields(prepared, timed, allocator=self.state.allocator,
                                                     machine_id=self.state.machine_id, scope=self.state.scope))
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
        try:
            verdict = ls.judge(name, prepared, timed, state.baseline, state.gate, state.threads, state.plan)
        except ls.MachineMismatch as exc:
            pytest.fail(f"[latency] {exc}", pytrace=False)
        record.verdict = verdict
        record.extra["gate"] = {"baseline": [str(p) for p in state.baseline.paths], **verdict.to_dict()}
        if verdict.failing:
            entry = state.baseline.entries.get(name)
            base = entry.extra if entry else {}
            pytest.fail(
                f"[latency] {case.id}: {verdict.message}\n  absolute ({timed.clock}): artifact "
                f"{record.extra['latency_ms']['median_ms']:.3f} ms vs baseline "
                f"{(base.get('latency_ms') or {}).get('median_ms', float('nan')):.3f} ms; eager "
                f"{record.extra['eager_ms']['median_ms']:.3f} ms vs "
                f"{(base.get('eager_ms') or {}).get('median_ms', float('nan')):.3f} ms; versions now "
                f"{record.extra['versions']} vs baseline {base.get('versions')}; baseline "
                f"{state.baseline.path}", pytrace=False)

    # -- budgets
    def check_budget(self, case: BudgetCase, harness: Any) -> dict[str, Any]:
        """Time single calls at batch 1 on the wall clock and hold them to the case's budget."""
        state = self.state
        prepared = self.prepare(LatencyCase(case.spec, case.target, 1), harness)
        stats, rounds = ls.time_single_calls(prepared.call_target(), prepared.runner, state.plan, state.settings)
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


@pytest.fixture
def latency(request: pytest.FixtureRequest) -> Iterator[LatencyDriver]:
    """The latency driver for one test, with the configured torch intra-op threads in force."""
    state = _start(request.config)
    with pc.torch_threads(state.threads), pc.pinned_allocator(state.settings.pin_allocator) as allocator:
        state.allocator = allocator
        yield LatencyDriver(state, request)


@pytest.fixture
def latency_state(request: pytest.FixtureRequest) -> Iterator[LatencyState]:
    """The session's latency settings, with the configured threads and allocator in force (self-tests)."""
    state = _start(request.config)
    with pc.torch_threads(state.threads), pc.pinned_allocator(state.settings.pin_allocator) as allocator:
        state.allocator = allocator
        yield state


# ------------------------------------------------------------------------------------------------ report


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_json(config: pytest.Config, benchmarks: Any, output_json: dict[str, Any]) -> None:
    """Every saved run lists the benchmarks it holds, so the gate tells a lost entry from a new benchmark."""
    from export_harness.converters.latency.gate import MANIFEST

    output_json[MANIFEST] = sorted(b["name"] for b in output_json.get("benchmarks", []) if "name" in b)


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
    foreign = lg.kind_mismatch(b.machine_kind, machine.machine_kind())
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
