"""Every registered variant: reference parameter count, forward at batch 1 and 3, realistic seeded inputs; the zoo
declares its tasks and recipes through the public spec fields (docs/extending.md's worked example runs here)."""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from export_harness.models import proxy_tasks, training
from export_harness.models.registry import BUILTIN_FAMILIES, builtin_specs
from export_harness.models.spec import InputSpec, ModelSpec, OutputSpec, count_parameters, run_torch

REPO = Path(__file__).resolve().parents[1]

EXPECTED_VARIANTS = {
    "bst_0", "bst", "bst_cg", "bst_ap", "bst_cg_ap", "tiny_ladeda", "tiny_ladeda_patch", "sign_transformer",
    "sign_gru", "alphazero_chess", "gcode_fingerprint", "gcode_decoder_step",
}


def test_zoo_is_complete() -> None:
    names = [s.name for s in builtin_specs()]
    assert len(names) == len(set(names)), "duplicate variant names"
    assert set(names) == EXPECTED_VARIANTS


def test_one_smoke_variant_per_family() -> None:
    specs = builtin_specs()
    families = {s.family for s in specs}
    assert len(families) == len(BUILTIN_FAMILIES)
    for family in families:
        smoke = [s.name for s in specs if s.family == family and s.smoke]
        assert len(smoke) == 1, f"family {family}: smoke variants {smoke}"


def test_parameter_count_matches_reference(model_spec) -> None:
    assert model_spec.reference_params is not None, f"{model_spec.name} declares no reference parameter count"
    assert count_parameters(model_spec.build()) == model_spec.reference_params


@pytest.mark.parametrize("batch", [1, 3])
def test_forward_shapes_and_finite(model_spec, batch) -> None:
    model = model_spec.build()
    outputs = run_torch(model_spec, model, model_spec.example_inputs(batch, seed=0))
    for out in model_spec.outputs:
        lengths = model_spec.default_lengths()
        want = tuple(batch if d == "B" else lengths.get(d, d) for d in out.shape)
        assert outputs[out.name].shape == want, out.name
        assert np.isfinite(outputs[out.name]).all(), out.name


def test_build_is_deterministic(model_spec) -> None:
    a, b = model_spec.build().state_dict(), model_spec.build().state_dict()
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


def test_example_inputs_are_seeded_and_realistic(model_spec) -> None:
    first, again, other = (model_spec.example_inputs(3, seed=s) for s in (0, 0, 1))
    for spec in model_spec.inputs:
        x = first[spec.name]
        assert x.shape == spec.concrete_shape(3, model_spec.default_lengths()) and x.dtype == np.dtype(spec.dtype)
        assert np.array_equal(x, again[spec.name]), f"{spec.name}: not deterministic for a seed"
        assert not np.array_equal(x, other[spec.name]), f"{spec.name}: seed has no effect"
        assert np.unique(x).size > 1, f"{spec.name}: constant input"
        if spec.value_range is not None:
            lo, hi = spec.value_range
            assert x.min() >= lo and x.max() <= hi, f"{spec.name}: outside declared range {spec.value_range}"


def test_every_zoo_variant_declares_its_task_and_recipe() -> None:
    for spec in builtin_specs():
        assert spec.task is not None and training.has_task(spec), spec.name
        assert training.has_recipe(spec), spec.name
        assert (spec.training is None) != (spec.weights_from is None), spec.name


def _zoo_words() -> set[str]:
    specs = builtin_specs()
    return {s.name for s in specs} | {s.family for s in specs}


@pytest.mark.parametrize("module", [training, proxy_tasks], ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_task_and_training_layers_know_no_zoo_model(module) -> None:
    """No branch on a model or family name, no table keyed by one, no import of a family module or the registry:
    the zoo is declared on its specs like a user's model (lower layers never import higher ones)."""
    tree = ast.parse(Path(module.__file__).read_text())
    words = _zoo_words()
    families = {name.rsplit(".", 1)[-1] for name in BUILTIN_FAMILIES} | {"registry"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            assert node.attr != "family", f"{module.__name__}:{node.lineno}: reads spec.family"
        if isinstance(node, ast.Compare):
            consts = [n.value for n in (node.left, *node.comparators) if isinstance(n, ast.Constant)]
            assert not words & set(consts), f"{module.__name__}:{node.lineno}: compares with a zoo name"
        if isinstance(node, ast.Dict):
            keys = {k.value for k in node.keys if isinstance(k, ast.Constant)}
            assert not words & keys, f"{module.__name__}:{node.lineno}: a table keyed by zoo names"
        if isinstance(node, ast.ImportFrom):
            imported = {node.module or ""} | {f"{node.module}.{a.name}" for a in node.names}
            assert not {m.rsplit(".", 1)[-1] for m in imported} & families, f"{module.__name__}:{node.lineno}"
    assert not hasattr(proxy_tasks, "BUILTIN_TASKS")


def test_extra_accuracy_task_is_rejected_naming_the_field() -> None:
    with pytest.raises(ValueError, match=r"extra\['accuracy_task'\].*ModelSpec\(task="):
        ModelSpec(name="user_old", family="user", factory=lambda: None,
                  inputs=(InputSpec("x", ("B", 2), "float32", "NC", lambda rng, b: np.zeros((b, 2), np.float32)),),
                  outputs=(OutputSpec("y", ("B", 2)),), extra={"accuracy_task": lambda: None})


def test_docs_worked_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/extending.md's zoo example: the module as written declares a task and a recipe the harness trains."""
    from export_harness.models import datasets

    text = (REPO / "docs" / "extending.md").read_text()
    section = text[text.index("## Adding a model to the bundled zoo"):]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    module_code, test_code = blocks[0], blocks[2]
    path = tmp_path / "vowel_cnn_example.py"
    path.write_text(module_code)
    loader = importlib.util.spec_from_file_location("vowel_cnn_example", path)
    module = importlib.util.module_from_spec(loader)
    monkeypatch.setitem(sys.modules, "vowel_cnn_example", module)
    loader.loader.exec_module(module)
    (spec,) = module.specs()
    assert count_parameters(spec.build()) == spec.reference_params
    monkeypatch.setattr(datasets, "_DATA_DIR", tmp_path / "data")  # its weights go to a scratch cache
    namespace = {"vowel_cnn": module}  # the test block as written, its module import served by the example
    exec(compile(test_code.replace("from export_harness.models import vowel_cnn\n", ""), "example_test", "exec"),
         namespace)
    namespace["test_reference_weights_learn_the_task"]()
    assert (tmp_path / "weights").is_dir() and list((tmp_path / "weights").glob("vowel_cnn-*.pt"))
    training.forget_task(spec.name)

