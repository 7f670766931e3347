"""BST family: faithfulness to the reference (counts, init, masking, NaN on video_len=0), generators, traceability.

Self-contained: needs only ``export_harness.models.bst`` and ``export_harness.models.spec``. Reference numbers are
MODELS.md section 1
(``Va6lue/BST-Badminton-Stroke-type-Transformer`` @2ef1797).
"""

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from export_harness.converters.expectations import Expectations
from export_harness.models import bst
from export_harness.models.spec import ModelSpec, count_parameters, run_torch, to_torch

DECLARED = Expectations.load(Path(__file__).resolve().parents[1] / "baselines" / "expectations.toml")

SPECS: dict[str, ModelSpec] = {spec.name: spec for spec in bst.specs()}
NAMES = ["bst_0", "bst", "bst_cg", "bst_ap", "bst_cg_ap"]
CLASSES = {"bst_0": "BST_0", "bst": "BST", "bst_cg": "BST_CG", "bst_ap": "BST_AP", "bst_cg_ap": "BST_CG_AP"}

# Learnable parameters at seq_len 100 (MODELS.md section 1), written out here rather than read from models.bst.
PARAMS_C25 = {"bst_0": 1_826_975, "bst": 1_846_247, "bst_cg": 1_866_447, "bst_ap": 1_806_047, "bst_cg_ap": 1_866_447}
PARAMS_C35 = {"bst_0": 1_830_985, "bst": 1_850_257, "bst_cg": 1_870_457, "bst_ap": 1_810_057, "bst_cg_ap": 1_870_457}
# Per-part breakdown at C=25, T=100 (MODELS.md); embedding_* are the positional-embedding parameters.
PARTS_BST_CG_AP = {
    "tcn_pose": 86_600,
    "tcn_shuttle": 25_950,
    "learned_token": 200,
    "embedding": 30_200,
    "encoder_tem": 776_400,
    "cross_trans": 388_400,
    "encoder_inter": 388_200,
    "mlp_head": 131_025,
    "mlp_positions": 19_272,
    "mlp_clean": 20_200,
}
TCN_HALO = 8  # frames past video_len the two dilated convs (k=5, dilation 1 and 3) still read


@pytest.fixture(scope="module")
def built() -> dict[str, torch.nn.Module]:
    return {name: SPECS[name].build() for name in NAMES}


def _logits(spec: ModelSpec, model: torch.nn.Module, inputs: dict[str, np.ndarray]) -> np.ndarray:
    return run_torch(spec, model, inputs)["shot_predictions"]


def _short_clip(spec: ModelSpec, batch: int, seed: int, max_len: int) -> dict[str, np.ndarray]:
    """Generator output with video_len capped at ``max_len`` (re-padded), so frames past the TCN halo exist."""
    inputs = spec.example_inputs(batch=batch, seed=seed)
    inputs["video_len"] = np.minimum(inputs["video_len"], max_len)
    for name in ("JnB", "shuttle", "pos"):
        if name in inputs:
            for b, n in enumerate(inputs["video_len"]):
                inputs[name][b, n:] = 0.0
    return inputs


def _perturb_from(inputs: dict[str, np.ndarray], start: np.ndarray, stop: np.ndarray | None = None, seed: int = 0):
    """Copy of ``inputs`` with frames ``start[b] <= f < stop[b]`` of every per-frame input replaced by noise."""
    rng = np.random.default_rng(seed)
    out = {k: v.copy() for k, v in inputs.items()}
    for name in ("JnB", "shuttle", "pos"):
        if name not in out:
            continue
        for b in range(out[name].shape[0]):
            end = out[name].shape[1] if stop is None else int(stop[b])
            region = out[name][b, int(start[b]) : end]
            out[name][b, int(start[b]) : end] = rng.uniform(-1.0, 1.0, size=region.shape).astype(np.float32)
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------------------------------------------------


