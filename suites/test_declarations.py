"""The expectations file: one declaration type for expected failures and skips, CPU conditions, validation, and the
rule that nothing declares a cell anywhere else."""

from __future__ import annotations

import ast
import dataclasses
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from export_harness.converters.expectations import (
    Expectation,
    ExpectationError,
    Expectations,
    known_cells,
)
from export_harness.converters.registry import default_target_registry
from export_harness.converters.util.cpu import cpu_flags
from export_harness.models.registry import default_registry
from export_harness.models.spec import ModelSpec

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def flags(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """Set this process's CPU flags for one test (``$HARNESS_CPU_FLAGS``), restoring the cache afterwards."""

    def use(value: str) -> None:
        monkeypatch.setenv("HARNESS_CPU_FLAGS", value)
        cpu_flags.cache_clear()

    yield use
    monkeypatch.undo()
    cpu_flags.cache_clear()


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "expectations.toml"
    path.write_text(text)
    return path


def test_cpu_conditional_declaration_applies_only_where_its_condition_holds(flags) -> None:
    lacks = Expectation("m-onnx:int8-dynamic", "u8s8 saturation", cpu_lacks=("avx512_vnni", "avx_vnni"))
    has = Expectation("m-onnx:int8-static[percentile]", "trained on VNNI", suite="accuracy", cpu_has=("avx_vnni",))
    declared = Expectations([lacks, has])
    flags("fma avx2")
    assert declared.for_cell("m-onnx:int8-dynamic") is lacks
    assert declared.for_cell("m-onnx:int8-static[percentile]", "accuracy") is None
    flags("avx2 avx512f avx512_vnni")
    assert declared.for_cell("m-onnx:int8-dynamic") is None, "on a VNNI CPU the cell must pass"
    flags("avx2 avx_vnni")
    assert declared.for_cell("m-onnx:int8-dynamic") is None
    assert declared.for_cell("m-onnx:int8-static[percentile]", "accuracy") is has
    assert declared.declared_anywhere("m-onnx:int8-dynamic") is lacks  # pages do not depend on the CPU


def test_cpu_flags_are_read_from_proc_cpuinfo(flags, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HARNESS_CPU_FLAGS", raising=False)
    cpu_flags.cache_clear()
    found = cpu_flags()
    with open("/proc/cpuinfo") as fh:
        line = next(ln for ln in fh if ln.startswith("flags"))
    assert found == frozenset(line.split(":", 1)[1].split())


def test_patterns_suites_and_precedence(tmp_path: Path, flags) -> None:
    flags("avx2")
    declared = Expectations.load(_file(tmp_path, """
[[expect]]
cells = ["bst*-tflite:*[onnx2tf]", "m-onnx:fp16#accuracy"]
xfail = "onnx2tf cannot rebuild BST"
match = "Functional model"

[[expect]]
cells = ["bst_0-tflite:*", "m-*#lengths"]
skip = "second"

[[expect]]
cells = ["m-onnx:fp16"]
xfail = "not strict"
strict = false
cpu_lacks = "avx512_vnni"
"""))
    first = declared.for_cell("bst_0-tflite:int8-full[onnx2tf]")
    assert first.reason == "onnx2tf cannot rebuild BST" and first.explains("... a Functional model ...")
    assert not first.explains("another failure")
    assert declared.for_cell("bst_0-tflite:int8-full[litert-torch]").kind == "skip"  # [ ] are literal
    assert declared.for_cell("m-onnx:fp16").strict is False
    assert declared.for_cell("m-onnx:fp16", "accuracy").reason == "onnx2tf cannot rebuild BST"
    assert declared.for_cell("m-onnx:fp16", "lengths").reason == "second"
    assert declared.for_cell("m-onnx:fp16x") is None and declared.for_cell("bst_0-onnx:fp16", "accuracy") is None
    # the packaged declarations come after the project's
    assert declared.for_cell("m-tflite:fp16[onnx-tf]", "accuracy").kind == "skip"
    assert "[onnx-tf]" in declared.entries[-1].pattern


@pytest.mark.parametrize(("text", "message"), [
    ('[[expect]]\ncells = ["m-onnx:fp16"]\n', "exactly one of 'xfail"),
    ('[[expect]]\ncells = ["m-onnx:fp16"]\nxfail = "a"\nskip = "b"\n', "exactly one of 'xfail"),
    ('[[expect]]\ncells = ["m-onnx:fp16"]\nxfail = "  "\n', "'xfail' must be a written reason"),
    ('[[expect]]\ncells = ["m-onnx:fp16"]\nxfail = "a"\nmatch = "("\n', "'match' is not a regular expression"),
    ('[[expect]]\ncells = ["m-onnx:fp16"]\nskip = "a"\nmatch = "x"\n', "only an xfail has one"),
    ('[[expect]]\ncells = ["m-onnx:fp16#latency"]\nxfail = "a"\n', "unknown suite '#latency'"),
    ('[[expect]]\ncells = "m-onnx:fp16"\nxfail = "a"\nreason = "typo"\n', "unknown keys \\['reason'\\]"),
    ('[[expect]]\ncells = [1]\nxfail = "a"\n', "cells: expected a list of non-empty strings"),
    ('[[expect]]\nxfail = "a"\n', "needs 'cells'"),
    ('[[expect]]\ncells = ["onnx:fp16"]\nxfail = "a"\n', "is not a MODEL-TARGET pattern"),
    ('[cells."m-onnx:fp16"]\nxfail = "a"\n', "unknown sections \\['cells'\\]"),
    ('expect = 3\n', "must be an array of tables"),
    ('[[expect]\n', "not valid TOML"),
])
def test_a_malformed_file_is_one_line_naming_the_file_and_the_entry(tmp_path: Path, text: str, message: str) -> None:
    path = _file(tmp_path, text)
    with pytest.raises(ExpectationError, match=message) as error:
        Expectations.load(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_a_declaration_naming_no_cell_is_an_error_when_the_session_starts(tmp_path: Path) -> None:
    models, targets = default_registry(include_entry_points=False, zoo="tiny_ladeda"), default_target_registry()
    typo = Expectations.load(_file(tmp_path, '[[expect]]\ncells = ["tiny_ladeda-onnx:fp61"]\nxfail = "a"\n'))
    with pytest.raises(ExpectationError, match=r"\[\[expect\]\] #1: 'tiny_ladeda-onnx:fp61' matches no registered"):
        typo.check_names(known_cells(models, targets, "tiny_ladeda"))
    # a run that selects part of the zoo keeps the other zoo models' declarations valid
    other = Expectations.load(_file(tmp_path, '[[expect]]\ncells = ["bst*-onnx:fp16#accuracy"]\nxfail = "a"\n'))
    other.check_names(known_cells(models, targets, "tiny_ladeda"))
    with pytest.raises(ExpectationError, match="matches no registered"):
        other.check_names(known_cells(models, targets, ""))


def test_the_repositorys_file_names_only_registered_cells() -> None:
    declared = Expectations.load(REPO / "baselines" / "expectations.toml")
    declared.check_names(known_cells(default_registry(include_entry_points=False), default_target_registry()))
    assert declared.for_cell("bst_0-torchscript:script").match == "Lambda aren't supported"


def _python_files() -> Iterator[Path]:
    for folder in ("converters", "models", "suites/plugin"):
        yield from (REPO / folder).rglob("*.py")
    yield REPO / "conftest.py"


def test_no_declaration_lives_anywhere_else() -> None:
    """One place per fact: ModelSpec carries no declarations, no settings file but an expectations file declares an
    xfail or a skip, and no module of the package builds an Expectation except the loader."""
    assert not {f.name for f in dataclasses.fields(ModelSpec)} & {"limitations", "xfails", "skips"}
    for toml in [*REPO.glob("baselines/*.toml"), *REPO.glob("converters/defaults/*.toml")]:
        if toml.name == "expectations.toml":
            continue
        data = tomllib.loads(toml.read_text())
        assert "cells" not in data or not any("xfail" in v or "skip" in v for v in data["cells"].values()), toml
        assert "unmeasured_targets" not in data.get("settings", {}), toml
    for path in _python_files():
        if path.name == "expectations.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", getattr(node.func, "attr", ""))
                assert name not in ("Expectation", "Limitation"), f"{path}:{node.lineno} declares a cell"
