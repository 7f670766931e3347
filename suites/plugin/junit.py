"""Cell records in JUnit XML and a Markdown job summary.

The suites attach one record per cell to its report (``record``: ``harness``, ``accuracy``...; a dict each). Before
any reporter sees a report, its dict records move to ``report.harness_records`` (the matrix table and the JSON
reports read them there) and flat, scalar ``user_properties`` take their place (``harness.status``,
``harness.cosine``, ``accuracy.top1.drop_pp``...): what pytest's default ``xunit2`` JUnit writes as the test case's
properties, which CI dashboards list. ``record`` appends to the item itself, so pytest's ``record_property`` fixture
and its xunit2 warning are not involved. ``--harness-markdown=PATH`` writes the run's summary as Markdown (for
``$GITHUB_STEP_SUMMARY``).
"""

from __future__ import annotations

from typing import Any

import pytest

from export_harness.converters.report.markdown_summary import write_summary

_HARNESS_KEYS = ("status", "stage", "cache")
_ON_WORKER = False
"""True in a pytest-xdist worker: records then travel to the controller untouched (a report's extra attributes do
not survive xdist's serialisation), and the controller moves them."""


def pytest_configure(config: pytest.Config) -> None:
    global _ON_WORKER
    _ON_WORKER = hasattr(config, "workerinput")


def record(node: pytest.Item, name: str, value: Any) -> None:
    """Attach ``value`` (a dict) as the record ``name`` of the running test."""
    node.user_properties.append((name, value))


@pytest.fixture
def harness_record(request: pytest.FixtureRequest) -> Any:
    """``harness_record(name, value)``: attach a record to the running test (``record_property`` without its xunit2
    warning; a dict value becomes flat JUnit properties)."""
    return lambda name, value: record(request.node, name, value)


def flat_properties(name: str, value: Any) -> list[tuple[str, str]]:
    """Scalar JUnit properties of one record: identity, verdict and the numbers a dashboard shows."""
    if not isinstance(value, dict):
        return [(name, str(value))]
    out: list[tuple[str, Any]] = [(f"{name}.{k}", value[k]) for k in _HARNESS_KEYS if value.get(k) is not None]
    worst = value.get("worst") or {}
    out += [(f"{name}.{k}", v) for k, v in worst.items() if v is not None]
    artifact = value.get("artifact") or {}
    out += [(f"{name}.artifact.{k}", artifact[k]) for k in ("key", "size_bytes", "convert_seconds", "opset_produced")
            if artifact.get(k) is not None]
    for metric in value.get("metrics") or []:  # an accuracy record
        if isinstance(metric, dict) and "name" in metric:
            out += [(f"{name}.{metric['name']}.{k}", metric[k]) for k in ("fp32", "method", "drop", "ci_low",
                                                                          "ci_high", "threshold") if k in metric]
    out += [(f"{name}.{k}", v) for k, v in value.items() if isinstance(v, (int, float, str, bool))
            and k not in _HARNESS_KEYS and not (k == "message" and not v)]
    return [(k, (str(v).splitlines() or [""])[0][:300]) for k, v in out]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Move dict records off ``user_properties`` (before junitxml and the terminal see the report)."""
    records = {n: v for n, v in report.user_properties if isinstance(v, dict)}
    if not records or _ON_WORKER:
        return
    report.harness_records = {**getattr(report, "harness_records", {}), **records}  # type: ignore[attr-defined]
    flat = [(n, v) for n, v in report.user_properties if not isinstance(v, dict)]
    for name, value in records.items():
        flat += flat_properties(name, value)
    report.user_properties = flat


def records_of(report: Any) -> dict[str, Any]:
    """A report's dict records (moved or not yet moved)."""
    moved = getattr(report, "harness_records", None)
    return dict(moved) if moved else {n: v for n, v in (getattr(report, "user_properties", None) or [])
                                      if isinstance(v, dict)}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("harness").addoption(
        "--harness-markdown", default=None, metavar="PATH",
        help="write the run's summary (outcomes, failures with their stage and first line, per-model counts) as "
             "Markdown to PATH, e.g. $GITHUB_STEP_SUMMARY")


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    path = config.getoption("--harness-markdown")
    if not path or _ON_WORKER:  # the controller sees every worker's reports
        return
    rows = []
    for reports in terminalreporter.stats.values():
        for rep in reports:
            if getattr(rep, "when", None) == "call" or (getattr(rep, "when", None) == "setup" and rep.skipped):
                rows.append({"nodeid": rep.nodeid, "outcome": _outcome(rep), "records": records_of(rep),
                             "longrepr": _first_line(rep)})
    write_summary(path, rows)
    terminalreporter.write_line(f"Markdown summary written to {path}")


def _outcome(rep: Any) -> str:
    if hasattr(rep, "wasxfail"):
        return "xfail" if rep.skipped else "xpass"
    return rep.outcome


def _first_line(rep: Any) -> str:
    if rep.passed:
        return ""
    text = getattr(rep, "longreprtext", "") or ""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    head = next((ln for ln in lines if ln.lstrip().startswith(("[", "E "))), lines[-1] if lines else "")
    return head.strip().removeprefix("E ").strip()[:300]
