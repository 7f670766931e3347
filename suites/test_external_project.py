"""The harness as a user meets it: an installed pytest plugin in a separate project directory (outside this
repository) whose own ``conftest.py`` registers a model through the documented hook, with its own accuracy task.

The project runs the matrix, the accuracy gates (recording its own baselines) and smoke latency through its own
one-line test module importing the harness's items, on the harness's packaged defaults; then an edit elsewhere in its
``conftest.py`` (not in the model's code) must convert nothing again, while an edit of the model's own code must.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a whole pytest session (or several) per test: CI runs it, tox -e quick does not

REPO = Path(__file__).resolve().parents[1]

CONFTEST = '''
import numpy as np
from torch import nn

from export_harness.models.proxy_tasks import ProxyTask, top1_metric
from export_harness.models.spec import InputSpec, ModelSpec, OutputSpec

WIDTH = 24


class TinyClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(12, WIDTH), nn.ReLU(), nn.Linear(WIDTH, 5))

    def forward(self, features):
        return self.body(features)


def unrelated_helper():
    return "edit me"


def _features(rng, batch):
    return rng.normal(size=(batch, 12)).astype(np.float32)


def tiny_task():
    rng = np.random.default_rng(3)
    x = _features(rng, 96)
    labels = (x[:, :5] @ np.arange(1, 6)).astype(np.int64) % 5
    return ProxyTask("user-tiny", "a user's labelled eval set", {"features": x[:32]}, labels[:32],
                     {"features": x[:32]}, {"features": x[32:]}, (top1_metric("scores", labels[32:]),), "user-tiny-v1")


def pytest_harness_models(config):
    return [ModelSpec(name="user_tiny", family="user", factory=TinyClassifier, smoke=True,
                      inputs=(InputSpec("features", ("B", 12), "float32", "NC", _features),),
                      outputs=(OutputSpec("scores", ("B", 5), kind="logits"),),
                      extra={"accuracy_task": tiny_task})]
'''

CELLS = "user_tiny-onnx:fp32] or user_tiny-torchscript:trace]"


def _pytest(project: Path, cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "HARNESS_"))}
    env["PYTHONPATH"] = ""  # the installed harness only, not this checkout's root on the path
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA",
                           "--harness-cache", str(cache), *args],
                          cwd=project, env=env, capture_output=True, text=True, timeout=900)


def _artifacts(cache: Path) -> set[str]:
    """Keys of the converted artifacts in the cache."""
    return {meta.parent.name for meta in cache.glob("*/*/meta.json")}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "their-repo"
    root.mkdir()
    assert REPO not in root.parents
    (root / "conftest.py").write_text(textwrap.dedent(CONFTEST))
    (root / "test_export.py").write_text("from export_harness.plugin.items import *  # the harness's test items\n")
    (root / "pyproject.toml").write_text("[tool.pytest.ini_options]\naddopts = \"--strict-markers\"\n")
    return root


def test_installed_plugin_runs_a_users_model_in_every_suite(project: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    run = _pytest(project, cache, "-m", "not latency", "-k", CELLS, "--accuracy-update-baselines")
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    for item in ("test_cell[user_tiny-onnx:fp32]", "test_cell[user_tiny-torchscript:trace]",
                 "test_accuracy[user_tiny-onnx:fp32]", "test_accuracy[user_tiny-torchscript:trace]"):
        assert f"PASSED {Path('..')}" in out or item in out, item
        assert any(line.startswith("PASSED") and item in line for line in out.splitlines()), item
    assert "weights: as built (no training recipe)" in out
    stored = json.loads((project / "baselines" / "accuracy.json").read_text())["cells"]
    assert set(stored) == {"user_tiny-onnx:fp32", "user_tiny-torchscript:trace"}

    # an edit elsewhere in the conftest: the model's code hash is unchanged, nothing is converted again
    converted = _artifacts(cache)
    assert converted, "the first run converted nothing"
    conftest = project / "conftest.py"
    conftest.write_text(conftest.read_text().replace('"edit me"', '"edited"'))
    again = _pytest(project, cache, "-m", "not latency", "-k", CELLS)
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    assert _artifacts(cache) == converted
    assert "conversions performed this run: 0 (0 failed)" in again.stdout

    # an edit of the model's own code (a constant its class uses) converts again
    conftest.write_text(conftest.read_text().replace("WIDTH = 24", "WIDTH = 20"))
    changed = _pytest(project, cache, "-m", "not latency", "-k", "user_tiny-onnx:fp32]")
    assert changed.returncode == 0, (changed.stdout + changed.stderr)[-4000:]
    assert len(_artifacts(cache) - converted) == 1

    latency = _pytest(project, cache, "-m", "latency", "-k", "user_tiny", "--benchmark-disable-gc")
    out = latency.stdout + latency.stderr
    assert latency.returncode == 0, out[-4000:]
    assert any(line.startswith("PASSED") and "test_latency[user_tiny-onnx:fp32-b1]" in line
               for line in out.splitlines()), out[-4000:]