def test_registered_variants() -> None:
    assert list(SPECS) == NAMES
    for name, spec in SPECS.items():
        assert spec.family == "bst"
        assert spec.smoke is (name == "bst_cg_ap")
        assert DECLARED.for_cell(f"{spec.name}-torchscript:script") is not None
        assert spec.reference_params == PARAMS_C25[name]
        assert spec.dynamic_batch
        expected = ["JnB", "shuttle", "video_len"] if name == "bst_0" else ["JnB", "shuttle", "pos", "video_len"]
        assert spec.input_names == expected
        assert spec.output_names == ["shot_predictions"]
        assert spec.outputs[0].kind == "logits" and spec.outputs[0].shape == ("B", 25)
        assert type(spec.factory()).__name__ == CLASSES[name]
        assert all(i.description for i in spec.inputs)


def test_input_contract() -> None:
    spec = SPECS["bst_cg_ap"]
    shapes = {i.name: (i.shape, i.dtype, i.layout) for i in spec.inputs}
    assert shapes == {
        "JnB": (("B", 100, 2, 72), "float32", "BTNF"),
        "shuttle": (("B", 100, 2), "float32", "BTF"),
        "pos": (("B", 100, 2, 2), "float32", "BTNF"),
        "video_len": (("B",), "int64", "B"),
    }


# ---------------------------------------------------------------------------------------------------------------------
# Architecture against the reference
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_param_count_c25(name: str, built: dict[str, torch.nn.Module]) -> None:
    assert count_parameters(built[name]) == PARAMS_C25[name]


@pytest.mark.parametrize("name", NAMES)
def test_param_count_c35(name: str) -> None:
    model = getattr(bst, CLASSES[name])(**{**bst.HPARAMS, "n_class": 35})
    assert count_parameters(model) == PARAMS_C35[name]


def test_param_breakdown(built: dict[str, torch.nn.Module]) -> None:
    parts = dict.fromkeys(PARTS_BST_CG_AP, 0)
    for key, param in built["bst_cg_ap"].named_parameters():
        part = next(p for p in PARTS_BST_CG_AP if key.startswith(p))
        parts[part] += param.numel()
    assert parts == PARTS_BST_CG_AP


def test_upstream_state_dict_keys(built: dict[str, torch.nn.Module]) -> None:
    """Module names match upstream, so its checkpoints load with ``strict=True``."""
    keys = set(built["bst_cg_ap"].state_dict())
    for key in (
        "mlp_positions.mlp.0.weight",
        "tcn_pose.net.0.weight",
        "tcn_pose.net.5.running_var",
        "tcn_shuttle.net.4.weight",
        "learned_token_tem",
        "embedding_tem",
        "encoder_tem.layers.1.attn.to_qkv.weight",
        "encoder_tem.layers.0.attn.tail.0.bias",
        "encoder_tem.layers.0.ff.mlp.mlp.3.weight",
        "embedding_cross",
        "cross_trans.layer_norm1_x2.weight",
        "cross_trans.cross_attn.to_q.weight",
        "cross_trans.cross_attn.to_kv.weight",
        "learned_token_inter",
        "embedding_inter",
        "encoder_inter.layers.0.layer_norm2.bias",
        "mlp_clean.mlp.3.bias",
        "mlp_head.layer_norm.weight",
        "mlp_head.mlp.mlp.3.weight",
    ):
        assert key in keys
    assert not any(k.startswith("mlp_positions") for k in built["bst_0"].state_dict())
    assert built["bst_ap"].mlp_head.layer_norm.normalized_shape == (200,)


