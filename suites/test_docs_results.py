"""The generated pages under ``docs/results/``: each renderer on small fabricated inputs, and no hand-copied table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from export_harness.converters.checks.accuracy import Budgets
from export_harness.converters.expectations import Expectations
from export_harness.converters.report import (
    accuracy_results,
    conversion_times,
    docs_results,
    latency_selftest,
    out_of_process,
)

REPO = Path(__file__).resolve().parents[1]


def _metric(fp32: float, method: float, ci: tuple[float, float], n: int = 150) -> dict[str, object]:
    return {"fp32": fp32, "method": method, "drop": round((fp32 - method) * 100, 4), "ci": list(ci), "n": n}


ACCURACY = {"_comment": "fabricated", "cells": {
    "m-onnx:fp32": {"task": "t", "artifact_sha256": "a", "metrics": {"top1": _metric(0.9, 0.9, (0.0, 0.0)),
                                                                     "aux": _metric(0.5, 0.5, (0.0, 0.0), 40)}},
    "m-onnx:int8-dynamic": {"task": "t", "artifact_sha256": "b", "metrics": {
        "top1": _metric(0.9, 0.885, (0.5, 2.5)), "aux": _metric(0.5, 0.5, (0.0, 0.0), 40)}},
    "m-tflite:fp16[litert-torch]": {"task": "t", "artifact_sha256": "c", "metrics": {
        "top1": _metric(0.9, 0.9, (0.0, 0.0)), "aux": _metric(0.5, 0.5, (0.0, 0.0), 40)}},
    "m-tflite:int8-full[litert-torch]": {"task": "t", "artifact_sha256": "d", "metrics": {
        "top1": _metric(0.9, 0.8, (6.0, 14.0)), "aux": _metric(0.5, 0.5, (0.0, 0.0), 40)}},
    "k-onnx:int8-dynamic": {"task": "u", "artifact_sha256": "e", "metrics": {"auc": _metric(0.99, 0.98, (0.1, 2.0))}},
    "m-tflite:fp16[onnx2tf]@guide-int8-opset13": {"task": "t", "artifact_sha256": "f", "metrics": {
        "top1": _metric(0.9, 0.9, (0.0, 0.0))}},
}}

EXPECTATIONS = """
[[expect]]
cells = ["m-tflite:int8-full[litert-torch]#accuracy"]
xfail = "full-integer int8 (static_wi8_ai8) loses top-1: 90.00 -> 80.00; localised to the last layer"
match = "top1 drop"

[[expect]]
cells = ["k-tflite:*[litert-torch]#accuracy"]
xfail = "the converter cannot legalize k's mask | comparison (tfl.equal)"

