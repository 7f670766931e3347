"""Sharding across machines: N pytest-split shards of the matrix, merged, equal one run's report cell for cell.

Each shard is a separate pytest process (as on separate CI machines) writing its own ``--harness-report``; the
``export_harness.converters.report.matrix_report merge`` command joins them. The shards share the session's artifact
cache, as CI
shards share a restored ``actions/cache`` (a cold shard converts; the verdicts and metrics must not depend on it).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from export_harness.converters.report import matrix_report
from suites.matrix_helpers import ROOT, essentials, run_matrix

pytestmark = pytest.mark.slow  # a whole pytest session (or several) per test: CI runs it, tox -e quick does not

MODELS = ("tiny_ladeda", "sign_gru")
# the two models' cells on the ONNX / TorchScript targets (the TF backends have their own suites)
SELECTION = "(tiny_ladeda- or sign_gru-) and not tflite and not savedmodel"


def _matrix(pytestconfig: pytest.Config, report: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_matrix(pytestconfig, report, SELECTION, *args)


def test_three_shards_merged_equal_one_run(pytestconfig: pytest.Config, tmp_path: Path) -> None:
    single = _matrix(pytestconfig, tmp_path / "single.json")
    assert single.returncode == 0, single.stdout[-3000:] + single.stderr[-3000:]
    shards = []
    for group in (1, 2, 3):
        shard = tmp_path / f"shard-{group}.json"
        run = _matrix(pytestconfig, shard, "--splits=3", f"--group={group}")
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        assert f"Running group {group}/3" in run.stdout
        shards.append(shard)
    sizes = [len(matrix_report.load_report(s)) for s in shards]
    assert all(sizes), f"every shard must run cells: {sizes}"

    merged = tmp_path / "merged" / "matrix-report.json"
    cli = subprocess.run([sys.executable, "-m", "export_harness.converters.report.matrix_report", "merge",
                          *map(str, shards), "-o", str(merged)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr
    one = matrix_report.load_report(tmp_path / "single.json")
    both = matrix_report.load_report(merged)
    assert {c["model"] for c in one} == set(MODELS)
    assert sum(sizes) == len(one) == len(both)
    assert essentials(both) == essentials(one)
    # the merged run renders the same table rows (cell, verdict, stage, cosine, max_abs, top-1, size; the export
    # seconds and cache columns say how this process got the artifact) and the same guide-002 files
    def rows(cells: list[dict]) -> list[list[str]]:
        return [line.split()[:7] for line in matrix_report.table_lines(cells)[1:-1]]

    assert rows(both) == rows(one)
    for model in MODELS:
        record = json.loads((merged.parent / "export_results" / f"{model}.json").read_text())
        assert record["model"] == model


def test_merge_rejects_overlapping_or_foreign_reports(tmp_path: Path) -> None:
    cell = {"cell": "m-onnx:fp32", "model": "m", "target": "onnx:fp32", "outcome": "PASSED", "status": "passed",
            "stage": None, "message": "", "cache": "hit", "artifact": {}, "seconds": {}, "parity": [],
            "worst": {"cosine": 1.0, "max_abs": 0.0, "top1": None}}
    a = matrix_report.write_report(tmp_path / "a.json", [cell])
    with pytest.raises(ValueError, match=r"m-onnx:fp32 is in both .*a\.json and .*a\.json"):
        matrix_report.merge([a, a])
    bad = tmp_path / "bad.json"
    bad.write_text('{"cells": ')
    with pytest.raises(ValueError, match=r"bad\.json: not a readable matrix report"):
        matrix_report.merge([a, bad])
    (tmp_path / "other.json").write_text("[]")
    with pytest.raises(ValueError, match=r"other\.json: not a matrix report"):
        matrix_report.load_report(tmp_path / "other.json")


BLOCK_STACK = """
import sys
class _Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "numpy", "onnx", "onnxruntime", "tensorflow", "pytest"}:
            raise ImportError(f"{name}: the merge job does not install the harness's stack")
sys.meta_path.insert(0, _Blocked())
import runpy
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name="__main__")
"""


def test_the_merge_job_needs_no_stack(tmp_path: Path) -> None:
    """The workflow's merge job installs the harness with --no-deps (plus plotly): merging shard reports, the page
    and the step summary run with torch, numpy, onnx, TensorFlow and pytest unimportable."""
    def cell(name: str) -> dict[str, object]:
        return {"cell": f"m-{name}", "model": "m", "target": name, "outcome": "PASSED", "status": "passed",
                "stage": None, "message": "", "cache": "hit", "artifact": {}, "seconds": {}, "parity": [],
                "worst": {"cosine": 1.0, "max_abs": 0.0, "top1": None}}

    shards = [matrix_report.write_report(tmp_path / f"shard-{i}.json", [cell(t)])
              for i, t in enumerate(("onnx:fp32", "torchscript:trace"), 1)]
    merged = tmp_path / "report" / "matrix-report.json"
    for module, *args in (("export_harness.converters.report.matrix_report", "merge", *map(str, shards), "-o",
                           str(merged)),
                          ("export_harness.converters.report.html_report", str(merged), "-o",
                           str(tmp_path / "report" / "report.html")),
                          ("export_harness.converters.report.markdown_summary", str(merged))):
        run = subprocess.run([sys.executable, "-c", BLOCK_STACK, module, *args], capture_output=True, text=True,
                             timeout=120)
        assert run.returncode == 0, f"{module}: {run.stderr[-2000:]}"
    assert len(json.loads(merged.read_text())["cells"]) == 2
    assert (tmp_path / "report" / "report.html").stat().st_size > 0


def test_byte_identical_artifacts_of_two_methods_are_named(tmp_path: Path) -> None:
    """ONNX Runtime's entropy and minmax calibration wrote byte-identical files for a user's model: the table, the
    JSON report and the page say so instead of showing two methods."""
    from export_harness.converters.report import html_report

    def cell(target: str, sha: str) -> dict[str, object]:
        return {"cell": f"m-{target}", "model": "m", "target": target, "outcome": "PASSED", "status": "passed",
                "stage": None, "message": "", "cache": "hit", "artifact": {"content_sha256": sha}, "seconds": {},
                "parity": [], "worst": {"cosine": 1.0, "max_abs": 0.0, "top1": None}}

    cells = [cell("onnx:int8-static[entropy]", "aa"), cell("onnx:int8-static[minmax]", "aa"),
             cell("onnx:int8-static[percentile]", "bb"), {**cell("onnx:fp32", "aa"), "model": "other",
                                                          "cell": "other-onnx:fp32"}]
    lines = matrix_report.table_lines(cells)
    assert any("m-onnx:int8-static[entropy]" in x and "(same bytes as onnx:int8-static[minmax])" in x for x in lines)
    assert not any("percentile" in x and "same bytes" in x for x in lines)
    assert not any("other-onnx:fp32" in x and "same bytes" in x for x in lines)  # another model's file
    saved = json.loads(matrix_report.write_report(tmp_path / "r.json", cells).read_text())["cells"]
    assert {c["cell"]: c.get("identical_to") for c in saved}["m-onnx:int8-static[minmax]"] == [
        "onnx:int8-static[entropy]"]
    views = {v["id"]: v for v in html_report.page_data(cells)["cells"]}
    assert views["m-onnx:int8-static[entropy]"]["identical_to"] == ["onnx:int8-static[minmax]"]