def test_init(built: dict[str, torch.nn.Module]) -> None:
    model = built["bst_cg_ap"]
    # Positional embeddings: positional_encodings' PositionalEncoding1D, sin and cos interleaved.
    pos = torch.arange(101, dtype=torch.float64)[:, None]
    inv_freq = 1.0 / 10000 ** (torch.arange(0, 100, 2, dtype=torch.float64) / 100)
    expected = torch.stack((torch.sin(pos * inv_freq), torch.cos(pos * inv_freq)), dim=-1).flatten(-2).float()
    torch.testing.assert_close(model.embedding_tem.detach()[0], expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(model.embedding_inter.detach()[0], expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(model.embedding_cross.detach()[0], expected[:100], atol=1e-4, rtol=0)
    assert model.embedding_tem.requires_grad
    # Class tokens N(0, 0.02).
    tokens = torch.cat((model.learned_token_tem, model.learned_token_inter)).detach()
    assert 0.01 < tokens.std().item() < 0.03 and tokens.abs().max().item() < 0.1
    # Xavier-uniform Linear with zero bias; Xavier-normal Conv1d.
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            fan_in, fan_out = module.in_features, module.out_features
            assert module.weight.abs().max().item() <= (6.0 / (fan_in + fan_out)) ** 0.5 + 1e-7
            assert module.bias is None or not module.bias.any()
        elif isinstance(module, torch.nn.Conv1d):
            fan_in = module.in_channels * module.kernel_size[0]
            fan_out = module.out_channels * module.kernel_size[0]
            std = (2.0 / (fan_in + fan_out)) ** 0.5
            assert 0.8 * std < module.weight.std().item() < 1.2 * std


# ---------------------------------------------------------------------------------------------------------------------
# Forward behaviour
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("name", NAMES)
def test_forward(name: str, batch: int, built: dict[str, torch.nn.Module]) -> None:
    spec = SPECS[name]
    out = _logits(spec, built[name], spec.example_inputs(batch=batch, seed=11))
    assert out.shape == (batch, 25) and out.dtype == np.float32
    assert np.isfinite(out).all()
    assert out.std() > 0


@pytest.mark.parametrize("name", NAMES)
def test_masking_invariance(name: str, built: dict[str, torch.nn.Module]) -> None:
    """Frames past video_len (and past the TCN's reach) do not affect the logits."""
    spec = SPECS[name]
    inputs = _short_clip(spec, batch=3, seed=21, max_len=100 - TCN_HALO - 10)
    reference = _logits(spec, built[name], inputs)
    perturbed = _perturb_from(inputs, inputs["video_len"] + TCN_HALO)
    np.testing.assert_allclose(_logits(spec, built[name], perturbed), reference, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_tcn_halo_reads_padding(name: str, built: dict[str, torch.nn.Module]) -> None:
    """Reference behaviour: the attention masks stop at video_len, but the TCN convs read 8 frames beyond it.

    So zero padding past video_len is part of the input contract (the real data is padded so, and so are the
    generators); the invariance above holds only past ``video_len + 8``.
    """
    spec = SPECS[name]
    inputs = _short_clip(spec, batch=3, seed=21, max_len=100 - TCN_HALO - 10)
    reference = _logits(spec, built[name], inputs)
    vl = inputs["video_len"]
    perturbed = _perturb_from(inputs, vl, vl + TCN_HALO)
    assert np.abs(_logits(spec, built[name], perturbed) - reference).max() > 1e-6


@pytest.mark.parametrize("name", NAMES)
def test_video_len_zero_gives_nan(name: str, built: dict[str, torch.nn.Module]) -> None:
    """Reference behaviour: video_len=0 masks every cross-attention key; softmax over all -inf is NaN."""
    spec = SPECS[name]
    inputs = spec.example_inputs(batch=2, seed=5)
    inputs["video_len"] = np.array([0, 1], dtype=np.int64)
    out = _logits(spec, built[name], inputs)
    assert np.isnan(out[0]).all()
    assert np.isfinite(out[1]).all()  # one valid frame is enough


def test_eval_mode_is_deterministic(built: dict[str, torch.nn.Module]) -> None:
    spec, model = SPECS["bst_cg_ap"], built["bst_cg_ap"]
    assert not model.training
    inputs = spec.example_inputs(batch=2, seed=3)
    np.testing.assert_array_equal(_logits(spec, model, inputs), _logits(spec, model, inputs))


@pytest.mark.parametrize("name", NAMES)
def test_build_is_deterministic(name: str, built: dict[str, torch.nn.Module]) -> None:
    again = SPECS[name].build().state_dict()
    first = built[name].state_dict()
    assert list(again) == list(first)
    for key, value in first.items():
        assert torch.equal(again[key], value), key


# ---------------------------------------------------------------------------------------------------------------------
# Generators
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 2, 7])
def test_generators(batch: int) -> None:
    spec = SPECS["bst_cg_ap"]
    for seed in range(5):
        inputs = spec.example_inputs(batch=batch, seed=seed)
        vl = inputs["video_len"]
        assert vl.dtype == np.int64 and vl.shape == (batch,)
        assert (vl >= 1).all() and (vl <= 100).all()  # video_len=0 would give NaN logits
        assert (vl >= 30).all()
        for i in spec.inputs:
            arr = inputs[i.name]
            lo, hi = i.value_range
            assert arr.min() >= lo and arr.max() <= hi, i.name
            if i.name != "video_len":
                assert np.isfinite(arr).all() and np.unique(arr).size > 20, i.name
                for b in range(batch):
                    assert not arr[b, vl[b] :].any(), f"{i.name}: frames past video_len must be zero"
        # Every valid frame has a detected pose; bones are end - start of the joints, 0 where a joint is missing.
        joints_bones = inputs["JnB"].reshape(batch, 100, 2, 36, 2)
        joints, bones = joints_bones[..., :17, :], joints_bones[..., 17:, :]
        for b in range(batch):
            assert joints[b, : vl[b]].any(axis=(-1, -2)).all()
        np.testing.assert_allclose(bones, bst.create_bones(joints), atol=1e-6)
        start = joints[..., [s for s, _ in bst.COCO_BONE_PAIRS], :]
        end = joints[..., [e for _, e in bst.COCO_BONE_PAIRS], :]
        both = (start != 0) & (end != 0)
        np.testing.assert_allclose(bones[both], (end - start)[both], atol=1e-6)
        assert not bones[~both].any()


def test_generators_seeded() -> None:
    spec = SPECS["bst"]
    a, b, c = spec.example_inputs(3, seed=1), spec.example_inputs(3, seed=1), spec.example_inputs(3, seed=2)
    for name in spec.input_names:
        np.testing.assert_array_equal(a[name], b[name])
    assert not np.array_equal(a["JnB"], c["JnB"])


def test_generator_called_twice_advances() -> None:
    """Asking one input twice from the same rng gives a fresh clip, not a cached copy."""
    spec = SPECS["bst_0"]
    rng = np.random.default_rng(0)
    first, second = spec.inputs[0].generate(rng, 2), spec.inputs[0].generate(rng, 2)
    assert not np.array_equal(first, second)


def test_bst_0_generator_consistency() -> None:
    """Without ``pos`` the remaining inputs still share one clip (padding agrees with video_len)."""
    spec = SPECS["bst_0"]
    inputs = spec.example_inputs(batch=4, seed=9)
    for b, n in enumerate(inputs["video_len"]):
        assert inputs["JnB"][b, n - 1].any() and not inputs["JnB"][b, n:].any()
        assert not inputs["shuttle"][b, n:].any()


# ---------------------------------------------------------------------------------------------------------------------
# TorchScript
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_trace_batch_independent(name: str, built: dict[str, torch.nn.Module]) -> None:
    """A trace made at batch 2 runs at batch 3 and matches eager (video_len is a tensor input, not a constant)."""
    spec, model = SPECS[name], built[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, to_torch(spec.example_inputs(batch=2, seed=1), spec.input_names))
    inputs = spec.example_inputs(batch=3, seed=2)
    with torch.inference_mode():
        out = traced(*to_torch(inputs, spec.input_names)).numpy()
    assert out.shape == (3, 25)
    np.testing.assert_allclose(out, _logits(spec, model, inputs), atol=1e-5, rtol=0)


def test_script_fails_like_upstream(built: dict[str, torch.nn.Module]) -> None:
    """The faithful model keeps upstream's lambdas, so torch.jit.script fails as the guide's exporter observed."""
    with pytest.raises(Exception, match=r"[Ll]ambda"):
        torch.jit.script(built["bst_cg_ap"])
