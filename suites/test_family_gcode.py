"""Family checks for the G-code fingerprinting graphs (``models/gcode.py``): faithfulness, I/O contract, greedy loop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from export_harness.converters.expectations import Expectations
from export_harness.models import gcode
from export_harness.models.spec import ModelSpec, count_parameters, run_torch, to_torch

DECLARED = Expectations.load(Path(__file__).resolve().parents[1] / "baselines" / "expectations.toml")

NAMES = ("gcode_fingerprint", "gcode_decoder_step")


@pytest.fixture(scope="module")
def specs() -> dict[str, ModelSpec]:
    return {s.name: s for s in gcode.specs()}


@pytest.fixture(scope="module")
def encoder(specs: dict[str, ModelSpec]) -> gcode.GCodeFingerprintEncoder:
    return specs["gcode_fingerprint"].build()


@pytest.fixture(scope="module")
def step(specs: dict[str, ModelSpec]) -> gcode.GCodeDecoderStep:
    return specs["gcode_decoder_step"].build()


def _diverse_step(spec: ModelSpec) -> gcode.GCodeDecoderStep:
    """The seeded step model with a smaller tied embedding: random-init greedy decoding then varies its tokens."""
    model = spec.build()
    with torch.no_grad():
        model.gcode_head.embed.weight.mul_(0.05)
    return model


def test_registered_specs(specs: dict[str, ModelSpec]) -> None:
    assert tuple(specs) == NAMES
    assert [n for n, s in specs.items() if s.smoke] == ["gcode_fingerprint"]
    fp, st = specs["gcode_fingerprint"], specs["gcode_decoder_step"]
    assert fp.input_names == ["continuous", "categorical"] and fp.output_names == ["fingerprint", "memory"]
    assert [i.shape for i in fp.inputs] == [("B", "seq", 135), ("B", "seq", 4)]
    assert fp.axis_lengths == {"seq": (64, 128)}
    assert [i.dtype for i in fp.inputs] == ["float32", "float32"]
    assert [o.kind for o in fp.outputs] == ["embedding", "tensor"]
    assert st.input_names == ["memory", "tokens"] and st.output_names == ["next_logits"]
    assert [(i.shape, i.dtype) for i in st.inputs] == [(("B", 64, 128), "float32"), (("B", 32), "int64")]
    assert st.outputs[0].shape == ("B", 170) and st.outputs[0].kind == "logits"
    for spec in specs.values():
        assert spec.family == "gcode" and spec.dynamic_batch
        assert DECLARED.for_cell(f"{spec.name}-torchscript:script") is not None


def test_fingerprint_param_count(specs: dict[str, ModelSpec], encoder: gcode.GCodeFingerprintEncoder) -> None:
    assert specs["gcode_fingerprint"].reference_params == 878_850
    assert count_parameters(encoder) == 878_850
    parts = {
        "encoders": 52_096,
        "mod_emb": 256,
        "fusion": 66_306,
        "dtae": 396_544,  # encoder half only
        "temporal": 264_192,
        "norm": 256,
        "fp_head": 99_200,
    }
    assert {name: count_parameters(getattr(encoder, name)) for name in parts} == parts
    fusion = encoder.fusion
    assert count_parameters(fusion.attn) == 66_048 and count_parameters(fusion.ln) == 256 and fusion.gates.numel() == 2


def test_full_dtae_param_count() -> None:
    dtae = gcode.DTAE(128, nhead=4)
    assert count_parameters(dtae.encoder) == 396_544 and count_parameters(dtae.decoder) == 529_152


def test_decoder_param_count_and_tying(specs: dict[str, ModelSpec], step: gcode.GCodeDecoderStep) -> None:
    assert specs["gcode_decoder_step"].reference_params == 550_912
    head = step.gcode_head
    assert head.proj.weight is head.embed.weight
    assert head.proj.bias is None
    assert count_parameters(step) == 550_912  # the tied matrix is counted once
    with_duplicates = sum(p.numel() for _, p in step.named_parameters(remove_duplicate=False))
    assert with_duplicates == 550_912 + 170 * 128
    assert {"gcode_head.embed.weight", "gcode_head.proj.weight"} <= set(step.state_dict())


def test_reference_key_names(encoder: gcode.GCodeFingerprintEncoder) -> None:
    """Attribute names follow ``MM_DTAE_LSTM``, so a reference checkpoint loads with strict=False."""
    keys = set(encoder.state_dict())
    for key in (
        "encoders.0.proj.0.weight",
        "encoders.1.proj.4.weight",
        "mod_emb.weight",
        "fusion.attn.in_proj_weight",
        "fusion.ln.weight",
        "fusion.gates",
        "dtae.encoder.layers.1.linear2.weight",
        "temporal.weight_hh_l1",
        "norm.bias",
        "fp_head.query",
        "fp_head.attn_pool.out_proj.weight",
        "fp_head.proj.2.weight",
    ):
        assert key in keys, key
    layer = encoder.dtae.encoder.layers[0]
    assert not layer.norm_first and layer.self_attn.batch_first and layer.linear1.out_features == 512


@pytest.mark.parametrize("batch", [1, 3])
def test_fingerprint_forward_contract(specs: dict[str, ModelSpec], encoder: torch.nn.Module, batch: int) -> None:
    spec = specs["gcode_fingerprint"]
    outs = run_torch(spec, encoder, spec.example_inputs(batch))
    assert outs["fingerprint"].shape == (batch, 128) and outs["memory"].shape == (batch, 64, 128)
    for value in outs.values():
        assert value.dtype == np.float32 and np.isfinite(value).all()
    np.testing.assert_allclose(np.linalg.norm(outs["fingerprint"], axis=-1), 1.0, atol=1e-5)
    # memory is LayerNorm output: per-position mean 0, std 1 (default affine)
    np.testing.assert_allclose(outs["memory"].mean(-1), 0.0, atol=1e-4)
    np.testing.assert_allclose(outs["memory"].std(-1), 1.0, atol=1e-2)


@pytest.mark.parametrize("batch", [1, 3])
def test_decoder_step_forward_contract(specs: dict[str, ModelSpec], step: torch.nn.Module, batch: int) -> None:
    spec = specs["gcode_decoder_step"]
    outs = run_torch(spec, step, spec.example_inputs(batch))
    assert outs["next_logits"].shape == (batch, 170) and outs["next_logits"].dtype == np.float32
    assert np.isfinite(outs["next_logits"]).all()


@pytest.mark.parametrize("name", NAMES)
def test_eval_is_deterministic(specs: dict[str, ModelSpec], name: str) -> None:
    spec = specs[name]
    model = spec.build()
    inputs = spec.example_inputs(3)
    a, b = run_torch(spec, model, inputs), run_torch(spec, model, inputs)
    c = run_torch(spec, spec.build(), inputs)  # seeded init
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
        np.testing.assert_array_equal(a[key], c[key])


def test_reference_noise_in_eval_is_nondeterministic(specs: dict[str, ModelSpec]) -> None:
    """The documented deviation: the reference DTAE adds noise even in eval; ``noise_in_eval=True`` restores it."""
    model = specs["gcode_fingerprint"].build()
    model.dtae.noise_in_eval = True
    cont, cat = to_torch(specs["gcode_fingerprint"].example_inputs(2), ["continuous", "categorical"])
    with torch.no_grad():
        first, second = model(cont, cat)[0], model(cont, cat)[0]
    assert not torch.equal(first, second)


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors:UserWarning")
def test_full_lengths_match_no_mask(specs: dict[str, ModelSpec], encoder: gcode.GCodeFingerprintEncoder) -> None:
    """The registered graph omits ``lengths``; full windows through the reference's masked path give the same output."""
    cont, cat = to_torch(specs["gcode_fingerprint"].example_inputs(3), ["continuous", "categorical"])
    with torch.no_grad():
        ref = encoder(cont, cat)
        masked = encoder(cont, cat, lengths=torch.full((3,), 64))
        short = encoder(cont, cat, lengths=torch.tensor([64, 40, 10]))
    for r, m in zip(ref, masked, strict=True):
        torch.testing.assert_close(m, r, atol=1e-5, rtol=1e-5)
    assert torch.count_nonzero(short[1][2, 10:]) > 0  # LSTM runs over the zeroed pads, as in the reference
    assert not torch.allclose(short[0][2], ref[0][2])


