"""The export conformance harness as a pytest plugin.

Registered through the ``pytest11`` entry point ``export_conformance_harness`` (``pyproject.toml``), so installing the
harness enables it in any repository: the options (``--harness-*``, ``--accuracy-*``, ``--latency-*``), the hooks a
project implements in its own ``conftest.py`` (``pytest_harness_models``, ``pytest_harness_targets``), the session's
state, and the matrix, accuracy and latency test items (:mod:`export_harness.plugin.items`: a project imports them
into one
test module of its own).

Modules: ``core`` (options, hooks, the Harness), ``project`` (a project's files, relative to its rootdir), ``cells``
(the cell generator and the matrix check), ``scheduling`` (xdist grouping, ordering, memory), ``report`` (the matrix
table and JSON), ``junit`` (cell records as flat JUnit properties, the Markdown summary), ``accuracy`` and
``latency`` (those suites' options, cells and summaries), ``items`` (test items).
"""

pytest_plugins = [
    "export_harness.plugin.core",
    "export_harness.plugin.cells",
    "export_harness.plugin.scheduling",
    "export_harness.plugin.junit",
    "export_harness.plugin.report",
    "export_harness.plugin.accuracy",
    "export_harness.plugin.latency",
    "export_harness.plugin.items",
]
