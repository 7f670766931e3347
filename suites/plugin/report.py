"""The matrix summary table, ``--harness-report`` JSON, ``export_results/`` and ``--harness-html`` at the end of a
session (on the xdist controller, which sees every worker's reports)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from export_harness.converters.report import matrix_report
from export_harness.plugin.junit import records_of

_CELL_TEST = "::test_cell["


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("harness").addoption(
        "--harness-html", default=None, metavar="PATH",
        help="write the run as one self-contained HTML page (model x target grid, each cell's detail, latency "
             "history, speedup and accuracy plots) to PATH; needs the 'report' extra (plotly)")


def _outcome(rep: Any) -> str:
    if hasattr(rep, "wasxfail"):
        return "XFAIL" if rep.outcome == "skipped" else "XPASS"
    return rep.outcome.upper()


def _rows(terminalreporter: Any, record: str) -> list[dict[str, Any]]:
    """The ``record`` dicts (``harness`` or ``accuracy``) of the session's call reports, each with its outcome."""
    rows = {}
    for reports in terminalreporter.stats.values():
        for rep in reports:
            if getattr(rep, "when", None) != "call":
                continue
            props = records_of(rep)
            if record in props:
                rows[props[record]["cell"]] = dict(props[record], outcome=_outcome(rep))
    return [rows[k] for k in sorted(rows)]


def cell_id_of(nodeid: str) -> str:
    """``MODEL-TARGET`` of a matrix item's node id: the target keeps its own brackets (``tflite:fp32[onnx-tf]``)
    and an xdist group suffix (``]@sign_gru``) goes."""
    return nodeid.split(_CELL_TEST, 1)[1].rpartition("]")[0]


def _skipped_cells(terminalreporter: Any, config: pytest.Config) -> list[dict[str, Any]]:
    """Matrix cells skipped before they ran (a backend not installed): a record each, so the report and the grid
    hold every collected cell."""
    from export_harness.plugin.core import get_harness

    harness = get_harness(config)
    out = []
    for rep in terminalreporter.stats.get("skipped", []):
        if getattr(rep, "when", None) != "setup" or _CELL_TEST not in rep.nodeid or hasattr(rep, "wasxfail"):
            continue
        cell_id = cell_id_of(rep.nodeid)
        model = next((m for m in sorted(harness.models.names(), key=len, reverse=True)
                      if cell_id.startswith(m + "-")), None)
        if model is None:
            continue
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        out.append(matrix_report.skipped_cell(model, cell_id[len(model) + 1:], reason.removeprefix("Skipped: ")))
    return out


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    cells = _rows(terminalreporter, "harness")
    if not cells:  # no matrix cell (an accuracy or latency run): the account alone
        account = _session_account(config)
        if account:
            terminalreporter.section("export conformance harness")
            terminalreporter.write_line(account)
        return
    tr = terminalreporter
    tr.section("export conformance matrix")
    for line in matrix_report.table_lines(cells, account=_session_account(config)):
        tr.write_line(line)
    report_path = config.getoption("--harness-report")
    if report_path:
        from export_harness.converters.report import (
            export_results,  # guide 002's export_results.json per model + support table
        )
        from export_harness.converters.report.environment import environment

        everything = cells + _skipped_cells(tr, config)
        matrix_report.write_report(report_path, everything, _rows(tr, "accuracy"), environment(config.rootpath))
        tr.write_line(f"cell metrics written to {report_path}")
        written = export_results.write(cells, Path(report_path).parent)
        tr.write_line(f"export_results/<model>.json and {written[-1].name} written to {Path(report_path).parent}")


ACCOUNTS_KEY = pytest.StashKey[list[dict[str, list[str]]]]()
"""Cache accounts of the finished pytest-xdist workers (the controller's own cache converts nothing)."""


def _session_account(config: pytest.Config) -> str | None:
    """The conversion account of the whole session: this process's cache, plus every xdist worker's."""
    from export_harness.converters.cache import account_line
    from export_harness.plugin.core import HARNESS_KEY

    accounts = list(config.stash.get(ACCOUNTS_KEY, []))
    harness = config.stash.get(HARNESS_KEY, None)
    if harness is not None:
        accounts.append(harness.cache.stats.account())
    return account_line(accounts) if accounts else None


def _hand_over_cache_account(session: pytest.Session) -> None:
    """An xdist worker hands its cache account to the controller (``workeroutput``, sent after this hook)."""
    from export_harness.plugin.core import HARNESS_KEY

    output = getattr(session.config, "workeroutput", None)
    harness = session.config.stash.get(HARNESS_KEY, None)
    if output is not None and harness is not None:
        output["harness_cache_account"] = harness.cache.stats.account()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    account = getattr(node, "workeroutput", {}).get("harness_cache_account")
    if account is not None:
        node.config.stash.setdefault(ACCOUNTS_KEY, []).append(account)


@pytest.hookimpl(trylast=True)  # after the latency plugin has written --latency-report
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _hand_over_cache_account(session)
    config = session.config
    path = config.getoption("--harness-html")
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if not path or reporter is None or hasattr(config, "workerinput") or exitstatus in (
            pytest.ExitCode.INTERNAL_ERROR, pytest.ExitCode.USAGE_ERROR):
        return
    from export_harness.converters.report import html_report
    from export_harness.converters.report.environment import environment

    cells = _rows(reporter, "harness") + _skipped_cells(reporter, config)
    latency_path = config.getoption("--latency-report", None)
    try:
        latency = html_report.load_latency(latency_path) if latency_path and Path(latency_path).is_file() else None
        out = html_report.write_html(path, cells, accuracy=_rows(reporter, "accuracy"), latency=latency,
                                     history_dir=_benchmark_storage(config), environment=environment(config.rootpath))
    except html_report.ReportInputError as exc:
        reporter.write_line(f"--harness-html {path}: not written: {exc}", red=True)
        return
    reporter.write_line(f"HTML report of {len(cells)} cells written to {out}")


def _benchmark_storage(config: pytest.Config) -> Path:
    """pytest-benchmark's ``--benchmark-storage`` folder (saved runs: the latency history)."""
    storage = str(config.getoption("benchmark_storage", None) or "")
    storage = storage.removeprefix("file://")
    return Path(storage) if storage and not storage.startswith(("./.benchmarks", ".benchmarks")) else (
        config.rootpath / "baselines" / "benchmarks")
