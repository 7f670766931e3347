"""Harness self-tests through pytest itself (pytester): the matrix must fail loudly, and users extend it.

Each run is a subprocess pytest session over the real ``suites/test_matrix.py`` plus a user directory whose
``conftest.py`` implements the harness hooks, exactly as the README tells users to.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # a whole pytest session (or several) per test: CI runs it, tox -e quick does not

ROOT = Path(__file__).resolve().parent.parent

PERTURBING_CONFTEST = '''
import numpy as np
import onnx
from onnx import numpy_helper

from export_harness.converters.exporters.onnx_export import OnnxExportTarget


class PerturbedOnnx(OnnxExportTarget):
    """The real onnx:fp32 export, then the largest-magnitude weight scaled by 1.01: a converter bug."""

    def __init__(self):
        super().__init__("torchscript", opset=17)
        self.backend = "perturbed"

    def convert(self, spec, model, workdir, deps):
        meta = super().convert(spec, model, workdir, deps)
        proto = onnx.load(str(workdir / meta["main"]))
        weights = [t for t in proto.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and np.prod(t.dims) > 1]
        worst = max(weights, key=lambda t: np.abs(numpy_helper.to_array(t)).max())
        arr = numpy_helper.to_array(worst).copy()
        idx = np.unravel_index(np.abs(arr).argmax(), arr.shape)
        arr[idx] *= 1.01
        worst.CopyFrom(numpy_helper.from_array(arr, worst.name))
        onnx.save(proto, str(workdir / meta["main"]))
        return meta


def pytest_harness_targets(config):
    return [PerturbedOnnx()]
'''

CORE_TARGETS = ("torchscript:trace", "torchscript:script", "onnx:fp32", "onnx:fp32[dynamo]",
                "onnx:fp32[guide-quantizer-int8]")
# the core targets above, whatever else is installed (TFLite backends, the accuracy suite's compression methods)
USER_CELLS = ("user_mlp and not tflite and not savedmodel and not fp16 and not int8-dynamic and not int8-static "
              "and not pruned")

USER_MODEL_CONFTEST = '''
import numpy as np
from torch import nn

from export_harness.models.spec import InputSpec, ModelSpec, OutputSpec


class TinyMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))

    def forward(self, features):
        return self.net(features)


def pytest_harness_models(config):
    return [ModelSpec(
        name="user_mlp", family="user", factory=TinyMLP, reference_params=16 * 32 + 32 + 32 * 4 + 4,
        inputs=(InputSpec("features", ("B", 16), "float32", "NC",
                          lambda rng, b: rng.normal(size=(b, 16)).astype(np.float32)),),
        outputs=(OutputSpec("scores", ("B", 4), kind="logits"),),
    )]
'''


def _run(pytester: pytest.Pytester, conftest: str, *args: str, cells: tuple[str, ...] = ()) -> pytest.RunResult:
    """Run the matrix (or just ``cells``, given as ids) plus a user directory holding ``conftest``."""
    matrix = str(ROOT / "suites" / "test_matrix.py")
    user = pytester.path / "mine"
    user.mkdir(exist_ok=True)
    (user / "conftest.py").write_text(textwrap.dedent(conftest))
    return pytester.runpytest_subprocess(
        f"--rootdir={ROOT}", "-c", str(ROOT / "pyproject.toml"), "-p", "no:cacheprovider",
        "--harness-cache", str(pytester.path / "cache"),
        *([f"{matrix}::test_cell[{c}]" for c in cells] or [matrix]), str(user),
        *args, timeout=600,
    )


def test_perturbed_onnx_weight_fails_the_cell_with_metrics(pytester: pytest.Pytester) -> None:
    result = _run(pytester, PERTURBING_CONFTEST, cells=("tiny_ladeda-onnx:fp32", "tiny_ladeda-onnx:fp32[perturbed]"))
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    failed = [ln for ln in out.splitlines() if ln.startswith("FAILED")]
    assert len(failed) == 1 and "tiny_ladeda-onnx:fp32[perturbed]" in failed[0]
    # the message names the stage, the metrics, the thresholds and the tolerance that would have passed
    for needle in ("[parity] tiny_ladeda-onnx:fp32[perturbed]", "cosine=", "max_abs", "exceeds atol",
                   "atol that would pass", "worst@", "inputs and outputs saved to"):
        assert needle in out, needle
    saved = np.load(pytester.path / "cache" / "failures" / "tiny_ladeda-onnx:fp32[perturbed]" / "batch1.npz")
    assert {"input.input", "expected.logit", "actual.logit"} <= set(saved.files)
    assert not np.array_equal(saved["expected.logit"], saved["actual.logit"])
    # the summary table lists both cells; only the perturbed one failed
    assert "tiny_ladeda-onnx:fp32[perturbed]" in out and "FAILED  parity" in out


def test_user_model_from_conftest_hook_joins_the_matrix(pytester: pytest.Pytester) -> None:
    result = _run(pytester, USER_MODEL_CONFTEST, "-k", USER_CELLS, "-v")
    result.assert_outcomes(passed=len(CORE_TARGETS))
    out = result.stdout.str()
    for target in CORE_TARGETS:
        assert f"test_cell[user_mlp-{target}] PASSED" in out
    rerun = _run(pytester, USER_MODEL_CONFTEST, "-k", USER_CELLS)
    assert "conversions performed this run: 0 (0 failed); served from cache: 5 artifacts" in rerun.stdout.str()


def test_bad_weights_option_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "", "--harness-weights", "tiny_ladeda=/nonexistent/w.pt", "-k", "tiny_ladeda")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--harness-weights tiny_ladeda: file '/nonexistent/w.pt' does not exist" in result.stderr.str()


def test_parallel_workers_share_the_cache_and_report_every_cell(pytester: pytest.Pytester) -> None:
    """Under ``-n 2`` cell metrics cross process boundaries and both workers publish into one cache."""
    result = _run(pytester, USER_MODEL_CONFTEST, "-k", USER_CELLS, "-n", "2")
    result.assert_outcomes(passed=len(CORE_TARGETS))
    out = result.stdout.str()
    assert "cells: 5 (5 passed); conversions performed this run: 5 (0 failed)" in out
    assert len(list((pytester.path / "cache").glob("??/*/meta.json"))) == len(CORE_TARGETS)
