"""The CI-speed commands: the cost table and durations from JUnit XML, and the calibration-count pick."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from export_harness.converters.accuracy import calibration_curve
from export_harness.converters.report import ci_costs

REPO = Path(__file__).resolve().parents[1]

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="suites.test_matrix" name="test_cell[sign_gru-tflite:fp16[onnx2tf]]@sign_gru" time="30.5"/>
<testcase classname="suites.test_matrix" name="test_cell[sign_gru-onnx:fp32]@sign_gru" time="1.5"/>
<testcase classname="suites.test_accuracy" name="test_accuracy[tiny_ladeda-onnx:int8-dynamic]@tiny_ladeda" time="4.0">
  <skipped type="pytest.xfail" message="declared"/></testcase>
<testcase classname="suites.test_zoo" name="test_params[bst]" time="2.0"><failure message="x"/></testcase>
</testsuite></testsuites>"""


@pytest.fixture
def junit(tmp_path: Path) -> Path:
    path = tmp_path / "junit.xml"
    path.write_text(JUNIT)
    return path


def test_cost_table_per_suite_backend_and_model(junit: Path) -> None:
    cases = ci_costs.read_cases(junit)
    assert [c.outcome for c in cases] == ["passed", "passed", "xfail", "failed"]
    assert cases[0].backend == "onnx2tf" and cases[0].model == "sign_gru"
    assert cases[1].backend == "onnx export + ONNX Runtime methods"
    assert cases[3].model is None
    text = ci_costs.render(cases, cases)
    assert "| test_matrix | 2 | 0.53 | 84% | 0.53 |" in text
    assert "| sign_gru | 2 | 0.53 |" in text and "| onnx2tf | 1 | 0.51 |" in text


def test_two_runs_compare_under_their_labels(junit: Path, tmp_path: Path) -> None:
    out = tmp_path / "costs.md"
    assert ci_costs.main([str(junit), "--warm", str(junit), "--labels", "before,after", "-o", str(out)]) == 0
    text = out.read_text()
    assert "| suite | tests | before min | share | after min |" in text
    assert "Before run: 4 tests" in text and "after run: 0.6 test-minutes" in text


def test_durations_file_has_the_node_ids(junit: Path, tmp_path: Path) -> None:
    out = tmp_path / ".test_durations"
    assert ci_costs.main([str(junit), "--store-durations", str(out)]) == 0
    stored = json.loads(out.read_text())
    assert stored["suites/test_matrix.py::test_cell[sign_gru-onnx:fp32]"] == 1.5
    assert stored["suites/test_zoo.py::test_params[bst]"] == 2.0


def test_unreadable_junit_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "junit.xml"
    bad.write_text("<testsuites>")
    assert ci_costs.main([str(bad)]) == 2
    assert "junit.xml: not a readable JUnit XML file" in capsys.readouterr().err


def test_calibration_pick_is_the_smallest_count_inside_the_reference_ci() -> None:
    def row(n: int, drop: float, ci: tuple[float, float] = (0.0, 0.0)) -> dict:
        return {"n": n, "metrics": {"top1": {"method": 0.9, "drop": drop, "ci": list(ci)}}}

    rows = [row(8, 4.0), row(16, 1.9), row(32, 0.2), row(128, 0.5, (-1.0, 2.0))]
    assert calibration_curve.pick(rows) == 16
    assert calibration_curve.pick([row(8, 9.0), row(64, 0.5, (0.0, 1.0))]) == 64


def test_calibration_counts_are_nested_draws() -> None:
    from types import SimpleNamespace

    import numpy as np

    task = SimpleNamespace(train_inputs={"x": np.arange(100)[:, None]})
    small = calibration_curve.calibration_split(task, 8)["x"][:, 0]
    large = calibration_curve.calibration_split(task, 32)["x"][:, 0]
    assert len(small) == 8 and len(large) == 32 and set(small) <= set(large)


@pytest.mark.parametrize(("workers", "cores", "user", "expected"),
                         [(2, 2, None, "1"), (2, 8, None, "4"), (3, 2, None, "1"), (None, 2, None, None),
                          (2, 2, "2", "2")])
def test_parallel_workers_share_the_cores(monkeypatch: pytest.MonkeyPatch, workers: int | None, cores: int,
                                          user: str | None, expected: str | None) -> None:
    from export_harness.plugin.scheduling import share_cores_among_workers

    monkeypatch.setattr("os.cpu_count", lambda: cores)
    if user is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", user)
    config = SimpleNamespace(option=SimpleNamespace(numprocesses=workers))
    set_to = share_cores_among_workers(config)  # type: ignore[arg-type]
    assert os.environ.get("OMP_NUM_THREADS") == expected
    assert set_to == (None if user or workers is None else int(expected))


def test_docs_results_regenerates_the_measured_tables(tmp_path: Path) -> None:
    from export_harness.converters.report import docs_results

    report = tmp_path / "matrix-report.json"
    report.write_text(json.dumps({"cells": [
        {"cell": "m-tflite:fp32[onnx2tf]", "model": "m", "target": "tflite:fp32[onnx2tf]", "outcome": "PASSED",
         "status": "passed", "stage": None, "worst": {"cosine": 0.9999991}},
        {"cell": "m-tflite:int8-full[litert-torch]", "model": "m", "target": "tflite:int8-full[litert-torch]",
         "outcome": "XFAIL", "status": "failed", "stage": "export", "worst": {}}]}))
    assert docs_results.main(["--matrix-report", str(report), "--benchmarks", str(REPO / "baselines" / "benchmarks"),
                              "--out", str(tmp_path / "out")]) == 0
    table = (tmp_path / "out" / "support-table.md").read_text()
    assert "| `m` |" in table and "xfail (export)" in table and "2 cells" in table
    speedup = (tmp_path / "out" / "latency-speedup.md").read_text()
    assert "| model | torch:eager |" in speedup and "_baseline.json" in speedup
