"""``export-harness report``: a saved matrix run (or its shard reports) as HTML and Markdown.

Thin on purpose: the reports are read and merged by ``export_harness.converters.report.matrix_report.merge_reports``,
the page is
``export_harness.converters.report.html_report.write_html`` and the summary
``export_harness.converters.report.markdown_summary.summary_markdown``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from export_harness.converters.cli import EXIT_OK, UsageError
from export_harness.converters.cli.files import publish
from export_harness.converters.cli.session import first_line
from export_harness.converters.report import matrix_report
from export_harness.converters.report.markdown_summary import summary_markdown
from export_harness.converters.util.files import write_text_atomic

_OUTCOMES = {"PASSED": "passed", "FAILED": "failed", "XFAIL": "xfail", "XPASS": "xpass"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("reports", nargs="+", metavar="MATRIX_REPORT.json",
                        help="a matrix report (pytest --harness-report), or one per shard")
    parser.add_argument("--latency", metavar="LATENCY_REPORT.json", default=None,
                        help="the latency suite's --latency-report, for the HTML page's latency plots")
    parser.add_argument("--history", metavar="DIR", default=None,
                        help="saved pytest-benchmark runs (baselines/benchmarks): the latency history plots")
    parser.add_argument("--html", metavar="OUT.html", default=None, help="write the HTML report here")
    parser.add_argument("--markdown", metavar="OUT.md", default=None, help="write the Markdown summary here")


def markdown_rows(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``summary_markdown``'s rows from matrix report cells (as ``python -m
    export_harness.converters.report.markdown_summary``)."""
    return [{"nodeid": c["cell"], "outcome": _OUTCOMES.get(c.get("outcome", ""), "skipped"), "records": {"harness": c},
             "longrepr": (c.get("message") or "").splitlines()[0] if c.get("message") else ""} for c in cells]


def _writable(value: str | None, option: str) -> None:
    if value is not None and not Path(value).parent.is_dir():
        raise UsageError(f"{option} {value}: directory {Path(value).parent} does not exist")


def run(args: argparse.Namespace) -> int:
    if not args.html and not args.markdown:
        raise UsageError("report: nothing to write; give --html OUT.html and/or --markdown OUT.md")
    for report in args.reports:
        if Path(report).is_dir():
            raise UsageError(f"MATRIX_REPORT {report}: is a directory; expected a matrix report JSON file "
                             "(pytest --harness-report)")
        if not Path(report).is_file():
            raise UsageError(f"MATRIX_REPORT {report}: file does not exist")
    if args.latency is not None and not Path(args.latency).is_file():
        raise UsageError(f"--latency {args.latency}: file does not exist")
    if args.history is not None and not Path(args.history).is_dir():
        raise UsageError(f"--history {args.history}: directory does not exist")
    _writable(args.html, "--html")
    _writable(args.markdown, "--markdown")
    try:
        merged = matrix_report.merge_reports(args.reports)
    except ValueError as exc:
        raise UsageError(f"MATRIX_REPORT: {exc}") from None
    cells = merged["cells"]
    if args.markdown:
        path = publish(write_text_atomic(args.markdown, summary_markdown(markdown_rows(cells))))
        print(f"Markdown summary of {len(cells)} cells written to {path}")
    if args.html:
        try:
            from export_harness.converters.report import html_report
        except ImportError as exc:
            raise UsageError(f"--html {args.html}: the HTML report is not available ({first_line(exc)})") from None
        try:
            latency = html_report.load_latency(args.latency) if args.latency else None
            out = html_report.write_html(args.html, cells, accuracy=merged["accuracy"], latency=latency,
                                         history_dir=args.history, environment=merged["environment"])
        except ValueError as exc:  # html_report.ReportInputError: an input it cannot use, or plotly missing
            raise UsageError(f"--html {args.html}: {exc}") from None
        print(f"HTML report of {len(cells)} cells written to {publish(Path(out))}")
    return EXIT_OK
