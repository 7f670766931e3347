"""The harness plugin's core: its options, the hooks a project implements, the session's Harness (kept in
``config.stash``) and the Cell every suite parametrizes. All conversion and comparison logic lives in ``converters/``
and ``models/``."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest

from converters.cache import ArtifactCache
from converters.checks.thresholds import ThresholdError, Thresholds
from converters.conformance import CellFailure, CellResult, ModelIdentities, run_cell
from converters.registry import TargetRegistry, default_target_registry
from converters.target import Target
from models.registry import Registry, default_registry
from models.spec import ModelSpec
from models.weights import WeightsError
from suites.plugin import project

WEIGHTS_SOURCES = ("reference", "seeded")
HARNESS_KEY = pytest.StashKey["Harness"]()


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
    group.addoption("--harness-cache", default=os.environ.get("HARNESS_CACHE"),
                    help="artifact cache directory (env HARNESS_CACHE; default .harness-cache/ in the rootdir)")
    group.addoption("--harness-tier", default=os.environ.get("HARNESS_TIER", "ci"), choices=TIERS,
                    help="one tier for every suite (env HARNESS_TIER): smoke = the smoke models' cells only; ci "
                         "(default) = every cell, accuracy without --accuracy-full's models, smoke latency; full = "
                         "--accuracy-full, --latency-scope=full and --latency-selftest=full (each option still wins)")
    group.addoption("--harness-retry-failed", action="store_true",
                    help="re-attempt conversions whose failure is cached")
    group.addoption("--harness-thresholds", default=None,
                    help="thresholds TOML file, layered over the harness's defaults (default: "
                         "baselines/thresholds.toml in the rootdir when it exists)")
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
    config.addinivalue_line("markers", "slow: large or slow cells, and self-tests that run whole pytest sessions")
    config.addinivalue_line("markers", "cell: a conformance-matrix or accuracy cell (added automatically)")
    config.addinivalue_line("markers", "latency: timing tests; run serially, never beside another job (tox runs them "
                                       "as their own step after the parallel suites)")
    config.addinivalue_line("markers", "harness_targets(*globs): restrict a cell test to targets matching globs")
    _parse_weights(config.getoption("--harness-weights"))  # fail fast, as a usage error
    if not config.getoption("hypothesis_profile", None):  # Hypothesis's own --hypothesis-profile wins
        from suites.plugin import hypothesis_profiles

        hypothesis_profiles.load_profile(config.getoption("--harness-hypothesis-profile"))


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
    _bad_weights: dict[str, str] = field(default_factory=dict)

    def model(self, spec: ModelSpec) -> Any:
        """The conformance matrix's model: the reference model (one weights notion for matrix, accuracy and latency),
        or the seeded one with ``--harness-weights-source=seeded``."""
        return self.seeded_model(spec) if self.weights_source == "seeded" else self.reference_model(spec)

    def seeded_model(self, spec: ModelSpec) -> Any:
        """The user's weights (--harness-weights), else the spec's deterministic seeded init. A weights file that
        does not load fails every cell of its model with the same one line (read once, no traceback)."""
        if spec.name not in self._seeded and spec.name not in self._bad_weights:
            try:
                self._seeded[spec.name] = spec.build(self.weights.get(spec.name), allow_pickle=self.allow_pickle)
            except WeightsError as exc:
                self._bad_weights[spec.name] = f"--harness-weights {spec.name}: {exc}"
        if spec.name in self._bad_weights:
            raise pytest.fail.Exception(f"[weights] {self._bad_weights[spec.name]}", pytrace=False)
        return self._seeded[spec.name]

    def cell_spec(self, spec: ModelSpec) -> ModelSpec:
        """The spec every suite converts: with the proxy task's calibration split attached when the model has a task
        (static quantizers then calibrate on real data, and matrix, accuracy and latency share each artifact)."""
        if spec.name not in self._cell_specs:
            from models.training import has_task, task_for

            self._cell_specs[spec.name] = spec
            if has_task(spec):
                from converters.checks.accuracy import accuracy_spec

                self._cell_specs[spec.name] = accuracy_spec(spec, task_for(spec))
        return self._cell_specs[spec.name]

    def reference_model(self, spec: ModelSpec) -> Any:
        """The model whose artifacts the accuracy gates measure and the latency suite times (one artifact, one
        sha256): the user's weights (--harness-weights), else the cached trained reference weights of a zoo model's
        proxy task (trained on a cache miss), else the model as its spec builds it (a user's pretrained model, or
        seeded init). ``weights_records[spec.name]`` says which."""
        if spec.name not in self._reference:
            from models.training import has_recipe, has_task

            if spec.name in self.weights or not has_task(spec) or not has_recipe(spec):
                self._reference[spec.name] = self.seeded_model(spec)
                source = self.weights.get(spec.name)
                self.weights_records[spec.name] = {"source": source or "as built (no training recipe)"}
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
        from converters.checks.accuracy import forget_reference_outputs
        from models.training import forget_task

        for held in (self._reference, self._seeded, self._cell_specs):
            held.pop(name, None)
        forget_reference_outputs(name)
        forget_task(name)
        gc.collect()
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)

    def run(self, spec: ModelSpec, target: Target, localise: Any = True, lengths: bool = False) -> CellResult:
        """One conformance cell on the matrix's model and the spec as every suite converts it; weights that do not
        load fail it at stage ``weights`` (so it still has a row in the matrix summary)."""
        try:
            model = self.model(spec)
        except pytest.fail.Exception:
            if spec.name not in self._bad_weights:
                raise
            raise CellFailure(CellResult(model=spec.name, target=target.name, status="failed", stage="weights",
                                         message=self._bad_weights[spec.name])) from None
        return run_cell(self.cell_spec(spec), target, model, cache=self.cache, thresholds=self.thresholds,
                        targets=self.targets, identities=self.identities, localise=localise, lengths=lengths)


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
    harness = config.stash.get(HARNESS_KEY, None)
    if harness is None:
        models = default_registry()
        for extra in config.hook.pytest_harness_models(config=config):
            models.extend(extra or [])
        targets = default_target_registry()
        for extra in config.hook.pytest_harness_targets(config=config):
            for target in extra or []:
                targets.register(target)
        try:
            thresholds = project.thresholds(config)
            thresholds.check_names(models, targets)
        except ThresholdError as exc:
            config_error(exc)
        harness = Harness(
            config=config, models=models, targets=targets,
            cache=ArtifactCache(project.cache_dir(config), retry_failed=config.getoption("--harness-retry-failed")),
            thresholds=thresholds,
            weights=_parse_weights(config.getoption("--harness-weights")),
            allow_pickle=config.getoption("--harness-allow-pickle"),
            weights_source=config.getoption("--harness-weights-source"),
        )
        unknown = [name for name in harness.weights if name not in models]
        if unknown:
            known = ", ".join(models.names())
            raise pytest.UsageError(f"--harness-weights: unknown model {unknown[0]!r}; known: {known}")
        config.stash[HARNESS_KEY] = harness
    return harness


TIERS = ("smoke", "ci", "full")


def harness_tier(config: pytest.Config) -> str:
    """The run's tier (``--harness-tier``): what every suite's own scope option defaults to."""
    return config.getoption("--harness-tier", "ci")


def config_error(exc: Exception) -> NoReturn:
    """A broken configuration file: one line naming the file and the key, failing whatever needed it (the
    collection of a suite, or a test), never a traceback or INTERNALERROR."""
    raise pytest.fail.Exception(f"[config] {exc}", pytrace=False) from None


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


