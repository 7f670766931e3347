"""Every registered variant: reference parameter count, forward at batch 1 and 3, realistic seeded inputs."""

from __future__ import annotations

import numpy as np
import pytest

from export_harness.models.registry import BUILTIN_FAMILIES, builtin_specs
from export_harness.models.spec import count_parameters, run_torch

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
