"""The HTML report, rendered in a real browser (Debian's headless Chromium) from a real run.

One pytest session of a few ``tiny_ladeda`` cells (a pass, a declared failure, a failure made real by a tightened
threshold, cells skipped because the onnx-tf backend is withheld, and accuracy cells) writes ``--harness-report``,
``--junitxml`` and ``--harness-html``. The page's DOM, after its scripts ran, must hold one grid cell per collected
cell with the run's verdict counts, open a cell's detail from the URL, and log no script error; screenshots of the
grid and of the failing cell's detail are saved (to ``$HARNESS_SCREENSHOT_DIR`` when set: tox keeps them).
Where Chromium is absent the browser tests skip saying so, unless ``HARNESS_REQUIRE_BROWSER=1`` (CI) makes that a
failure.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from export_harness.converters.report import html_report, matrix_report

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FAILING = "tiny_ladeda-onnx:int8-dynamic"
CELLS = ("onnx:fp32", "onnx:int8-dynamic", "onnx:int8-static[minmax]", "tflite:fp32[onnx-tf]@opset12",
         "tf:savedmodel[onnx-tf]@opset12")
SELECTION = [f"suites/test_matrix.py::test_cell[tiny_ladeda-{t}]" for t in CELLS] + [
    f"suites/test_accuracy.py::test_accuracy[tiny_ladeda-{t}]" for t in ("onnx:fp32", "onnx:int8-dynamic")]
WINDOW = (1600, 1100)


def _need_browser() -> str:
    if CHROMIUM:
        return CHROMIUM
    reason = ("Debian's chromium is not installed (apt-get install chromium); .ci/run installs it, and "
              "HARNESS_REQUIRE_BROWSER=1 turns this skip into a failure")
    if os.environ.get("HARNESS_REQUIRE_BROWSER") == "1":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def chromium(url: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium on a file URL with the flags this network-less machine needs; console lines on stderr."""
    cmd = [_need_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}", "--virtual-time-budget=20000",
           "--enable-logging=stderr", "--v=0", *args, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)


def console_errors(stderr: str) -> list[str]:
    """Uncaught errors and failed loads the browser logged for the page."""
    return [ln for ln in stderr.splitlines() if (":CONSOLE" in ln and ("Uncaught" in ln or "Error" in ln))
            or "net::ERR_" in ln]


