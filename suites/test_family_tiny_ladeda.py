"""Family tests for TinyLaDeDa (models/tiny_ladeda.py): architecture, I/O contract, export-friendly twin."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from export_harness.converters.expectations import Expectations
from export_harness.models import tiny_ladeda as tl
from export_harness.models.spec import ModelSpec, count_parameters, run_torch

DECLARED = Expectations.load(Path(__file__).resolve().parents[1] / "baselines" / "expectations.toml")

SPECS = {s.name: s for s in tl.specs()}

CHECKPOINT_SHAPES = {
    "conv1.weight": (8, 3, 1, 1),
    "conv2.weight": (8, 8, 3, 3),
    "layer1.0.conv1.weight": (8, 8, 1, 1),
    "layer1.0.conv2.weight": (8, 8, 3, 3),
    "fc.weight": (1, 8),
    "fc.bias": (1,),
}


def _spec(name: str) -> ModelSpec:
    return SPECS[name]


def _input(spec: ModelSpec, batch: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(spec.example_inputs(batch, seed=seed)["input"])


def test_registered_variants() -> None:
    assert list(SPECS) == ["tiny_ladeda", "tiny_ladeda_patch"]
    assert SPECS["tiny_ladeda"].smoke
    for spec in SPECS.values():
        assert spec.family == "tiny_ladeda"
        assert DECLARED.for_cell(f"{spec.name}-torchscript:script") is not None
        assert spec.input_names == ["input"]
        assert spec.inputs[0].shape == ("B", 3, 256, 256) and spec.inputs[0].layout == "NCHW"
        assert spec.dynamic_batch
    assert SPECS["tiny_ladeda"].outputs[0].name == "logit" and SPECS["tiny_ladeda"].outputs[0].kind == "logit"
    assert SPECS["tiny_ladeda_patch"].outputs[0].name == "patch_logits"
    assert SPECS["tiny_ladeda_patch"].outputs[0].kind == "map"


@pytest.mark.parametrize("name", list(SPECS))
def test_param_count(name: str) -> None:
    model = _spec(name).build()
    assert count_parameters(model) == tl.REFERENCE_PARAMS == _spec(name).reference_params == 1_297


@pytest.mark.parametrize("name", list(SPECS))
def test_state_dict_matches_checkpoint_keys(name: str) -> None:
    sd = _spec(name).build().state_dict()
    assert len(tl.CHECKPOINT_KEYS) == 21
    assert set(sd) == set(tl.CHECKPOINT_KEYS)
    for key, shape in CHECKPOINT_SHAPES.items():
        assert tuple(sd[key].shape) == shape, key
    for key in sd:
        if key.endswith(("running_mean", "running_var", "bn1.weight", "bn2.weight")):
            assert tuple(sd[key].shape) == (8,), key
    # 48 BN buffer floats: 3 BN layers x (mean + var) x 8 channels.
    assert sum(sd[k].numel() for k in sd if k.endswith(("running_mean", "running_var"))) == 48


def test_architecture_details() -> None:
    model = _spec("tiny_ladeda").build()
    assert model.bn1.momentum == 0.001
    block = model.layer1[0]
    assert block.conv2.kernel_size == (3, 3) and block.conv2.stride == (2, 2) and block.conv2.padding == (0, 0)
    assert model.conv2.padding == (0, 0) and model.conv2.bias is None and model.conv1.bias is None
    assert model.fc.in_features == 8 and model.fc.out_features == 1
    assert model.preprocess_type == "right_diag"


@pytest.mark.parametrize("name", list(SPECS))
@pytest.mark.parametrize("batch", [1, 3])
def test_forward_shapes_finite(name: str, batch: int) -> None:
    spec = _spec(name)
    model = spec.build()
    outs = run_torch(spec, model, spec.example_inputs(batch))
    for out_spec in spec.outputs:
        arr = outs[out_spec.name]
        assert arr.shape == tuple(batch if d == "B" else d for d in out_spec.shape)
        assert arr.dtype == np.float32
        assert np.isfinite(arr).all()
        assert arr.std() > 0 or batch == 1


def test_patch_grid_is_126() -> None:
    out = _spec("tiny_ladeda_patch").build()(_input(_spec("tiny_ladeda_patch"), 1))
    assert tuple(out.shape) == (1, 1, tl.PATCH_GRID, tl.PATCH_GRID) == (1, 1, 126, 126)


def test_pooled_logit_is_mean_of_patch_logits() -> None:
    """Same seed, same weights; fc is affine, so the image logit is the mean patch logit."""
    pooled, patch = _spec("tiny_ladeda").build(), _spec("tiny_ladeda_patch").build()
    for (ka, va), (kb, vb) in zip(pooled.state_dict().items(), patch.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    x = _input(_spec("tiny_ladeda"), 2)
    with torch.no_grad():
        torch.testing.assert_close(pooled(x), patch(x).double().mean((2, 3)).float(), atol=1e-4, rtol=0)


def test_gradient_preprocess_is_right_diag() -> None:
    model = _spec("tiny_ladeda").build()
    x = torch.zeros(1, 3, 5, 5)
    x[0, :, 2, 2] = 1.0  # impulse: depthwise cross-correlation returns the flipped kernel around it
    got = model.preprocess(x, "right_diag")[0, 0, 1:4, 1:4]
    kernel = torch.tensor(tl.GRAD_KERNELS["right_diag"], dtype=torch.float32)
    torch.testing.assert_close(got, kernel.flip(0, 1), atol=0, rtol=0)
    assert model.preprocess(x, "raw") is x


def test_batchnorm_randomised_deterministically() -> None:
    spec = _spec("tiny_ladeda")
    a, b = spec.build().state_dict(), spec.build().state_dict()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    for prefix in ("bn1", "layer1.0.bn1", "layer1.0.bn2"):
        assert not torch.allclose(a[f"{prefix}.running_mean"], torch.zeros(8))
        assert not torch.allclose(a[f"{prefix}.running_var"], torch.ones(8))
        assert (a[f"{prefix}.running_var"] > 0).all()
        assert not torch.allclose(a[f"{prefix}.weight"], torch.ones(8))


def test_bn_eval_uses_running_stats() -> None:
    """Eval output must change when running stats change: BN folding is observable by parity."""
    spec = _spec("tiny_ladeda_patch")
    model = spec.build()
    x = _input(spec, 1)
    with torch.no_grad():
        before = model(x)
        model.layer1[0].bn2.running_mean.add_(0.5)
        after = model(x)
    assert (before - after).abs().max() > 1e-3


@pytest.mark.parametrize("name", list(SPECS))
def test_generator_deterministic_and_realistic(name: str) -> None:
    spec = _spec(name)
    a, b = spec.example_inputs(2, seed=7)["input"], spec.example_inputs(2, seed=7)["input"]
    assert np.array_equal(a, b)
    assert not np.array_equal(a, spec.example_inputs(2, seed=8)["input"])
    assert a.dtype == np.float32 and a.shape == (2, 3, 256, 256)
    lo, hi = spec.inputs[0].value_range
    assert lo - 1e-5 <= a.min() and a.max() <= hi + 1e-5
    assert a.std() > 0.3  # structured, non-constant images
    assert not np.array_equal(a[0], a[1])


def test_input_generator_matches_imagenet_normalisation() -> None:
    rng = np.random.default_rng(0)
    x = tl.image_input(rng, 1)
    img01 = x * tl.IMAGENET_STD[None, :, None, None] + tl.IMAGENET_MEAN[None, :, None, None]
    assert img01.min() >= -1e-5 and img01.max() <= 1 + 1e-5


@pytest.mark.parametrize("pool", [True, False])
def test_exportable_same_weights_and_keys(pool: bool) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        faithful = tl.build_tiny_ladeda(pool)
        torch.manual_seed(0)
        exportable = tl.build_tiny_ladeda_exportable(pool)
    fsd, esd = faithful.state_dict(), exportable.state_dict()
    assert list(fsd) == list(esd)
    for key in fsd:
        assert torch.equal(fsd[key], esd[key]), key
    assert count_parameters(exportable) == 1_297
    assert "grad_kernel" not in esd  # non-persistent: the 21-key checkpoints load into either


def test_exportable_patch_map_identical() -> None:
    spec = _spec("tiny_ladeda_patch")
    faithful = spec.build()
    exportable = tl.TinyLaDeDaExportable.from_model(faithful)
    assert not exportable.training
    for seed in range(2):
        x = _input(spec, 3, seed)
        with torch.no_grad():
            torch.testing.assert_close(exportable(x), faithful(x), atol=1e-6, rtol=0)


def test_exportable_pooled_identical() -> None:
    """Every stage but the final reduction is bit-identical; that reduction is identical in float64.

    In float32 nn.AvgPool2d(126) accumulates 15,876 values sequentially (error ~1e-5 on means of ~2); ``mean`` is
    within ~1e-7 of the float64 value. So the float32 end-to-end check bounds the difference by AvgPool's rounding,
    and the exportable output is checked at atol 1e-6 against the exact (float64) pooled value.
    """
    spec = _spec("tiny_ladeda")
    faithful = spec.build()
    exportable = tl.TinyLaDeDaExportable.from_model(faithful)
    x = _input(spec, 3)
    feats: dict[str, torch.Tensor] = {}
    faithful.layer1.register_forward_hook(lambda _m, _i, out: feats.__setitem__("faithful", out.detach().clone()))
    exportable.layer1.register_forward_hook(lambda _m, _i, out: feats.__setitem__("exportable", out.detach().clone()))
    with torch.no_grad():
        y_faithful, y_exportable = faithful(x), exportable(x)
    # Gradient filter (padding="same" vs padding=1 on a buffer) and trunk: bit-identical.
    assert torch.equal(feats["faithful"], feats["exportable"])
    # The pooling rewrite is exact in float64.
    f64 = feats["faithful"].double()
    torch.testing.assert_close(
        nn.AvgPool2d(f64.size()[2], stride=1)(f64).flatten(1), f64.mean((2, 3)), atol=1e-12, rtol=0
    )
    # Exportable (fp32) against the exact pooled logit; faithful within AvgPool's fp32 accumulation error.
    fc = faithful.fc.double()
    exact = fc(f64.mean((2, 3))).float()
    torch.testing.assert_close(y_exportable, exact, atol=1e-6, rtol=0)
    torch.testing.assert_close(y_faithful, y_exportable, atol=1e-6, rtol=1e-4)


def test_exportable_rejects_non_gradient_preprocess() -> None:
    with pytest.raises(ValueError, match="supports"):
        tl.TinyLaDeDaExportable(tl.Bottleneck, 1, 2, 1, "NPR")


@pytest.mark.parametrize("name", list(SPECS))
def test_torchscript_trace(name: str) -> None:
    spec = _spec(name)
    model = spec.build()
    x = _input(spec, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, x)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x), atol=0, rtol=0)
        x3 = _input(spec, 3, seed=1)  # batch stays dynamic in the trace
        torch.testing.assert_close(traced(x3), model(x3), atol=0, rtol=0)


@pytest.mark.parametrize("pool", [True, False])
def test_exportable_scripts(pool: bool) -> None:
    exportable = tl.TinyLaDeDaExportable.from_model(tl.build_tiny_ladeda(pool).eval())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(exportable)
    x = _input(_spec("tiny_ladeda"), 1)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), exportable(x), atol=1e-6, rtol=0)


def test_patch_variant_shares_the_pooled_variants_trained_weights() -> None:
    """One state dict, trained once: the patch map declares weights_from the pooled variant, no recipe of its own."""
    pooled, patch = SPECS["tiny_ladeda"], SPECS["tiny_ladeda_patch"]
    assert patch.weights_from is not None and patch.weights_from.name == "tiny_ladeda" and patch.training is None
    assert pooled.training is not None and pooled.task is not None and patch.task is not None
    a, b = pooled.build().state_dict(), patch.build().state_dict()
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
