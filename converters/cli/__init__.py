"""``export-harness``: the export guides' command lines on the harness's own machinery.

Every subcommand runs what the pytest matrix runs (``export_harness.converters.session.Session`` ->
``export_harness.converters.conformance.run_cell``: the same weights, calibration split, cache, thresholds and declared
limitations), so a cell gets the same verdict from the CLI as from ``pytest suites/test_matrix.py``.

Modules, one job each:

- ``main``: the argument parser, dispatch and exit codes (0 ok, 1 a cell or artifact failed, 2 usage error);
- ``session``: the model (zoo name or ``--spec module:attr``), its weights, the cache, thresholds, calibration data;
- ``cells``: which targets ``--formats`` / ``--opset`` select, and one matrix cell run with its pytest-style outcome;
- ``export``, ``quantize``, ``benchmark``, ``verify``, ``report``: the subcommands;
- ``progress``: the one-line progress display on stderr.

Documented in ``docs/cli.md``.
"""

from __future__ import annotations

PROG = "export-harness"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """A bad argument: one line naming the argument or file and what was expected (exit 2, no traceback)."""
