"""This repository's pytest configuration: the harness plugin (:mod:`export_harness.plugin`) does everything else.

Installed (``pip install -e .``, as tox does), the plugin is registered by its ``pytest11`` entry point and this file
only adds pytester for the self-tests and the Hypothesis profiles of the property suites (this repository's tests, not
the plugin's: a user's own Hypothesis tests keep their settings). With plugin autoloading disabled it loads the plugin
itself, so it is never registered twice.
"""

from __future__ import annotations

import os
from importlib.metadata import entry_points

import pytest

PLUGIN = "export_harness.plugin"


def _autoloaded() -> bool:
    if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        return False
    return any(ep.value == PLUGIN for ep in entry_points(group="pytest11"))


pytest_plugins = ["pytester"] if _autoloaded() else ["pytester", PLUGIN]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("harness").addoption(
        "--harness-hypothesis-profile", default=None, choices=("dev", "ci"),
        help="Hypothesis profile of the property suites: dev or ci (env HARNESS_HYPOTHESIS_PROFILE; ci when CI is set)")


def pytest_configure(config: pytest.Config) -> None:
    if not config.getoption("hypothesis_profile", None):  # Hypothesis's own --hypothesis-profile wins
        from suites import hypothesis_profiles

        hypothesis_profiles.load_profile(config.getoption("--harness-hypothesis-profile"))