def test_fusion_sdpa_ignores_mha_weights(encoder: gcode.GCodeFingerprintEncoder) -> None:
    """As at 155b923: the SDPA path uses no projections; the MultiheadAttention only serves the fallback path."""
    fusion = encoder.fusion
    assert fusion.use_flash
    g = torch.Generator().manual_seed(0)
    mods = [torch.randn(2, 64, 128, generator=g), torch.randn(2, 64, 128, generator=g)]
    with torch.no_grad():
        ref = fusion(mods, None)[0]
        saved = {k: v.clone() for k, v in fusion.attn.state_dict().items()}
        for p in fusion.attn.parameters():
            p.add_(1.0)
        torch.testing.assert_close(fusion(mods, None)[0], ref, atol=0, rtol=0)
        fusion.attn.load_state_dict(saved)
        # The SDPA path equals plain per-head softmax(q k^T / sqrt(32)) v on the raw features.
        q = torch.stack(mods, 2).mean(2)
        kv = torch.stack(mods, 2).flatten(1, 2)
        qh, kh = q.view(2, 64, 4, 32).transpose(1, 2), kv.view(2, 128, 4, 32).transpose(1, 2)
        attn = torch.softmax(qh @ kh.transpose(-1, -2) / 32**0.5, -1) @ kh
        attn = attn.transpose(1, 2).reshape(2, 64, 128)
        gates = torch.sigmoid(fusion.gates)
        gated = (gates[0] * mods[0] + gates[1] * mods[1]) / (gates.sum() + 1e-6)
        manual = fusion.ln(fusion.ln(q + attn) + gated)
        torch.testing.assert_close(ref, manual, atol=1e-5, rtol=1e-5)
        fusion.use_flash = False
        try:
            fallback = fusion(mods, None)[0]
        finally:
            fusion.use_flash = True
    assert not torch.allclose(fallback, ref, atol=1e-3)


