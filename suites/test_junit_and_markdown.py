"""JUnit XML under pytest's default xunit2 family, without warnings, with each cell's verdict and numbers as flat
properties; and the Markdown job summary (issue 14, item 3)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from export_harness.converters.report.markdown_summary import summary_markdown
from export_harness.plugin.junit import flat_properties
from export_harness.plugin.report import cell_id_of

CONFTEST = '''
import numpy as np
from torch import nn

from export_harness.models.spec import InputSpec, ModelSpec, OutputSpec


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(6, 3)

    def forward(self, x):
        return self.body(x)


def pytest_harness_models(config):
    return [ModelSpec(name="junit_tiny", family="user", factory=Tiny,
                      inputs=(InputSpec("x", ("B", 6), "float32", "NC",
                                        lambda rng, b: rng.normal(size=(b, 6)).astype(np.float32)),),
                      outputs=(OutputSpec("y", ("B", 3), kind="logits"),))]
'''


def test_flat_properties_of_a_cell_record() -> None:
    cell = {"cell": "m-onnx:fp32", "model": "m", "status": "failed", "stage": "parity", "cache": "hit",
            "message": "batch 3: y: cosine 0.98 < 0.99\nsecond line", "worst": {"cosine": 0.98, "max_abs": 0.5},
            "artifact": {"key": "abc", "size_bytes": 10, "convert_seconds": 0.1, "opset_produced": 17}}
    props = dict(flat_properties("harness", cell))
    assert props["harness.status"] == "failed" and props["harness.stage"] == "parity"
    assert props["harness.cosine"] == "0.98" and props["harness.artifact.opset_produced"] == "17"
    assert props["harness.message"] == "batch 3: y: cosine 0.98 < 0.99"  # first line only
    assert all(isinstance(v, str) and "{" not in v for v in props.values())


def test_markdown_summary_counts_and_failures() -> None:
    rows = [{"nodeid": "t::test_cell[m-onnx:fp32]", "outcome": "passed", "records": {"harness": {"model": "m"}}},
            {"nodeid": "t::test_cell[m-onnx:fp16]", "outcome": "failed", "longrepr": "[parity] m-onnx:fp16: a|b",
             "records": {"harness": {"model": "m", "stage": "parity"}}},
            {"nodeid": "t::test_cell[m-tflite:fp32]", "outcome": "xfail", "records": {"harness": {"model": "m"}}}]
    text = summary_markdown(rows)
    assert "**1** passed · **1** failed · **1** xfail" in text
    assert "| `t::test_cell[m-onnx:fp16]` | parity | [parity] m-onnx:fp16: a\\|b |" in text
    assert "| `m` | 1 | 1 | 1 | 0 | 0 |" in text


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_junit_xunit2_without_warnings_and_markdown(tmp_path: Path, workers: list[str]) -> None:
    """Serial and under pytest-xdist (the workers pass their records on; only the controller writes)."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "conftest.py").write_text(textwrap.dedent(CONFTEST))
    (project / "test_cells.py").write_text("from export_harness.plugin.items import test_cell  # noqa: F401\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "HARNESS_"))}
    junit, summary = tmp_path / "junit.xml", tmp_path / "summary.md"
    quiet = ["-p", "no:cacheprovider", "-p", "no:randomly", "-p", "no:anyio"]  # anyio's plugin warns on import
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", *quiet, *workers, "-W", "error::pytest.PytestWarning",
                          "--harness-cache", str(tmp_path / "cache"),
                          "-k", "junit_tiny-onnx:fp32] or junit_tiny-torchscript:trace]",
                          f"--junitxml={junit}", f"--harness-markdown={summary}"],
                         cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "PytestWarning" not in run.stdout + run.stderr
    # the session's conversion account, the xdist workers' included (the controller converts nothing itself): a
    # dependency converted for a cell counts too (onnx:fp16 is made from onnx:fp32), which the cells alone never showed
    assert "conversions performed this run: 2 (0 failed); served from cache: 0 artifacts" in run.stdout, run.stdout
    fp16 = subprocess.run([sys.executable, "-m", "pytest", "-q", *quiet, *workers, f"--harness-cache={tmp_path / 'c2'}",
                           "-k", "junit_tiny-onnx:fp16]"], cwd=project, env=env, capture_output=True, text=True,
                          timeout=600)
    assert "conversions performed this run: 2 (0 failed)" in fp16.stdout, fp16.stdout[-2000:]
    root = ET.parse(junit).getroot()
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert set(cases) == {"test_cell[junit_tiny-onnx:fp32]", "test_cell[junit_tiny-torchscript:trace]"}
    props = {p.get("name"): p.get("value") for p in cases["test_cell[junit_tiny-onnx:fp32]"].iter("property")}
    assert props["harness.status"] == "passed" and float(props["harness.cosine"]) > 0.999999
    assert "harness" not in props  # no dict repr
    text = summary.read_text()
    assert text.count("# Export conformance run") == 1, text
    assert "**2** passed" in text and "| `junit_tiny` | 2 |" in text


@pytest.mark.parametrize(("nodeid", "cell_id"), [
    ("suites/test_matrix.py::test_cell[sign_gru-tflite:fp32[onnx-tf]]", "sign_gru-tflite:fp32[onnx-tf]"),
    ("suites/test_matrix.py::test_cell[sign_gru-tflite:fp16[onnx2tf]]@sign_gru", "sign_gru-tflite:fp16[onnx2tf]"),
    ("t.py::test_cell[m-onnx:fp32]", "m-onnx:fp32"),
])
def test_a_skipped_cell_keeps_its_whole_id(nodeid: str, cell_id: str) -> None:
    assert cell_id_of(nodeid) == cell_id


def test_the_conversion_account_counts_each_artifact_once_across_items_and_workers() -> None:
    """An artifact the accuracy items converted is a conversion of this run, not a cache hit of the matrix cell that
    used it later; a worker's hit on what another worker converted is not 'served from cache' either."""
    from export_harness.converters.cache import account_line

    worker_1 = {"converted": ["a", "b"], "hit": ["a", "b"], "failed": [], "rebuilt": ["b"], "replayed": []}
    worker_2 = {"converted": [], "hit": ["a", "c"], "failed": ["d"], "rebuilt": [], "replayed": ["e"]}
    assert account_line([worker_1, worker_2]) == (
        "conversions performed this run: 3 (1 failed, 1 of them rebuilt after damage); served from cache: "
        "1 artifacts, 1 known failures")
    # measurements: one computed by a worker is not also counted as served to the other
    worker_1 |= {"measured": ["m1"], "measurement-hit": []}
    worker_2 |= {"measured": [], "measurement-hit": ["m1", "m2"]}
    assert account_line([worker_1, worker_2]).endswith("; measurements: 1 computed, 1 served")


def test_xdist_workers_die_with_the_pytest_process(tmp_path: Path) -> None:
    """Each xdist worker asks the kernel for SIGKILL when the pytest process dies, so a killed run leaves no worker
    (and through the conversion workers' own death signal, no conversion) running."""
    (tmp_path / "test_signal.py").write_text(textwrap.dedent('''
        import ctypes, signal

        def test_armed():
            value = ctypes.c_int()
            ctypes.CDLL(None).prctl(2, ctypes.byref(value), 0, 0, 0)  # PR_GET_PDEATHSIG
            assert value.value == signal.SIGKILL
    '''))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "HARNESS_"))}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "1",
                          f"--harness-cache={tmp_path / 'cache'}", "test_signal.py"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
