"""Where a project's files are: paths resolve against the pytest rootdir of the repository that runs the harness,
never next to the installed package. Unset files fall back to the defaults shipped inside the package."""

from __future__ import annotations

from pathlib import Path

import pytest

from export_harness.converters.checks.thresholds import Thresholds
from export_harness.converters.expectations import FILE_NAME, Expectations

BASELINES = "baselines"
"""The project's own folder of thresholds, budgets, accuracy and benchmark baselines (created on first record)."""


def baselines_dir(config: pytest.Config) -> Path:
    """``<rootdir>/baselines``."""
    return config.rootpath / BASELINES


def project_file(config: pytest.Config, option: str, name: str) -> Path | None:
    """The file an option names, else ``<rootdir>/baselines/<name>`` when it exists, else None (defaults only)."""
    given = config.getoption(option)
    if given:
        return Path(given)
    path = baselines_dir(config) / name
    return path if path.is_file() else None


def cache_dir(config: pytest.Config) -> Path:
    """``--harness-cache`` (its default is ``$HARNESS_CACHE``), else ``<rootdir>/.harness-cache``."""
    given = config.getoption("--harness-cache")
    return Path(given) if given else config.rootpath / ".harness-cache"


def thresholds(config: pytest.Config) -> Thresholds:
    """The package's default tiers and floors, with the project's thresholds file layered over them."""
    return Thresholds.load(project_file(config, "--harness-thresholds", "thresholds.toml"))


def expectations(config: pytest.Config) -> Expectations:
    """The project's expected failures and skips (``--harness-expectations``, else ``baselines/expectations.toml``),
    before the harness's own."""
    return Expectations.load(project_file(config, "--harness-expectations", FILE_NAME))