def test_input_generators(specs: dict[str, ModelSpec]) -> None:
    fp = specs["gcode_fingerprint"].example_inputs(4)
    cont, cat = fp["continuous"], fp["categorical"]
    assert cont.dtype == np.float32 and 0.5 < cont.std() < 2.0
    assert np.abs(np.diff(cont, axis=1)).mean() < 0.5 * cont.std()  # smooth in time
    corr = np.corrcoef(cont.reshape(-1, 135).T)
    assert np.nanmean(np.abs(corr[np.triu_indices(135, 1)])) > 0.1  # channels share latent motions
    assert cat.dtype == np.float32 and set(np.unique(cat)) <= {0.0, 1.0, 2.0, 3.0, 4.0}
    assert len(np.unique(cat)) >= 3

    st = specs["gcode_decoder_step"].example_inputs(16)
    memory, tokens = st["memory"], st["tokens"]
    assert memory.dtype == np.float32 and abs(memory.mean()) < 0.05 and abs(memory.std() - 1.0) < 0.05
    assert tokens.dtype == np.int64 and (tokens[:, 0] == gcode.BOS_ID).all()
    n_valid = (tokens != gcode.PAD_ID).sum(1)
    for row, n in zip(tokens, n_valid, strict=True):
        assert (row[n:] == gcode.PAD_ID).all()  # PAD only as a tail
        assert ((row[1:n] >= 5) & (row[1:n] < 170)).all()
    assert n_valid.min() >= 1 and len(np.unique(n_valid)) > 1