class DomFacts(HTMLParser):
    """What the rendered DOM shows: grid cells, count badges, the root's render flags, the open detail."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[str, str] = {}
        self.counts: dict[str, int] = {}
        self.root: dict[str, str] = {}
        self.detail_hidden = True
        self.detail_text: list[str] = []
        self._in_detail = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "html":
            self.root = a
        if tag == "td" and "data-cell" in a:
            self.cells[a["data-cell"]] = a["data-verdict"]
        if tag == "span" and "count" in a.get("class", "").split() and "data-count" in a:
            self.counts[a["data-verdict"]] = int(a["data-count"])
        if tag == "aside" and a.get("id") == "detail":
            self.detail_hidden = "hidden" in a
            self._in_detail = 1
        elif self._in_detail:
            self._in_detail += 1

    def handle_endtag(self, tag: str) -> None:
        if self._in_detail:
            self._in_detail -= 1

    def handle_data(self, data: str) -> None:
        if self._in_detail:
            self.detail_text.append(data)


def dom_of(page: Path, profile: Path, fragment: str = "") -> tuple[DomFacts, list[str]]:
    proc = chromium(page.as_uri() + fragment, profile, "--dump-dom")
    assert proc.returncode == 0, proc.stderr[-2000:]
    facts = DomFacts()
    facts.feed(proc.stdout)
    return facts, console_errors(proc.stderr)


def screenshot(page: Path, profile: Path, out: Path, fragment: str = "") -> Path:
    proc = chromium(page.as_uri() + fragment, profile, f"--screenshot={out}")
    assert proc.returncode == 0 and out.is_file(), proc.stderr[-2000:]
    keep = os.environ.get("HARNESS_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy2(out, Path(keep) / out.name)
    return out


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def junit_verdicts(path: Path) -> dict[str, str]:
    """Grid verdict of each matrix cell in the run's JUnit XML (pytest's default xunit2)."""
    out = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = case.get("name", "")
        if not name.startswith("test_cell["):
            continue
        skipped = case.find("skipped")
        if case.find("failure") is not None or case.find("error") is not None:
            verdict = "fail"
        elif skipped is not None:
            verdict = "declared" if skipped.get("type") == "pytest.xfail" else "skipped"
        else:
            verdict = "pass"
        out[name.removeprefix("test_cell[").removesuffix("]")] = verdict
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One real pytest session over a few cells; its report, JUnit XML and HTML page."""
    out = tmp_path_factory.mktemp("html-run")
    thresholds = out / "thresholds.toml"
    thresholds.write_text(f'[cells."{FAILING}"]\ncosine_min = 0.99999999\nreason = "the HTML report test: a real '
                          'failure, the tier tightened past the cosine this artifact measures (~0.99999)"\n')
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_XDIST_WORKER", "PYTEST_ADDOPTS")}
    env["HARNESS_ONNX_TF_PYTHON"] = str(out / "no-onnx-tf-venv" / "bin" / "python")  # its cells skip
    cmd = [sys.executable, "-m", "pytest", *SELECTION,
           "-p", "no:randomly", "-p", "no:cacheprovider", "-p", "no:anyio", "-q",
           f"--harness-thresholds={thresholds}", f"--harness-report={out / 'matrix-report.json'}",
           f"--junitxml={out / 'junit.xml'}", f"--harness-html={out / 'report.html'}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 1, f"expected exactly the tightened cell to fail (exit 1):\n{proc.stdout[-4000:]}"
    return {"dir": out, "stdout": proc.stdout, "report": out / "matrix-report.json", "junit": out / "junit.xml",
            "html": out / "report.html"}


def embedded_data(page: Path) -> dict[str, Any]:
    text = page.read_text(encoding="utf-8")
    start = text.index('id="harness-data">') + len('id="harness-data">')
    return json.loads(text[start:text.index("</script>", start)])


@pytest.mark.slow
def test_report_holds_every_collected_cell_with_the_runs_verdicts(run: dict[str, Any]) -> None:
    verdicts = junit_verdicts(run["junit"])
    assert set(verdicts.values()) == {"pass", "declared", "fail", "skipped"}, verdicts
    report = matrix_report.load_full_report(run["report"])
    assert {c["cell"]: html_report.verdict(c["outcome"]) for c in report["cells"]} == verdicts
    assert {a["cell"] for a in report["accuracy"]} >= {"tiny_ladeda-onnx:fp32", "tiny_ladeda-onnx:int8-dynamic"}
    assert report["environment"]["versions"]["torch"].startswith("2.")
    data = embedded_data(run["html"])
    assert Counter(c["verdict"] for c in data["cells"]) == Counter(verdicts.values())
    failing = next(c for c in data["cells"] if c["id"] == FAILING)
    assert failing["stage"] == "parity" and "cosine" in failing["message"] and failing["saved_batch"]
    assert failing["sha256"] and len(failing["sha256"]) == 64 and failing["versions"].get("onnxruntime")
    skipped = [c for c in data["cells"] if c["verdict"] == "skipped"]
    assert skipped and all("export-harness setup onnx-tf" in c["message"] for c in skipped)
    assert all("[onnx-tf]" in c["id"] for c in skipped), [c["id"] for c in skipped]  # whole ids, ] kept


@pytest.mark.slow
def test_saved_json_renders_the_same_page_data(run: dict[str, Any], tmp_path: Path) -> None:
    """The command that renders a saved (or merged) report gives the grid the run's own page has."""
    out = tmp_path / "again.html"
    proc = subprocess.run([sys.executable, "-m", "export_harness.converters.report.html_report", str(run["report"]),
                           "-o", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    first, again = embedded_data(run["html"]), embedded_data(out)
    for key in ("cells", "counts", "accuracy", "models", "targets"):
        assert first[key] == again[key], key


@pytest.mark.slow
def test_report_in_headless_chromium(run: dict[str, Any], tmp_path: Path) -> None:
    verdicts = junit_verdicts(run["junit"])
    facts, errors = dom_of(run["html"], tmp_path / "profile")
    assert facts.root.get("data-rendered") == "1", "the page's script did not finish rendering"
    assert json.loads(facts.root.get("data-js-errors", "null")) == [] and errors == [], (facts.root, errors)
    assert facts.cells == verdicts  # one grid cell per collected cell, each with the run's verdict
    assert facts.counts == {"total": len(verdicts), **{v: list(verdicts.values()).count(v)
                                                       for v in html_report.VERDICTS}}
    assert facts.detail_hidden
    shot = screenshot(run["html"], tmp_path / "profile", tmp_path / "report-grid.png")
    assert png_size(shot) == WINDOW and shot.stat().st_size > 20_000


@pytest.mark.slow
def test_failing_cell_detail_opens_from_its_url(run: dict[str, Any], tmp_path: Path) -> None:
    fragment = "#cell=" + FAILING.replace(":", "%3A")
    facts, errors = dom_of(run["html"], tmp_path / "profile", fragment)
    assert errors == [] and json.loads(facts.root["data-js-errors"]) == []
    assert not facts.detail_hidden
    text = " ".join(facts.detail_text)
    for expected in (FAILING, "failure (FAILED)", "parity", "saved failing batch", "artifact sha256",
                     "onnxruntime", "accuracy", "cosine"):
        assert expected in text, expected
    shot = screenshot(run["html"], tmp_path / "profile", tmp_path / "report-failing-cell.png", fragment)
    assert png_size(shot) == WINDOW


def test_inlined_text_cannot_close_the_script(tmp_path: Path) -> None:
    """A verbatim error message holding ``</script>`` stays data (converter messages are not under our control)."""
    cell = {"cell": "m-onnx:fp32", "model": "m", "target": "onnx:fp32", "outcome": "FAILED", "stage": "export",
            "message": "boom </script><script>window.pwned=1</script>", "artifact": {}, "worst": {}, "parity": []}
    page = html_report.write_html(tmp_path / "r.html", [cell])
    text = page.read_text(encoding="utf-8")
    assert "<script>window.pwned" not in text
    assert embedded_data(page)["cells"][0]["message"] == cell["message"]


@pytest.mark.parametrize("content, expected", [
    ("not json", "not a readable matrix report"),
    ('{"cells": 3}', "expected a JSON object with a 'cells' list"),
])
def test_bad_report_file_is_one_line_and_exit_2(tmp_path: Path, content: str, expected: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    proc = subprocess.run([sys.executable, "-m", "export_harness.converters.report.html_report", str(bad), "-o",
                           str(tmp_path / "r.html")], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and expected in proc.stderr and str(bad) in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "r.html").exists()


@pytest.mark.slow
def test_a_later_step_reads_the_runs_accuracy_verdicts(run: dict[str, Any], tmp_path: Path) -> None:
    """The latency step (``--accuracy-results``) learns from this report which artifact bytes passed accuracy."""
    from export_harness.plugin.accuracy import _earlier_results

    earlier = _earlier_results(str(run["report"]))
    verdict, record = earlier["tiny_ladeda-onnx:fp32"]
    assert verdict == "passed" and len(record["artifact_sha256"]) == 64
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    with pytest.raises(pytest.UsageError, match=r"--accuracy-results .*bad.json: not a matrix report"):
        _earlier_results(str(bad))


def test_a_missing_browser_skips_here_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    module = sys.modules[__name__]
    monkeypatch.setattr(module, "CHROMIUM", None)
    monkeypatch.delenv("HARNESS_REQUIRE_BROWSER", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"apt-get install chromium"):
        _need_browser()
    monkeypatch.setenv("HARNESS_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match=r"chromium is not installed"):
        _need_browser()
