"""This repository's pytest configuration: the harness plugin (:mod:`export_harness.plugin`) does everything.

Installed (``pip install -e .``, as tox does), the plugin is registered by its ``pytest11`` entry point and this file
only adds pytester for the self-tests. Run from a checkout that was not installed, it loads the plugin itself, so it
is never registered twice.
"""

from __future__ import annotations

import os
from importlib.metadata import entry_points

PLUGIN = "export_harness.plugin"


def _autoloaded() -> bool:
    if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        return False
    return any(ep.value == PLUGIN for ep in entry_points(group="pytest11"))


pytest_plugins = ["pytester"] if _autoloaded() else ["pytester", PLUGIN]