def _full_decoder_last_logits(step: gcode.GCodeDecoderStep, memory: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Reference: teacher-forced GCodeLMHead on each unpadded prefix, logits at its last position."""
    rows = []
    for i in range(tokens.size(0)):
        n = int((tokens[i] != gcode.PAD_ID).sum())
        rows.append(step.gcode_head(memory[i : i + 1], tokens[i : i + 1, :n])[0, -1])
    return torch.stack(rows)


@pytest.mark.parametrize("batch", [1, 5])
def test_step_matches_full_decoder(specs: dict[str, ModelSpec], step: gcode.GCodeDecoderStep, batch: int) -> None:
    memory, tokens = to_torch(specs["gcode_decoder_step"].example_inputs(batch, seed=3), ["memory", "tokens"])
    with torch.no_grad():
        got = step(memory, tokens)
        ref = _full_decoder_last_logits(step, memory, tokens)
        padded = step.gcode_head(memory, tokens)  # causal: PAD tail cannot reach earlier positions
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    last = (tokens != gcode.PAD_ID).sum(1) - 1
    torch.testing.assert_close(got, padded[torch.arange(batch), last], atol=1e-4, rtol=1e-4)


def _host_greedy(step: torch.nn.Module, memory: torch.Tensor, n_tokens: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Greedy decoding with the fixed-length step graph: write each argmax into the PAD tail."""
    tokens = torch.full((memory.size(0), gcode.STEP_LEN), gcode.PAD_ID, dtype=torch.long)
    tokens[:, 0] = gcode.BOS_ID
    logits = []
    for i in range(n_tokens):
        out = step(memory, tokens)
        logits.append(out)
        tokens[:, i + 1] = out.argmax(-1)
    return tokens[:, 1 : n_tokens + 1], logits


@pytest.mark.parametrize("variant", ["registered", "diverse"])
def test_generate_matches_host_loop(specs: dict[str, ModelSpec], step: gcode.GCodeDecoderStep, variant: str) -> None:
    spec = specs["gcode_decoder_step"]
    model = step if variant == "registered" else _diverse_step(spec)
    (memory,) = to_torch(spec.example_inputs(3, seed=1), ["memory"])
    if variant == "diverse":
        memory = memory * 20.0  # cross-attention then dominates: tokens differ across samples and steps
    n_tokens = 8
    with torch.no_grad():
        reference = model.gcode_head.generate(memory, n_tokens, bos_id=gcode.BOS_ID)
        host, logits = _host_greedy(model, memory, n_tokens)
        for i, out in enumerate(logits):  # every step also matches the teacher-forced full decoder
            prefix = torch.cat([torch.full((3, 1), gcode.BOS_ID), reference[:, :i]], 1)
            torch.testing.assert_close(out, model.gcode_head(memory, prefix)[:, -1], atol=1e-4, rtol=1e-4)
    assert reference.shape == (3, n_tokens) and reference.dtype == torch.long
    torch.testing.assert_close(host, reference, atol=0, rtol=0)
    assert (reference != gcode.PAD_ID).all()
    if variant == "diverse":
        assert len(torch.unique(reference)) > 1


@pytest.mark.parametrize("name", NAMES)
def test_jit_trace(specs: dict[str, ModelSpec], name: str) -> None:
    """Tracing works (with grad enabled it records the slow, exportable attention path). ``check_trace`` is off:
    torch re-traces under ``torch.no_grad()``, where nn.MultiheadAttention / TransformerEncoderLayer take their fused
    fast paths, so the two graphs differ by construction; the traced module is checked numerically instead."""
    spec = specs[name]
    model = spec.build()
    args3 = to_torch(spec.example_inputs(3), spec.input_names)
    traced = torch.jit.trace(model, args3, check_trace=False)
    graph = str(traced.inlined_graph)
    assert "_transformer_encoder_layer_fwd" not in graph and "_native_multi_head_attention" not in graph
    args1 = to_torch(spec.example_inputs(1, seed=7), spec.input_names)
    with torch.no_grad():
        for args in (args3, args1):
            got, want = traced(*args), model(*args)
            got = got if isinstance(got, tuple) else (got,)
            want = want if isinstance(want, tuple) else (want,)
            for g, w in zip(got, want, strict=True):
                torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4)
