"""A project's configuration files are layered over the defaults shipped in the package (converters/defaults/)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from export_harness.converters.checks.accuracy import BudgetError, Budgets
from export_harness.converters.checks.thresholds import ThresholdError, Thresholds
from export_harness.converters.defaults import deep_merge, default_path
from export_harness.converters.latency import gate as latency_gate

REPO = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_ship_in_the_package_and_load_alone() -> None:
    for name in ("thresholds.toml", "accuracy_budgets.toml", "latency.toml"):
        assert default_path(name).is_file(), name
    th = Thresholds.load(None)
    assert th.tier("fp32").cosine_min >= 0.99999 and not th.cells and not th.models
    budgets = Budgets.load(None)
    assert budgets.covers("onnx:int8-dynamic")
    assert "gate" in latency_gate.load_toml(None)


def test_project_thresholds_add_overrides_and_keep_the_default_tiers(tmp_path: Path) -> None:
    project = _write(tmp_path, "thresholds.toml", '[cells."mine-onnx:fp16"]\natol = 0.02\nreason = "measured 0.015"\n'
                                                  "[tiers.fp32]\natol = 1e-5\n")
    th = Thresholds.load(project)
    assert th.resolve("mine", "onnx:fp16", "fp16").atol == 0.02
    assert th.tier("fp32").atol == 1e-5 and th.tier("fp32").cosine_min == Thresholds.load(None).tier("fp32").cosine_min
    assert str(project) in th.source


def test_this_repository_keeps_only_the_zoos_overrides() -> None:
    own = REPO / "baselines" / "thresholds.toml"
    assert not {"tiers", "floors"} & set(tomllib.loads(own.read_text()))
    assert "alphazero_chess-onnx:int8-dynamic" in Thresholds.load(own).cells
    assert not {"cells"} & set(tomllib.loads((REPO / "baselines" / "accuracy_budgets.toml").read_text()))


def test_a_project_may_tighten_the_guides_floors_never_loosen_them(tmp_path: Path) -> None:
    assert Thresholds.load(_write(tmp_path, "tight.toml", "[floors]\nfp32 = { cosine_min = 0.995 }\n"))
    loose = _write(tmp_path, "loose.toml", "[floors]\nfp32 = { cosine_min = 0.5 }\n")
    with pytest.raises(ThresholdError, match=r"loose\.toml: \[floors\] fp32\.cosine_min = 0\.5 loosens"):
        Thresholds.load(loose)


@pytest.mark.parametrize(("loader", "error"), [(Thresholds.load, ThresholdError), (Budgets.load, BudgetError)])
def test_a_named_project_file_that_is_missing_or_broken_is_an_error_naming_it(tmp_path: Path, loader, error) -> None:
    with pytest.raises(error, match=r"nope\.toml: file does not exist"):
        loader(tmp_path / "nope.toml")
    with pytest.raises(error, match=r"bad\.toml: not valid TOML"):
        loader(_write(tmp_path, "bad.toml", "[tiers\n"))


def test_latency_settings_layer_key_by_key(tmp_path: Path) -> None:
    data = latency_gate.load_toml(_write(tmp_path, "latency.toml", "[gate]\nmin_effect = 0.3\n"))
    default = latency_gate.load_toml(None)
    assert data["gate"]["min_effect"] == 0.3
    assert data["gate"]["alpha"] == default["gate"]["alpha"] and data["bench"] == default["bench"]


def test_deep_merge_merges_tables_and_replaces_everything_else() -> None:
    assert deep_merge({"a": {"x": 1, "y": [1]}, "b": 2}, {"a": {"y": [2]}, "c": 3}) == \
        {"a": {"x": 1, "y": [2]}, "b": 2, "c": 3}


def test_the_repository_is_self_contained() -> None:
    """No tracked file points outside the repository (the reference folder beside a developer's checkout) or at one
    machine's absolute paths: a user's clone has neither."""
    import re
    import subprocess

    root = Path(__file__).resolve().parents[1]
    files = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True).stdout.split()
    outside = re.compile(r"\.\./" + "shared" + r"|(?<![\w.~$}])/(?:root|work|home|Users)/")
    hits = []
    for name in files:
        path = root / name
        if path.suffix in {".png", ".npz", ".onnx", ".tflite", ".pt"} or not path.is_file():
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if outside.search(line):
                hits.append(f"{name}:{number}: {line.strip()[:120]}")
    assert not hits, "\n".join(hits[:20])


def test_the_installed_package_list_covers_every_package_folder() -> None:
    """pyproject's explicit ``packages`` list: a folder left out installs without it (converters/divergence was, and a
    wheel's ``export-harness`` could not import its ``diverge`` verb)."""
    root = Path(__file__).resolve().parent.parent
    setup = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setup["packages"])
    for package, folder in setup["package-dir"].items():
        for init in (root / folder).rglob("__init__.py"):
            if "__pycache__" not in init.parts:
                name = ".".join([package, *init.parent.relative_to(root / folder).parts])
                assert name in listed, f"{name} ({init.parent}) is missing from [tool.setuptools] packages"
