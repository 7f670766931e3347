"""Where a test run's time goes: a cost table per suite, per converter backend and per model, from JUnit XML.

pytest writes the XML (``--junitxml``; tox's py311 env writes ``.tox/py311/tmp/junit.xml``). Pass one run, or a
cold and a warm run of the same suite (``--warm``), and the Markdown goes to stdout or ``-o FILE``::

    python -m export_harness.converters.report.ci_costs .tox/py311/tmp/junit.xml --warm warm.xml \
        -o docs/results/ci-costs.md
    python -m export_harness.converters.report.ci_costs .tox/py311/tmp/junit.xml \
        --store-durations .test_durations  # pytest-split

Times are the tests' own durations (setup + call + teardown) summed per row: with pytest-xdist they add up to
more than the wall clock (two workers), which the header states. No pytest here.
"""

from __future__ import annotations

import argparse
import re
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

CELL = re.compile(r"^test_(?:cell|accuracy|latency)\[(?P<model>[A-Za-z0-9_.]+)-(?P<target>.+?)(?:-b\d+)?\]$")


@dataclass(frozen=True)
class Case:
    """One test case of a JUnit file: its suite (file), model and backend when it is a cell, seconds, outcome."""

    suite: str
    name: str
    seconds: float
    outcome: str
    model: str | None = None
    backend: str | None = None
    nodeid: str = ""
    """pytest's node id (``suites/test_matrix.py::test_cell[...]``)."""


def _nodeid(classname: str, name: str) -> str:
    """``suites.test_matrix`` + ``test_cell[x]`` -> ``suites/test_matrix.py::test_cell[x]`` (Test classes kept)."""
    parts, classes = classname.split("."), []
    while len(parts) > 1 and parts[-1][:1].isupper():
        classes.insert(0, parts.pop())
    return "/".join(parts) + ".py::" + "::".join([*classes, name])


def durations(cases: Iterable[Case]) -> dict[str, float]:
    """pytest-split's ``.test_durations``: seconds per node id."""
    out: dict[str, float] = {}
    for case in cases:
        out[case.nodeid.split("@")[0]] = round(case.seconds, 3)
    return dict(sorted(out.items()))


def backend_of(target: str) -> str:
    """The converter/runtime family a target's time belongs to: ``tflite:fp16[onnx2tf]`` -> ``onnx2tf``."""
    family = target.split(":", 1)[0]
    if family in ("tflite", "tf") and "[" in target:
        return target[target.index("[") + 1:target.rindex("]")]
    if family == "onnx":
        return "onnx export + ONNX Runtime methods"
    return family


def read_cases(path: str | Path) -> list[Case]:
    """Every ``<testcase>`` of a pytest JUnit file (xdist's ``@group`` suffix stripped from names)."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise ValueError(f"{path}: not a readable JUnit XML file ({exc})") from None
    cases = []
    for tc in root.iter("testcase"):
        full = tc.get("name", "")
        name = full.split("@")[0]
        suite = tc.get("classname", "").split(".")[-1] or "?"
        outcome = "passed"
        for child in tc:
            if child.tag in ("failure", "error"):
                outcome = "failed"
            elif child.tag == "skipped":
                outcome = "xfail" if "xfail" in (child.get("type", "") + child.get("message", "")) else "skipped"
        m = CELL.match(name)
        cases.append(Case(suite=suite, name=name, seconds=float(tc.get("time") or 0.0), outcome=outcome,
                          model=m["model"] if m else None, backend=backend_of(m["target"]) if m else None,
                          nodeid=_nodeid(tc.get("classname", ""), full)))
    if not cases:
        raise ValueError(f"{path}: no <testcase> elements")
    return cases


def _totals(cases: Iterable[Case], key: str) -> dict[str, tuple[int, float]]:
    out: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for case in cases:
        label = getattr(case, key)
        if label is None:
            continue
        out[label][0] += 1
        out[label][1] += case.seconds
    return {k: (int(v[0]), v[1]) for k, v in out.items()}


def _section(title: str, key: str, cold: list[Case], warm: list[Case] | None,
             labels: tuple[str, str] = ("cold", "warm")) -> list[str]:
    c, w = _totals(cold, key), _totals(warm, key) if warm else {}
    total = sum(s for _, s in c.values()) or 1.0
    head = f"| {title} | tests | {labels[0]} min | share |" + (f" {labels[1]} min |" if warm else "")
    lines = [f"### per {title}", "", head, "|" + "---|" * (head.count("|") - 1)]
    for label, (n, secs) in sorted(c.items(), key=lambda kv: -kv[1][1]):
        row = f"| {label} | {n} | {secs / 60:.2f} | {secs / total:.0%} |"
        if warm:
            row += f" {w.get(label, (0, 0.0))[1] / 60:.2f} |"
        lines.append(row)
    return [*lines, ""]


def render(cold: list[Case], warm: list[Case] | None = None, sources: tuple[str, ...] = (),
           labels: tuple[str, str] = ("cold", "warm")) -> str:
    """The Markdown cost tables (per suite, per backend, per model) of one run, or of two runs of the same selection
    (cold and warm by default; ``labels`` names them, e.g. before and after a change)."""
    counts: dict[str, int] = defaultdict(int)
    for case in cold:
        counts[case.outcome] += 1
    summed = sum(c.seconds for c in cold)
    lines = ["# Where the test suite's time goes", "",
             f"Generated by `python -m export_harness.converters.report.ci_costs` from "
             f"{', '.join(sources) or 'JUnit XML'}. "
             "Minutes are the "
             "tests' own durations summed per row (under pytest-xdist the sum exceeds the wall clock).", "",
             f"{labels[0].capitalize()} run: {len(cold)} tests "
             f"({', '.join(f'{v} {k}' for k, v in sorted(counts.items()))}), "
             f"{summed / 60:.1f} test-minutes" + (f"; {labels[1]} run: {sum(c.seconds for c in warm) / 60:.1f} "
                                                  "test-minutes." if warm else "."), ""]
    for title in ("suite", "backend", "model"):
        lines += _section(title, title, cold, warm, labels)
    slowest = sorted(cold, key=lambda c: -c.seconds)[:15]
    lines += [f"### slowest tests ({labels[0]})", "", "| test | suite | seconds | outcome |", "|---|---|---|---|"]
    lines += [f"| `{c.name}` | {c.suite} | {c.seconds:.1f} | {c.outcome} |" for c in slowest]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export_harness.converters.report.ci_costs",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("junit", help="JUnit XML of a (cold) run")
    parser.add_argument("--warm", help="JUnit XML of a warm run of the same selection (or any second run)")
    parser.add_argument("--labels", default="cold,warm", metavar="FIRST,SECOND",
                        help="names of the two runs in the tables (default cold,warm; e.g. before,after)")
    parser.add_argument("-o", "--output", help="write the Markdown here (default: stdout)")
    parser.add_argument("--store-durations", metavar="PATH",
                        help="write the run's per-test seconds as pytest-split's durations file instead")
    args = parser.parse_args(argv)
    try:
        cold = read_cases(args.junit)
        warm = read_cases(args.warm) if args.warm else None
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from export_harness.converters.util.files import write_json_atomic, write_text_atomic

    if args.store_durations:
        write_json_atomic(args.store_durations, durations(cold))
        print(f"{len(cold)} test durations written to {args.store_durations}")
        return 0
    labels = tuple(args.labels.split(",", 1)) if "," in args.labels else (args.labels, "warm")
    text = render(cold, warm, tuple(Path(p).name for p in (args.junit, args.warm) if p), labels)
    if args.output:
        write_text_atomic(args.output, text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
