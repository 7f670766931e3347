"""The harness plugin's core: its options, the hooks a project implements, the session's Harness (kept in
``config.stash``) and the Cell every suite parametrizes. All conversion and comparison logic lives in ``converters/``
and ``models/``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

from export_harness.converters.defaults import WEIGHTS_SOURCES
from export_harness.plugin import project

if TYPE_CHECKING:  # the plugin loads in every pytest run: torch and the registries wait for a harness item
    from export_harness.converters.target import Target
    from export_harness.models.spec import ModelSpec
    from export_harness.plugin.harness import Harness


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
    group.addoption("--harness-zoo", default=None, metavar="NAMES",
                    help="bundled zoo models to run besides the project's own: 'all', or variant names and * globs, "
                         "comma-separated (default: the harness_zoo ini key; none in a project that sets nothing)")
    parser.addini("harness_zoo", "bundled zoo models this project runs besides its own ('all', or names / * globs; "
                                 "default none)", default="")
    group.addoption("--harness-tier", default=os.environ.get("HARNESS_TIER", "ci"), choices=TIERS,
                    help="one tier for every suite (env HARNESS_TIER): smoke = the smoke models' cells only; ci "
                         "(default) = every cell, accuracy without --accuracy-full's models, smoke latency; full = "
                         "--accuracy-full, --latency-scope=full and --latency-selftest=full (each option still wins)")
    group.addoption("--harness-retry-failed", action="store_true",
                    help="re-attempt conversions whose failure is cached")
    group.addoption("--harness-remeasure", action="store_true",
                    help="compute cached measurements (an accuracy cell's outputs over its eval split, the FP32 "
                         "reference's) again instead of serving them; verdicts are judged afresh either way")
    group.addoption("--harness-explain", default="undeclared", choices=("undeclared", "all", "none"),
                    help="find the first diverging op and write a reproducer for a failing fp32 / fp16 parity cell "
                         "(docs/divergence.md; minutes per cell on its first failure, then cached): for failures no "
                         "declaration explains (default), for all of them, or never")
    group.addoption("--harness-thresholds", default=None,
                    help="thresholds TOML file, layered over the harness's defaults (default: "
                         "baselines/thresholds.toml in the rootdir when it exists)")
    group.addoption("--harness-expectations", default=None, metavar="PATH",
                    help="expected failures and skips of the project's cells (default: baselines/expectations.toml in "
                         "the rootdir when it exists), before the harness's own")
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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "smoke: fast subset, one model variant per family")
    config.addinivalue_line("markers", "slow: large or slow cells, and self-tests that run whole pytest sessions")
    config.addinivalue_line("markers", "cell: a conformance-matrix or accuracy cell (added automatically)")
    config.addinivalue_line("markers", "latency: timing tests; run serially, never beside another job (tox runs them "
                                       "as their own step after the parallel suites)")
    config.addinivalue_line("markers", "harness_targets(*globs): restrict a cell test to targets matching globs")
    _parse_weights(config.getoption("--harness-weights"))  # fail fast, as a usage error


def _parse_weights(values: list[str]) -> dict[str, str]:
    out = {}
    for item in values:
        name, sep, path = item.partition("=")
        if not sep or not path:
            raise pytest.UsageError(f"--harness-weights expects MODEL=PATH, got {item!r}")
        if Path(path).is_dir():
            raise pytest.UsageError(f"--harness-weights {name}: {path!r} is a directory; expected a weights file "
                                    f"(.pt / .pth / .safetensors)")
        if not Path(path).is_file():
            raise pytest.UsageError(f"--harness-weights {name}: file {path!r} does not exist")
        out[name] = path
    return out


def get_harness(config: pytest.Config) -> Harness:
    """Build the session's Harness once (after every initial conftest has registered its hooks)."""
    harness = config.stash.get(HARNESS_KEY, None)
    if harness is None:
        from export_harness.converters.cache import ArtifactCache, CacheError
        from export_harness.converters.checks.thresholds import ThresholdError
        from export_harness.converters.expectations import ExpectationError, known_cells
        from export_harness.converters.registry import default_target_registry
        from export_harness.models import datasets
        from export_harness.models.registry import default_registry
        from export_harness.plugin.harness import Harness

        datasets.set_data_dir(project.cache_dir(config) / "data")
        zoo = config.getoption("--harness-zoo")
        zoo = zoo if zoo is not None else config.getini("harness_zoo")
        try:
            models = default_registry(zoo=zoo)
        except ValueError as exc:
            raise pytest.UsageError(f"--harness-zoo / harness_zoo: {exc}") from None
        try:
            for extra in config.hook.pytest_harness_models(config=config):
                models.extend(extra or [])
        except (TypeError, ValueError) as exc:
            config_error(f"pytest_harness_models: {exc}")
        targets = default_target_registry()
        for extra in config.hook.pytest_harness_targets(config=config):
            for target in extra or []:
                targets.register(target)
        try:
            thresholds = project.thresholds(config)
            thresholds.check_names(models, targets)
        except ThresholdError as exc:
            config_error(exc)
        try:
            expectations = project.expectations(config)
            expectations.check_names(known_cells(models, targets, zoo))
        except ExpectationError as exc:
            config_error(exc)
        try:
            cache = ArtifactCache(project.cache_dir(config), retry_failed=config.getoption("--harness-retry-failed"),
                                  remeasure=config.getoption("--harness-remeasure"))
        except CacheError as exc:
            config_error(exc)
        harness = Harness(
            config=config, models=models, targets=targets,
            cache=cache,
            thresholds=thresholds,
            expectations=expectations,
            weights=_parse_weights(config.getoption("--harness-weights")),
            allow_pickle=config.getoption("--harness-allow-pickle"),
            weights_source=config.getoption("--harness-weights-source"),
        )
        unknown = [name for name in harness.weights if name not in models]
        if unknown:
            known = ", ".join(models.names())
            config_error(f"--harness-weights: unknown model {unknown[0]!r}; known: {known}")
        config.stash[HARNESS_KEY] = harness
    return harness


TIERS = ("smoke", "ci", "full")


def harness_tier(config: pytest.Config) -> str:
    """The run's tier (``--harness-tier``): what every suite's own scope option defaults to."""
    return config.getoption("--harness-tier", "ci")


def config_error(exc: Exception | str) -> NoReturn:
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


