"""The matrix summary table, ``--harness-report`` JSON and ``export_results/`` at the end of a session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from converters.report import matrix_report
from suites.plugin.junit import records_of


def _cell_rows(terminalreporter: Any) -> list[tuple[str, dict[str, Any]]]:
    rows = []
    for reports in terminalreporter.stats.values():
        for rep in reports:
            if getattr(rep, "when", None) != "call":
                continue
            props = records_of(rep)
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
        from converters.report import export_results  # guide 002's export_results.json per model + support table

        written = export_results.write(cells, Path(report_path).parent)
        tr.write_line(f"export_results/<model>.json and {written[-1].name} written to {Path(report_path).parent}")