[[expect]]
cells = ["k-onnx:int8-dynamic#accuracy"]
xfail = "kernels without VNNI saturate"
cpu_lacks = ["avx512_vnni"]
"""

BUDGETS = """
[models.m."onnx:int8-dynamic"]
metric = "top1"
threshold = 2.0
reason = "measured 1.5 pp"
"""


@pytest.fixture
def accuracy_inputs(tmp_path: Path) -> tuple[Path, Path, Path]:
    baseline, budgets = tmp_path / "accuracy.json", tmp_path / "accuracy_budgets.toml"
    expectations = tmp_path / "expectations.toml"
    baseline.write_text(json.dumps(ACCURACY))
    budgets.write_text(BUDGETS)
    expectations.write_text(EXPECTATIONS)
    return baseline, budgets, expectations


def _row(page: str, *starts: str) -> str:
    return next(line for line in page.splitlines() if line.startswith("| " + " | ".join(starts)))


def test_accuracy_page_models_cells_budgets_and_declarations(accuracy_inputs: tuple[Path, Path, Path],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # the CPU has the flag, so the declaration does not hold here: the page must not depend on the CPU
    monkeypatch.setattr("export_harness.converters.expectations.cpu_flags", lambda: frozenset({"avx512_vnni"}))
    baseline, budgets_file, expectations_file = accuracy_inputs
    budgets, expectations = Budgets.load(budgets_file), Expectations.load(expectations_file)
    assert expectations.for_cell("k-onnx:int8-dynamic", "accuracy") is None
    page = accuracy_results.accuracy_page(baseline, budgets, expectations)
    assert "fit s" not in page  # no --cache
    assert _row(page, "`m`", "top1").endswith("| 90.00 | 150 |")
    assert _row(page, "`m`", "aux").endswith("| 50.00 | 40 |")
    assert _row(page, "`m-onnx:int8-dynamic`", "top1") == \
        "| `m-onnx:int8-dynamic` | top1 | 90.00 | 88.50 | +1.50 | +0.50..+2.50 | 2 (override) |  |"
    assert _row(page, "`m-onnx:int8-dynamic`", "aux").endswith("| 1 |  |")  # the override is for top1 only
    assert _row(page, "`k-onnx:int8-dynamic`").endswith(
        "| strict xfail (CPUs without avx512_vnni): kernels without VNNI saturate |")
    assert "strict xfail: full-integer int8 loses top-1: 90.00 -> 80.00 |" in _row(
        page, "`m-tflite:int8-full[litert-torch]`", "top1")
    # declared cells with no stored metric (k's TFLite cells fail at export), grouped by declaration
    assert "`k-tflite:fp16[litert-torch]`, `k-tflite:int8-full[litert-torch]`" in page
    assert "cannot legalize k's mask \\| comparison" in page  # | escaped inside the Markdown table / list
    pivot = page[page.index("## TFLite methods"):]
    assert "| `m-tflite:fp16[onnx2tf]@guide-int8-opset13` | top1 |" in page  # variant copies: cell table only
    assert "@guide" not in _row(pivot, "model")
    assert "| model | primary metric | `tflite:fp16[litert-torch]` | `tflite:int8-full[litert-torch]` |" in pivot
    assert _row(pivot, "`m`") == ("| `m` | top1 | +0.00 | +10.00; declared: full-integer int8 loses top-1: "
                                  "90.00 -> 80.00 |")
    assert _row(pivot, "`k`").startswith("| `k` | auc | declared: the converter cannot legalize")


def test_accuracy_fit_seconds_from_the_cache_skip_what_is_absent(accuracy_inputs: tuple[Path, Path, Path],
                                                                tmp_path: Path) -> None:
    weights = tmp_path / "cache" / "weights"
    weights.mkdir(parents=True)
    (weights / "m-1.json").write_text(json.dumps({"model": "m", "recipe": "full", "train_seconds": 4.25,
                                                  "chance": {"top1": 0.1}}))
    (weights / "k-1.json").write_text(json.dumps({"model": "k", "recipe": "heads:fc"}))  # no train_seconds
    (weights / "broken.json").write_text("{")
    baseline, budgets, expectations = accuracy_inputs
    declared = Expectations.load(expectations)
    page = accuracy_results.accuracy_page(baseline, Budgets.load(budgets), declared, tmp_path / "cache")
    assert "| model | metric | FP32 % (eval) | n | chance % | recipe | fit s | trained (UTC) |" in page
    assert "| 10.00 | `full` | 4.25 |" in _row(page, "`m`", "top1")
    assert "| - | `heads:fc` | - |" in _row(page, "`k`", "auc")
    empty = accuracy_results.accuracy_page(baseline, Budgets.load(budgets), declared, tmp_path / "no-cache")
    assert _row(empty, "`m`", "top1").endswith("| - | - | - | - |")


def test_split_cell_and_short_reason() -> None:
    assert accuracy_results.split_cell("my-model-onnx:int8-static[minmax-per-tensor]") == \
        ("my-model", "onnx:int8-static[minmax-per-tensor]")
    assert accuracy_results.short_reason("a (b (c)) d; e") == "a d"
    assert accuracy_results.short_reason("word " * 40, limit=20).endswith(" ...")


REPORT_CELLS = [
    {"model": "m", "target": "tf:savedmodel[onnx2tf]", "artifact": {"convert_seconds": 20.0}},
    {"model": "m", "target": "tflite:fp16[onnx2tf]", "artifact": {"convert_seconds": 0.0}},
    {"model": "m", "target": "tflite:fp32[litert-torch]", "artifact": {"convert_seconds": 3.0}},
    {"model": "m", "target": "tflite:fp16[litert-torch]", "artifact": {"convert_seconds": 0.05}},
    {"model": "m", "target": "tflite:int8-dynamic[litert-torch]", "artifact": {"convert_seconds": None}},
    {"model": "m", "target": "tflite:int8-full[litert-torch]", "artifact": {"convert_seconds": 7.0}},
    {"model": "m", "target": "tf:savedmodel[onnx2tf]@opset17", "artifact": {"convert_seconds": 999.0}},
    {"model": "m", "target": "tflite:fp32[litert-torch]@opset17", "artifact": {"convert_seconds": 999.0}},
    {"model": "n", "target": "tf:savedmodel[onnx2tf]", "artifact": {"convert_seconds": 30.0}},
    {"model": "n", "target": "tf:savedmodel[onnx-tf]", "artifact": {"convert_seconds": 12.0}},
    {"model": "n", "target": "tflite:fp32[litert-torch]", "artifact": {"convert_seconds": 1.0}},
    {"model": "dead", "target": "tf:savedmodel[onnx2tf]", "artifact": {"convert_seconds": None}},
    {"model": "dead", "target": "tflite:fp32[litert-torch]", "artifact": None},
]


def test_conversion_times_per_backend_with_median_and_no_opset_axis(tmp_path: Path) -> None:
    report = tmp_path / "matrix-report.json"
    report.write_text(json.dumps({"cells": REPORT_CELLS}))
    page = conversion_times.conversion_times_page(report)
    assert "999" not in page
    assert "| `m` | 20.0 | 3.0 + 0.05 + - + 7.0 = 10.1 | - |" in page
    assert "| `n` | 30.0 | 1.0 + - + - + - = 1.0 | 12.0 |" in page
    assert "| **median** | **25.0** | **5.5** (fp32 alone 2.0) | **12.0** |" in page
    assert "No TF/TFLite conversion recorded for: `dead`." in page and "| `dead` |" not in page


def test_out_of_process_rows_are_merged_and_rendered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(out_of_process.ENV, raising=False)
    assert out_of_process.results_dir(None) is None
    monkeypatch.setenv(out_of_process.ENV, str(tmp_path / "env"))
    assert out_of_process.results_dir(None) == tmp_path / "env"
    assert out_of_process.results_dir(str(tmp_path / "run" / "latency-report.json")) == tmp_path / "run"
    row = {"cell": "m-tflite:fp32[litert-torch]", "harness_worker_cpu_ms": 5.0, "direct_cpu_ms": 4.0,
           "one_exchange_per_call_ms": 6.0, "parent_thread_cpu_ms": 1.25, "pairs": [[6.5, 4.0], [5.0, 4.0]],
           "calls": 40, "machine": "box",
           "measured": "2026-12-01"}
    path = out_of_process.record_row(tmp_path / "run", row)
    out_of_process.record_row(tmp_path / "run", {**row, "cell": "m-tf:savedmodel[onnx2tf]", "pairs": [[5.0, 5.0]]})
    out_of_process.record_row(tmp_path / "run", {**row, "harness_worker_cpu_ms": 4.4})  # same cell: replaced
    assert path.name == "out-of-process-timing.json" and len(json.loads(path.read_text())["rows"]) == 2
    page = out_of_process.out_of_process_page(path)
    assert ("| `m-tflite:fp32[litert-torch]` | 4.40 ms | 4.00 ms | 1.10 | 6.00 ms | 1.25 ms | 2 | box | 2026-12-01 |"
            in page)
    assert "| `m-tf:savedmodel[onnx2tf]` | 5.00 ms | 4.00 ms | 1.25 | 6.00 ms | 1.25 ms | 1 |" in page
    assert "median of 40 calls" in page


FAST = {"title": "fast", "seconds": 46.0, "contention_median": 1.02, "loadavg_1min": "1.6",
        "aa": {"trials": 10, "false_alarms": 0}, "injected": {"trials": 10, "caught": 9,
                                                              "slowdown_range": [0.198, 0.246]}}
E2E = {"title": "end-to-end", "aa": {"trials": 10, "false_alarms": 1}, "injected": {"trials": 10, "caught": 10}}


def _junit(path: Path, cases: str) -> Path:
    path.write_text(f'<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">{cases}'
                    "</testsuite></testsuites>")
    return path


def _case(name: str, props: dict[str, object] | None = None, body: str = "", literal: bool = False) -> str:
    from xml.sax.saxutils import quoteattr

    prop = ""
    if props is not None:
        value = repr(props) if literal else json.dumps(props)
        prop = f'<properties><property name="latency_selftest" value={quoteattr(value)} /></properties>'
    return f'<testcase classname="suites.test_latency_gate_selftest" name="{name}" time="47.2">{prop}{body}</testcase>'


def test_latency_selftest_rates_from_junit_properties(tmp_path: Path) -> None:
    junit = _junit(tmp_path / "junit.xml", _case("test_latency_gate_aa_and_injected_fast", FAST)
                   + _case("test_latency_gate_aa_and_injected_smoke_models", body='<skipped message="heavy" />')
                   + _case("test_latency_gate_end_to_end_through_pytest", E2E, '<failure message="x" />', True))
    page = latency_selftest.latency_selftest_page(junit)
    assert ("| fast (gcode_decoder_step-onnx:fp32) | every `tox` run | passed | 47 | 0 / 10 | 9 / 10 | "
            "+19.8%..+24.6% | x1.02 | 1.6 |") in page
    assert "| `tox -e bench` | skipped | 47 | not recorded in this junit |" in page
    assert "| failed | 47 | 1 / 10 | 10 / 10 | - | - | - |" in page  # a Python-literal value parses too


def test_latency_selftest_page_from_a_junit_without_them(tmp_path: Path) -> None:
    junit = _junit(tmp_path / "junit.xml", '<testcase classname="suites.test_zoo" name="test_x" time="0.1" />')
    page = latency_selftest.latency_selftest_page(junit)
    assert page.count("| not in this junit | - | not recorded in this junit |") == 3


def test_docs_results_writes_every_page_from_its_input(accuracy_inputs: tuple[Path, Path, Path], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    baseline, budgets, expectations = accuracy_inputs
    report = tmp_path / "matrix-report.json"
    report.write_text(json.dumps({"cells": [{**c, "cell": f"{c['model']}-{c['target']}", "outcome": "PASSED",
                                             "status": "passed", "stage": None, "worst": {}} for c in REPORT_CELLS]}))
    rows = out_of_process.record_row(tmp_path / "run", {"cell": "m-tf:savedmodel[onnx2tf]", "pairs": []})
    junit = _junit(tmp_path / "junit.xml", _case("test_latency_gate_aa_and_injected_fast", FAST))
    out = tmp_path / "out"
    assert docs_results.main(["--matrix-report", str(report), "--benchmarks", str(tmp_path / "none"),
                              "--accuracy-baseline", str(baseline), "--accuracy-budgets", str(budgets),
                              "--expectations", str(expectations),
                              "--out-of-process", str(rows), "--junit", str(junit), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "accuracy-results.md", "conversion-times.md", "latency-selftest.md", "out-of-process-timing.md",
        "support-table.md"]
    assert docs_results.main(["--benchmarks", str(tmp_path / "none"), "--accuracy-baseline",
                              str(tmp_path / "missing.json"), "--out-of-process", str(tmp_path / "missing.json"),
                              "--out", str(tmp_path / "out2")]) == 0
    assert not (tmp_path / "out2").exists()
    assert "not there" in capsys.readouterr().err


def test_no_hand_copied_measurement_left_in_docs() -> None:
    marked = [str(p.relative_to(REPO)) for p in (REPO / "docs").rglob("*") if p.is_file()
              and "hand-copied measurement" in p.read_text(errors="replace")]
    assert not marked, ("hand-copied measurement tables left (generate them: "
                        f"export_harness.converters.report.docs_results): {marked}")
