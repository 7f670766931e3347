"""A test run as Markdown (GitHub's ``$GITHUB_STEP_SUMMARY``): outcome counts, failures, per-model cell counts.

Fed by the plugin's ``--harness-markdown``; ``python -m export_harness.converters.report.markdown_summary
matrix-report.json``
renders the same cell table from a saved matrix report.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from export_harness.converters.util.files import write_text_atomic

ORDER = ("passed", "failed", "xfail", "xpass", "skipped")


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def summary_markdown(rows: Iterable[Mapping[str, Any]]) -> str:
    """Markdown of test rows: ``nodeid``, ``outcome`` (passed / failed / xfail / xpass / skipped), ``records`` (the
    harness's per-cell dicts), ``longrepr`` (the failure's first line)."""
    rows = list(rows)
    counts = Counter(r["outcome"] for r in rows)
    lines = ["# Export conformance run", "",
             " · ".join(f"**{counts[o]}** {o}" for o in ORDER if counts[o]) or "no tests", ""]
    bad = [r for r in rows if r["outcome"] in ("failed", "xpass")]
    if bad:
        lines += ["## Failures", "", "| test | stage | first line |", "| --- | --- | --- |"]
        for r in sorted(bad, key=lambda r: r["nodeid"]):
            cell = (r.get("records") or {}).get("harness") or {}
            stage = cell.get("stage") or ("XPASS(strict)" if r["outcome"] == "xpass" else "")
            lines.append(f"| `{_escape(r['nodeid'])}` | {stage} | {_escape(r.get('longrepr') or '')} |")
        lines.append("")
    cells = [r for r in rows if "harness" in (r.get("records") or {})]
    if cells:
        lines += ["## Matrix cells per model", "", "| model | " + " | ".join(ORDER) + " |",
                  "|" + " --- |" * (len(ORDER) + 1)]
        per_model: dict[str, Counter] = {}
        for r in cells:
            per_model.setdefault(r["records"]["harness"].get("model", "?"), Counter())[r["outcome"]] += 1
        for model, c in sorted(per_model.items()):
            lines.append(f"| `{model}` | " + " | ".join(str(c[o]) for o in ORDER) + " |")
        lines.append("")
    return "\n".join(lines)


def write_summary(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write the summary to ``path`` atomically (CI appends the file to ``$GITHUB_STEP_SUMMARY``)."""
    path = Path(path)
    write_text_atomic(path, summary_markdown(rows))
    return path


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 1:
        print("usage: python -m export_harness.converters.report.markdown_summary MATRIX_REPORT.json", file=sys.stderr)
        return 2
    try:
        cells = json.loads(Path(args[0]).read_text())["cells"]
    except (OSError, ValueError, KeyError) as exc:
        print(f"{args[0]}: not a matrix report ({exc})", file=sys.stderr)
        return 2
    rows = [{"nodeid": c["cell"], "outcome": {"PASSED": "passed", "FAILED": "failed", "XFAIL": "xfail",
                                              "XPASS": "xpass"}.get(c.get("outcome", ""), "skipped"),
             "records": {"harness": c}, "longrepr": (c.get("message") or "").splitlines()[0] if c.get("message")
             else ""} for c in cells]
    print(summary_markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
