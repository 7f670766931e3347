"""pytest glue: options, the harness fixture, matrix generation from the registries, and the summary table.

All conversion and comparison logic lives in ``converters/`` and ``models/``; this file only orchestrates.
"""

from __future__ import annotations

import contextlib
import ctypes
import fnmatch
import gc
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from converters import matrix_report
from converters.cache import ArtifactCache
from converters.conformance import CellFailure, CellResult, ModelIdentities, run_cell
from converters.registry import TargetRegistry, default_target_registry
from converters.target import Target
from converters.thresholds import DEFAULT_THRESHOLDS, Thresholds
from models.registry import Registry, default_registry
from models.spec import ModelSpec

pytest_plugins = ["pytester", "suites.plugin_accuracy", "suites.plugin_latency"]  # latency imports accuracy

ROOT = Path(__file__).resolve().parent
DEFAULT_CACHE = ROOT / ".harness-cache"
WEIGHTS_SOURCES = ("reference", "seeded")


class HarnessHookspecs:
    """Hooks a user's conftest.py or plugin implements to extend the matrix without editing the harness."""

    @pytest.hookspec
    def pytest_harness_models(self, config: pytest.Config) -> list[ModelSpec]:
        """Return extra ModelSpecs to add to the registry."""

    @pytest.hookspec
    def pytest_harness_targets(self, config: pytest.Config) -> list[Target]:
        """Return extra Targets to add as matrix columns."""


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(HarnessHookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "export conformance harness")
    group.addoption("--harness-cache", default=os.environ.get("HARNESS_CACHE", str(DEFAULT_CACHE)),
                    help="artifact cache directory (env HARNESS_CACHE; default .harness-cache/)")
    group.addoption("--harness-retry-failed", action="store_true",
                    help="re-attempt conversions whose failure is cached")
    group.addoption("--harness-thresholds", default=str(DEFAULT_THRESHOLDS),
                    help="thresholds TOML file (default baselines/thresholds.toml)")
    group.addoption("--harness-weights", action="append", default=[], metavar="MODEL=PATH",
                    help="load weights for MODEL from PATH (state_dict, checkpoint dict or TorchScript); repeatable")
    group.addoption("--harness-allow-pickle", action="store_true",
                    help="allow full pickles in weight files (only for files you trust)")
    group.addoption("--harness-report", default=None, metavar="PATH",
                    help="write every cell's metrics as JSON to PATH")
    group.addoption("--harness-weights-source", default=os.environ.get("HARNESS_WEIGHTS_SOURCE", "reference"),
                    choices=WEIGHTS_SOURCES,
                    help="weights of the conformance matrix: 'reference' (default: the trained reference weights the "
                         "accuracy gates measure, so every suite converts one artifact per cell) or 'seeded' "
                         "(deterministic untrained init); --harness-weights always wins (env HARNESS_WEIGHTS_SOURCE)")
    group.addoption("--harness-hypothesis-profile", default=None, choices=("dev", "ci"),
                    help="Hypothesis profile: dev or ci (env HARNESS_HYPOTHESIS_PROFILE; ci when CI is set)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "smoke: fast subset, one model variant per family")
    config.addinivalue_line("markers", "slow: large or slow cells")
    config.addinivalue_line("markers", "cell: a conformance-matrix or accuracy cell (added automatically)")
    config.addinivalue_line("markers", "latency: timing tests; run serially, never beside another job (tox runs them "
                                       "as their own step after the parallel suites)")
    config.addinivalue_line("markers", "harness_targets(*globs): restrict a cell test to targets matching globs")
    _parse_weights(config.getoption("--harness-weights"))  # fail fast, as a usage error
    if not hasattr(config, "workerinput"):
        share_cores_among_workers(config)
    if not config.getoption("hypothesis_profile", None):  # Hypothesis's own --hypothesis-profile wins
        from suites import hypothesis_profiles

        hypothesis_profiles.load_profile(config.getoption("--harness-hypothesis-profile"))


def share_cores_among_workers(config: pytest.Config) -> int | None:
    """Before pytest-xdist starts its workers: give each worker's OpenMP pools (torch, in the worker and in the TF
    worker subprocesses it starts) its share of the cores, through ``OMP_NUM_THREADS`` which they inherit.

    Otherwise each worker runs one OpenMP thread per core: on a box whose cores the other worker keeps busy, every
    small op of a recurrent model waits at a barrier for a descheduled thread (measured: gcode_fingerprint's
    TorchScript eval takes 3.2 s alone, 5.6 s beside two busy loops with one thread, over 58 s with two; four models'
    matrix and accuracy cells on ``-n 2``: 234-283 s with the default, 176-183 s with one thread). An
    ``OMP_NUM_THREADS`` the user set wins. Returns the threads set, or None (not a parallel run, or user-set)."""
    workers = getattr(config.option, "numprocesses", None)
    if not isinstance(workers, int) or workers < 1 or os.environ.get("OMP_NUM_THREADS"):
        return None
    threads = max(1, (os.cpu_count() or 1) // workers)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    return threads


@dataclass
class Harness:
    """Session state shared by all cells: registries, cache, thresholds and built models."""

    config: pytest.Config
    models: Registry
    targets: TargetRegistry
    cache: ArtifactCache
    thresholds: Thresholds
    weights: dict[str, str]
    allow_pickle: bool
    identities: ModelIdentities = field(default_factory=ModelIdentities)
    weights_records: dict[str, dict[str, Any]] = field(default_factory=dict)
    _reference: dict[str, Any] = field(default_factory=dict)
    weights_source: str = "reference"
    _seeded: dict[str, Any] = field(default_factory=dict)
    _cell_specs: dict[str, ModelSpec] = field(default_factory=dict)

    def model(self, spec: ModelSpec) -> Any:
        """The conformance matrix's model: the reference model (one weights notion for matrix, accuracy and latency),
        or the seeded one with ``--harness-weights-source=seeded``."""
        return self.seeded_model(spec) if self.weights_source == "seeded" else self.reference_model(spec)

    def seeded_model(self, spec: ModelSpec) -> Any:
        """The user's weights (--harness-weights), else the spec's deterministic seeded init."""
        if spec.name not in self._seeded:
            self._seeded[spec.name] = spec.build(self.weights.get(spec.name), allow_pickle=self.allow_pickle)
        return self._seeded[spec.name]

    def cell_spec(self, spec: ModelSpec) -> ModelSpec:
        """The spec every suite converts: with the proxy task's calibration split attached when the model has a task
        (static quantizers then calibrate on real data, and matrix, accuracy and latency share each artifact)."""
        if spec.name not in self._cell_specs:
            from models.proxy_tasks import has_task, task_for

            self._cell_specs[spec.name] = spec
            if has_task(spec):
                from converters.accuracy import accuracy_spec

                self._cell_specs[spec.name] = accuracy_spec(spec, task_for(spec))
        return self._cell_specs[spec.name]

    def reference_model(self, spec: ModelSpec) -> Any:
        """The model whose artifacts the accuracy gates measure and the latency suite times (one artifact, one
        sha256): the user's weights, else the cached trained reference weights of the spec's proxy task (trained on a
        cache miss), else seeded weights. ``weights_records[spec.name]`` says which."""
        if spec.name not in self._reference:
            from models.proxy_tasks import has_task

            if spec.name in self.weights or not has_task(spec):
                self._reference[spec.name] = self.seeded_model(spec)
                source = self.weights.get(spec.name)
                self.weights_records[spec.name] = {"source": source} if source else {"source": "seeded"}
            else:
                from models.training import reference_weights

                t0 = time.perf_counter()
                path, record = reference_weights(spec)
                self.weights_records[spec.name] = {**record, "source": "trained reference weights",
                                                   "wall_seconds": round(time.perf_counter() - t0, 1)}
                self._reference[spec.name] = spec.build(path)
        return self._reference[spec.name]

    def release(self, name: str) -> None:
        """Free what this process holds for one model once its cells are done (built models, its task's data splits,
        FP32 eval outputs), and hand the freed heap back to the OS: under pytest-xdist a worker runs model after
        model, and two workers holding every model's data (11 GB each, measured) ran the 24 GB machine out of
        memory."""
        from converters.accuracy import forget_reference_outputs
        from models.proxy_tasks import forget_task

        for held in (self._reference, self._seeded, self._cell_specs):
            held.pop(name, None)
        forget_reference_outputs(name)
        forget_task(name)
        gc.collect()
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)

    def run(self, spec: ModelSpec, target: Target, localise: Any = True) -> CellResult:
        """One conformance cell on the matrix's model and the spec as every suite converts it."""
        return run_cell(self.cell_spec(spec), target, self.model(spec), cache=self.cache, thresholds=self.thresholds,
                        targets=self.targets, identities=self.identities, localise=localise)


def _parse_weights(values: list[str]) -> dict[str, str]:
    out = {}
    for item in values:
        name, sep, path = item.partition("=")
        if not sep or not path:
            raise pytest.UsageError(f"--harness-weights expects MODEL=PATH, got {item!r}")
        if not Path(path).is_file():
            raise pytest.UsageError(f"--harness-weights {name}: file {path!r} does not exist")
        out[name] = path
    return out


def get_harness(config: pytest.Config) -> Harness:
    """Build the session's Harness once (after every initial conftest has registered its hooks)."""
    harness = getattr(config, "_harness", None)
    if harness is None:
        models = default_registry()
        for extra in config.hook.pytest_harness_models(config=config):
            models.extend(extra or [])
        targets = default_target_registry()
        for extra in config.hook.pytest_harness_targets(config=config):
            for target in extra or []:
                targets.register(target)
        harness = Harness(
            config=config, models=models, targets=targets,
            cache=ArtifactCache(config.getoption("--harness-cache"),
                                retry_failed=config.getoption("--harness-retry-failed")),
            thresholds=Thresholds.load(config.getoption("--harness-thresholds")),
            weights=_parse_weights(config.getoption("--harness-weights")),
            allow_pickle=config.getoption("--harness-allow-pickle"),
            weights_source=config.getoption("--harness-weights-source"),
        )
        unknown = [name for name in harness.weights if name not in models]
        if unknown:
            known = ", ".join(models.names())
            raise pytest.UsageError(f"--harness-weights: unknown model {unknown[0]!r}; known: {known}")
        config._harness = harness  # type: ignore[attr-defined]
    return harness


@pytest.fixture(scope="session")
def harness(pytestconfig: pytest.Config) -> Harness:
    return get_harness(pytestconfig)


class ExpectedCellFailure(Exception):
    """Raised when a cell fails exactly as its declared limitation says (so strict xfail accepts it)."""


@dataclass(frozen=True)
class Cell:
    spec: ModelSpec
    target: Target

    @property
    def id(self) -> str:
        return f"{self.spec.name}-{self.target.name}"

    def __repr__(self) -> str:
        return f"Cell({self.id})"


def _cell_params(harness: Harness, globs: tuple[str, ...]) -> list[Any]:
    params = []
    for spec in harness.models.specs():
        for target in harness.targets.targets():
            if globs and not any(fnmatch.fnmatchcase(target.name, g) for g in globs):
                continue
            marks = [getattr(pytest.mark, m) for m in ("smoke", "slow") if getattr(spec, m)]
            limitation = spec.limitation_for(target.name)
            if limitation:
                marks.append(pytest.mark.xfail(strict=limitation.strict, reason=limitation.reason,
                                               raises=ExpectedCellFailure))
            unavailable = getattr(target, "unavailable_reason", None)
            reason = unavailable() if unavailable else None
            if reason:
                marks.append(pytest.mark.skip(reason=reason))
            cell = Cell(spec, target)
            params.append(pytest.param(cell, id=cell.id, marks=marks))
    return params


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "cell" not in metafunc.fixturenames and "model_spec" not in metafunc.fixturenames:
        return
    harness = get_harness(metafunc.config)
    if "cell" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("harness_targets")
        metafunc.parametrize("cell", _cell_params(harness, tuple(marker.args) if marker else ()))
    if "model_spec" in metafunc.fixturenames:
        metafunc.parametrize("model_spec", [
            pytest.param(s, id=s.name, marks=[getattr(pytest.mark, m) for m in ("smoke", "slow") if getattr(s, m)])
            for s in harness.models.specs()
        ])


def _item_model(item: pytest.Item) -> str | None:
    """The model a matrix / accuracy / latency item exercises, None for other tests."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    for name in ("cell", "accuracy_cell"):
        if name in params:
            return params[name].spec.name
    return None


def load_durations(path: Path) -> dict[str, float]:
    """pytest-split's stored durations (``.test_durations``), keyed by node id without xdist's ``@group`` suffix."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise pytest.UsageError(f"{path}: not a pytest-split durations file ({exc})") from None
    return {nodeid.split("@")[0]: float(seconds) for nodeid, seconds in data.items()}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every matrix / accuracy cell gets the ``cell`` marker. Under ``--dist loadgroup`` the items are ordered by
    model group, longest first by the stored durations (the scheduler hands groups out in collection order:
    longest-processing-time-first)."""
    for item in items:
        if _item_model(item) is not None:
            item.add_marker(pytest.mark.cell)
    if not getattr(config.option, "loadgroup", False):  # set in pytest-xdist workers of ``--dist loadgroup``
        return
    durations = load_durations(Path(config.getoption("durations_path", None) or config.rootpath / ".test_durations"))
    if not durations:
        return
    mean = sum(durations.values()) / len(durations)
    group = {item.nodeid: _item_model(item) or item.nodeid for item in items}
    cost: dict[str, float] = {}
    for item in items:
        cost[group[item.nodeid]] = cost.get(group[item.nodeid], 0.0) + durations.get(item.nodeid, mean)
    items.sort(key=lambda item: (-cost[group[item.nodeid]], group[item.nodeid]))  # stable within a group


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """After a model's last cell in this process (the scheduler keeps a model's cells together), release it."""
    model = _item_model(item)
    if model is not None and nextitem is not None and _item_model(nextitem) != model:
        harness = getattr(item.config, "_harness", None)
        if harness is not None:
            harness.release(model)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadgroup`` with one group per model: every matrix and accuracy cell of a model runs on one worker,
    so that worker converts the model's artifacts and no other worker waits on their cache locks. (The group comes
    from the cell id, ``test_x[MODEL-TARGET]``: pytest-xdist 3.8's ``xdist_group`` marker renames node ids through an
    attribute pytest 9 no longer reads, so marked tests were not grouped.)"""
    if config.getoption("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    models = sorted(get_harness(config).models.names(), key=len, reverse=True)

    class ModelGroupScheduling(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            params = nodeid.partition("[")[2]
            return next((f"model:{m}" for m in models if params.startswith(f"{m}-")), nodeid)

    return ModelGroupScheduling(config, log)


@pytest.fixture
def check_cell(harness: Harness, record_property: Any) -> Any:
    """``check_cell(cell) -> CellResult``: runs it, records metrics, maps a declared limitation to xfail."""
    return lambda cell: _check_cell(cell, harness, record_property)


def _check_cell(cell: Cell, harness: Harness, record_property: Any) -> CellResult:
    declared = cell.spec.limitation_for(cell.target.name)
    try:
        # the layer table only for a failure its declaration does not explain (a strict xfail shows no message)
        result = harness.run(cell.spec, cell.target,
                             localise=lambda message: not (declared and declared.explains(message)))
    except CellFailure as exc:
        failure = exc
    else:
        record_property("harness", result.to_dict())
        return result
    record_property("harness", failure.result.to_dict())
    limitation = cell.spec.limitation_for(cell.target.name)
    if limitation and limitation.explains(failure.result.message):
        raise ExpectedCellFailure(str(failure))
    expected = f"\n(declared limitation expected /{limitation.match}/: {limitation.reason})" if limitation else ""
    pytest.fail(f"{failure}{expected}", pytrace=False)


# ---------------------------------------------------------------------------------------------- reporting


def _cell_rows(terminalreporter: Any) -> list[tuple[str, dict[str, Any]]]:
    rows = []
    for reports in terminalreporter.stats.values():
        for rep in reports:
            if getattr(rep, "when", None) != "call":
                continue
            props = dict(getattr(rep, "user_properties", []) or [])
            if "harness" not in props:
                continue
            if hasattr(rep, "wasxfail"):
                outcome = "XFAIL" if rep.outcome == "skipped" else "XPASS"
            else:
                outcome = rep.outcome.upper()
            rows.append((outcome, props["harness"]))
    return sorted(rows, key=lambda r: r[1]["cell"])


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    cells = [dict(cell, outcome=outcome) for outcome, cell in _cell_rows(terminalreporter)]
    if not cells:
        return
    tr = terminalreporter
    tr.section("export conformance matrix")
    for line in matrix_report.table_lines(cells):
        tr.write_line(line)
    report_path = config.getoption("--harness-report")
    if report_path:
        matrix_report.write_report(report_path, cells)
        tr.write_line(f"cell metrics written to {report_path}")
        from converters import export_results  # guide 002's export_results.json per model + support table

        written = export_results.write(cells, Path(report_path).parent)
        tr.write_line(f"export_results/<model>.json and {written[-1].name} written to {Path(report_path).parent}")
