"""Family checks for the sign-language models (``models/sign_language.py``): faithfulness, I/O contract, tracing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from export_harness.converters.expectations import Expectations
from export_harness.models import sign_language as sl
from export_harness.models.spec import ModelSpec, count_parameters, run_torch, to_torch

DECLARED = Expectations.load(Path(__file__).resolve().parents[1] / "baselines" / "expectations.toml")

NAMES = ("sign_transformer", "sign_gru")


@pytest.fixture(scope="module")
def specs() -> dict[str, ModelSpec]:
    return {s.name: s for s in sl.specs()}


@pytest.fixture(scope="module")
def models(specs: dict[str, ModelSpec]) -> dict[str, torch.nn.Module]:
    return {name: spec.build() for name, spec in specs.items()}


def test_registered_specs(specs: dict[str, ModelSpec]) -> None:
    assert tuple(specs) == NAMES
    assert [n for n, s in specs.items() if s.smoke] == ["sign_gru"]
    for spec in specs.values():
        assert spec.family == "sign_language"
        scripted_ok = spec.name == "sign_gru"
        assert (DECLARED.for_cell(f"{spec.name}-torchscript:script") is not None) is not scripted_ok
        assert spec.input_names == ["input"]
        assert spec.output_names == ["gloss_logits", "category_logits"]
        assert all(o.kind == "logits" for o in spec.outputs)
        assert spec.inputs[0].shape == ("B", "frames", 178) and spec.inputs[0].layout == "NTC"
        assert spec.default_lengths() == {"frames": 300}
        assert spec.dynamic_batch


@pytest.mark.parametrize(("name", "expected"), [("sign_transformer", 3_286_259), ("sign_gru", 497_907)])
def test_param_count(specs: dict[str, ModelSpec], models: dict[str, torch.nn.Module], name: str, expected: int) -> None:
    assert specs[name].reference_params == expected
    assert count_parameters(models[name]) == expected


def test_param_breakdown(models: dict[str, torch.nn.Module]) -> None:
    tr, gru = models["sign_transformer"], models["sign_gru"]
    assert count_parameters(tr) - count_parameters(tr.category_head) == 3_252_073
    assert tr.cls_token.shape == (1, 1, 256)  # always a parameter, unused by mean pooling
    assert count_parameters(gru.gru1) == 334_848
    assert count_parameters(gru.gru2) == 148_224
    assert count_parameters(gru.gloss_head) + count_parameters(gru.category_head) == 14_835


def test_reference_layer_structure(models: dict[str, torch.nn.Module]) -> None:
    tr = models["sign_transformer"]
    assert len(tr.encoder_layers) == 4
    layer = tr.encoder_layers[0]
    assert layer.attention.num_heads == 8 and layer.attention.head_dim == 32
    assert layer.feed_forward.linear1.out_features == 1024
    assert isinstance(tr.input_norm, sl.LayerNormalization) and tr.input_norm.eps == 1e-6
    assert tr.pos_encoder.pe.shape == (1, 300, 256)
    assert "pos_encoder.pe" in tr.state_dict() and "pos_encoder.pe" not in dict(tr.named_parameters())
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in tr.modules())  # custom LN, written out in ops


def test_custom_layernorm_matches_formula() -> None:
    ln = sl.LayerNormalization(256)
    with torch.no_grad():
        ln.gamma.uniform_(0.5, 1.5)
        ln.beta.uniform_(-0.5, 0.5)
    x = torch.randn(2, 7, 256, generator=torch.Generator().manual_seed(0))
    ref = torch.nn.functional.layer_norm(x, (256,), ln.gamma, ln.beta, eps=1e-6)
    torch.testing.assert_close(ln(x), ref, atol=1e-5, rtol=1e-5)


def test_positional_encoding_values_and_limit() -> None:
    pe = sl.PositionalEncoding(256, dropout=0.0, max_len=300)
    assert torch.allclose(pe.pe[0, :, 0], torch.sin(torch.arange(300.0)))
    assert torch.allclose(pe.pe[0, :, 1], torch.cos(torch.arange(300.0)))
    with pytest.raises(ValueError, match="exceeds maximum supported length"):
        pe(torch.zeros(1, 301, 256))


@pytest.mark.parametrize("name", NAMES)
def test_shape_checks_raise(models: dict[str, torch.nn.Module], name: str) -> None:
    with pytest.raises(ValueError, match="got shape"):
        models[name](torch.zeros(300, 178))
    with pytest.raises(ValueError, match="input features"):
        models[name](torch.zeros(1, 300, 177))


def test_encoder_layer_return_attn_is_tensor_or_tuple(models: dict[str, torch.nn.Module]) -> None:
    layer = models["sign_transformer"].encoder_layers[0]
    x = torch.randn(2, 10, 256)
    assert isinstance(layer(x), torch.Tensor)
    out, attn = layer(x, return_attn=True)
    assert out.shape == (2, 10, 256) and attn.shape == (2, 8, 10, 10)


def test_transformer_script_fails_like_reference(models: dict[str, torch.nn.Module]) -> None:
    """Unannotated ``None`` defaults (TorchScript types them Tensor) and the Tensor-or-tuple return are kept."""
    with pytest.raises(RuntimeError):
        torch.jit.script(models["sign_transformer"])


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("batch", [1, 3])
def test_forward_contract(specs: dict[str, ModelSpec], models: dict[str, torch.nn.Module], name: str, batch: int):
    spec = specs[name]
    outs = run_torch(spec, models[name], spec.example_inputs(batch))
    for o in spec.outputs:
        assert outs[o.name].shape == tuple(batch if d == "B" else d for d in o.shape)
        assert outs[o.name].dtype == np.float32
        assert np.isfinite(outs[o.name]).all()
    assert outs["gloss_logits"].std() > 0


@pytest.mark.parametrize("name", NAMES)
def test_eval_is_deterministic(specs: dict[str, ModelSpec], models: dict[str, torch.nn.Module], name: str) -> None:
    spec = specs[name]
    inputs = spec.example_inputs(3)
    a, b = run_torch(spec, models[name], inputs), run_torch(spec, models[name], inputs)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    rebuilt = run_torch(spec, spec.build(), inputs)  # seeded init: a fresh build gives the same model
    for key in a:
        np.testing.assert_array_equal(a[key], rebuilt[key])


def test_transformer_all_ones_mask_matches_no_mask(models: dict[str, torch.nn.Module]) -> None:
    x = torch.from_numpy(sl.keypoint_sequence(np.random.default_rng(1), 2, steps=40))
    with torch.no_grad():
        ref = models["sign_transformer"](x)
        masked = models["sign_transformer"](x, torch.ones(2, 40))
    for r, m in zip(ref, masked, strict=True):
        torch.testing.assert_close(m, r, atol=1e-5, rtol=1e-5)


def test_gru_full_lengths_matches_unpacked(models: dict[str, torch.nn.Module]) -> None:
    x = torch.from_numpy(sl.keypoint_sequence(np.random.default_rng(2), 3, steps=50))
    gru = models["sign_gru"]
    with torch.no_grad():
        ref = gru(x)
        packed = gru(x, lengths=torch.full((3,), 50))
        short = gru(x, lengths=torch.tensor([50, 20, 5]))
        trimmed = gru(x[1:2, :20])
    for r, p in zip(ref, packed, strict=True):
        torch.testing.assert_close(p, r, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(short[0][1:2], trimmed[0], atol=1e-5, rtol=1e-5)


def test_gru_init() -> None:
    torch.manual_seed(0)
    gru = sl.build_sign_gru()
    for rnn in (gru.gru1, gru.gru2):
        for name, p in rnn.named_parameters():
            if "bias" in name:
                assert torch.count_nonzero(p) == 0
            if "weight_hh" in name:  # [3H, H] orthogonal: orthonormal columns
                torch.testing.assert_close(p.T @ p, torch.eye(p.shape[1]), atol=1e-4, rtol=0)
    for head in (gru.gloss_head, gru.category_head):
        assert torch.count_nonzero(head.bias) == 0
        bound = (6.0 / (head.in_features + head.out_features)) ** 0.5
        assert head.weight.abs().max() <= bound


def test_keypoint_inputs_are_realistic(specs: dict[str, ModelSpec]) -> None:
    x = specs["sign_transformer"].example_inputs(4)["input"]
    assert x.dtype == np.float32 and x.shape == (4, 300, 178)
    assert x.min() >= 0.0 and x.max() <= 1.0
    pts = x.reshape(4, 300, 89, 2)
    visible = (pts != 0).all(-1)
    assert visible[:, :, :25].all() and visible[:, :, 67:].all()  # pose and face are always tracked
    # Smooth motion: small frame-to-frame steps, but the dominant (right) hand does move.
    step = np.abs(np.diff(pts, axis=1))[visible[:, 1:] & visible[:, :-1]]
    assert step.mean() < 0.01
    right = pts[:, :, 46:67][visible[:, :, 46:67]]
    assert right.reshape(-1, 2).std(0).min() > 0.02
    # Plausible layout: nose above shoulders above hips.
    nose_y, shoulder_y, hip_y = pts[..., 0, 1], pts[..., 11:13, 1].mean(-1), pts[..., 23:25, 1].mean(-1)
    assert (nose_y < shoulder_y).all() and (shoulder_y < hip_y).all()
    again = specs["sign_transformer"].example_inputs(4)["input"]
    np.testing.assert_array_equal(x, again)  # seeded


@pytest.mark.parametrize("name", NAMES)
def test_jit_trace(specs: dict[str, ModelSpec], models: dict[str, torch.nn.Module], name: str) -> None:
    spec, model = specs[name], models[name]
    (x3,) = to_torch(spec.example_inputs(3), spec.input_names)
    traced = torch.jit.trace(model, (x3,))  # with check_trace: the graph is stable across invocations
    (x1,) = to_torch(spec.example_inputs(1, seed=5), spec.input_names)
    with torch.no_grad():
        for x in (x3, x1):
            for t, e in zip(traced(x), model(x), strict=True):
                torch.testing.assert_close(t, e, atol=1e-5, rtol=1e-5)
