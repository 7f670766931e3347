"""The harness as a user meets it: installed from a wheel into a separate virtual environment, used by a separate
project directory (outside this repository) whose own packages are named ``models`` and ``converters`` (the names
most ML repositories use) and whose ``conftest.py`` registers a model through the documented hook, with its own
accuracy task.

The project runs the matrix, the accuracy gates (recording its own baselines) and smoke latency through its own
one-line test module importing the harness's items, on the harness's packaged defaults; a plain ``pytest`` there
collects only its own items (the bundled zoo is opt-in). An edit elsewhere in its code (not in the model's) must
convert nothing again, while an edit of the model's own code must.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a whole pytest session (or several) per test: CI runs it, tox -e quick does not

REPO = Path(__file__).resolve().parents[1]

MODEL = """
from torch import nn

WIDTH = 24


class TinyClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(12, WIDTH), nn.ReLU(), nn.Linear(WIDTH, 5))

    def forward(self, features):
        return self.body(features)
"""

CONVERTERS = """
def unrelated_helper():
    return "edit me"
"""

CONFTEST = '''
import numpy as np

from converters.helpers import unrelated_helper  # the project's own package of that name
from export_harness.models.proxy_tasks import ProxyTask, top1_metric
from export_harness.models.spec import InputSpec, ModelSpec, OutputSpec
from models.tiny import TinyClassifier  # the project's own package of that name


def _features(rng, batch):
    return rng.normal(size=(batch, 12)).astype(np.float32)


def tiny_task():
    rng = np.random.default_rng(3)
    x = _features(rng, 96)
    labels = (x[:, :5] @ np.arange(1, 6)).astype(np.int64) % 5
    return ProxyTask("user-tiny", "a user's labelled eval set", {"features": x[:32]}, labels[:32],
                     {"features": x[:32]}, {"features": x[32:]}, (top1_metric("scores", labels[32:]),), "user-tiny-v1")


def pytest_harness_models(config):
    assert unrelated_helper()
    return [ModelSpec(name="user_tiny", family="user", factory=TinyClassifier, smoke=True,
                      inputs=(InputSpec("features", ("B", 12), "float32", "NC", _features),),
                      outputs=(OutputSpec("scores", ("B", 5), kind="logits"),),
                      task=tiny_task)]
'''

CELLS = "user_tiny-onnx:fp32] or user_tiny-torchscript:trace]"


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtual environment with the harness installed from its wheel (not editable). The pinned stack (GBs)
    comes from this environment through a path entry, so only the harness itself is installed."""
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=300)
    site = next((root / "lib").glob("python3*/site-packages"))
    (site / "the_pinned_stack.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    python = root / "bin" / "python"
    wheels, source = tmp_path_factory.mktemp("wheel"), tmp_path_factory.mktemp("source") / "harness"
    # built from a copy: setuptools' build/ in the checkout would leave stale modules for the next wheel
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", ".tox", ".harness-cache",
                                                                "__pycache__"))
    build = subprocess.run([str(python), "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(wheels), str(source)], capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    wheel = next(wheels.glob("*.whl"))
    # --ignore-installed: this environment's (editable) install of the same version, seen through the path entry,
    # must not make pip skip the wheel
    install = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--ignore-installed", "-q", str(wheel)],
                             capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    return python


def _pytest(python: Path, project: Path, cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "HARNESS_"))}
    env["PYTHONPATH"] = ""  # the installed harness only, not this checkout
    return subprocess.run([str(python), "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA",
                           f"--harness-cache={cache}", *args],  # a separate value would count as a rootdir path
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
    for package, module, code in (("models", "tiny", MODEL), ("converters", "helpers", CONVERTERS)):
        (root / package).mkdir()
        (root / package / "__init__.py").write_text("")
        (root / package / f"{module}.py").write_text(textwrap.dedent(code))
    (root / "test_export.py").write_text("from export_harness.plugin.items import *  # the harness's test items\n")
    (root / "pyproject.toml").write_text("[tool.pytest.ini_options]\naddopts = \"--strict-markers\"\n")
    return root


def test_installed_plugin_runs_a_users_model_in_every_suite(venv: Path, project: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    where = subprocess.run([str(venv), "-c", "import export_harness.converters as c, models; print(c.__file__)"],
                           cwd=project, capture_output=True, text=True, timeout=300)
    assert where.returncode == 0 and "site-packages" in where.stdout, where.stdout + where.stderr  # not the checkout

    plain = _pytest(venv, project, cache, "--collect-only")
    assert plain.returncode == 0, (plain.stdout + plain.stderr)[-4000:]
    ids = [line for line in plain.stdout.splitlines() if "::" in line]
    others = [i for i in ids if "user_tiny" not in i]
    assert ids and not others, others[:20]

    run = _pytest(venv, project, cache, "-m", "not latency", "-k", CELLS, "--accuracy-update-baselines")
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    for item in ("test_cell[user_tiny-onnx:fp32]", "test_cell[user_tiny-torchscript:trace]",
                 "test_accuracy[user_tiny-onnx:fp32]", "test_accuracy[user_tiny-torchscript:trace]"):
        assert any(line.startswith("PASSED") and item in line for line in out.splitlines()), item
    assert "weights: as built (no training recipe)" in out
    assert (project / "baselines" / "accuracy.json").is_file(), out[-3000:]
    stored = json.loads((project / "baselines" / "accuracy.json").read_text())["cells"]
    assert set(stored) == {"user_tiny-onnx:fp32", "user_tiny-torchscript:trace"}
    assert (cache / ".gitignore").is_file()

    # an edit elsewhere in the project (a helper the conftest imports): nothing is converted again
    converted = _artifacts(cache)
    assert converted, "the first run converted nothing"
    helpers = project / "converters" / "helpers.py"
    helpers.write_text(helpers.read_text().replace('"edit me"', '"edited"'))
    again = _pytest(venv, project, cache, "-m", "not latency", "-k", CELLS)
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    assert _artifacts(cache) == converted
    assert "conversions performed this run: 0 (0 failed)" in again.stdout

    # an edit of the model's own code (a constant its class uses) converts again
    model = project / "models" / "tiny.py"
    model.write_text(model.read_text().replace("WIDTH = 24", "WIDTH = 20"))
    changed = _pytest(venv, project, cache, "-m", "not latency", "-k", "user_tiny-onnx:fp32]")
    assert changed.returncode == 0, (changed.stdout + changed.stderr)[-4000:]
    assert len(_artifacts(cache) - converted) == 1

    latency = _pytest(venv, project, cache, "-m", "latency", "-k", "user_tiny", "--benchmark-disable-gc")
    out = latency.stdout + latency.stderr
    assert latency.returncode == 0, out[-4000:]
    assert any(line.startswith("PASSED") and "test_latency[user_tiny-onnx:fp32-b1]" in line
               for line in out.splitlines()), out[-4000:]
