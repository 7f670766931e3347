"""Weights loading: every accepted format, safe-by-default unpickling, and one-line errors naming file and key."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from export_harness.models import tiny_ladeda
from export_harness.models.spec import run_torch
from export_harness.models.weights import WeightsError, load_weights, state_dict_hash

SPEC = next(s for s in tiny_ladeda.specs() if s.name == "tiny_ladeda")


@pytest.fixture
def trained() -> torch.nn.Module:
    """A model whose weights differ from the seeded init, so a successful load is observable."""
    model = SPEC.build()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.linspace(-0.1, 0.1, p.numel()).reshape(p.shape))
    return model


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    inputs = SPEC.example_inputs(2, seed=3)
    ra, rb = run_torch(SPEC, a, inputs), run_torch(SPEC, b, inputs)
    return all(np.array_equal(ra[k], rb[k]) for k in ra)


@pytest.mark.parametrize("layout", ["state_dict", "model_state_dict", "state_dict_key", "torchscript", "dataparallel"])
def test_accepted_formats(tmp_path: Path, trained, layout: str) -> None:
    path = tmp_path / "w.pt"
    state = trained.state_dict()
    if layout == "state_dict":
        torch.save(state, path)
    elif layout == "model_state_dict":  # the guides' checkpoint format
        torch.save({"model_state_dict": state, "metadata": {"epoch": 3}, "architecture": {"c": 8}}, path)
    elif layout == "state_dict_key":
        torch.save({"state_dict": state, "epoch": 3}, path)
    elif layout == "dataparallel":
        torch.save({f"module.{k}": v for k, v in state.items()}, path)
    else:
        torch.jit.save(torch.jit.trace(trained, torch.zeros(1, 3, 256, 256)), str(path))
    model = SPEC.build(path)
    assert state_dict_hash(model) == state_dict_hash(trained)
    assert _same_outputs(model, trained)
    assert not model.training


def test_full_pickle_refused_by_default_and_allowed_on_opt_in(tmp_path: Path, trained) -> None:
    path = tmp_path / "whole_model.pt"
    torch.save(trained, path)
    with pytest.raises(WeightsError, match=re.escape(str(path)) + ".*allow_pickle=True"):
        SPEC.build(path)
    assert _same_outputs(SPEC.build(path, allow_pickle=True), trained)


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_missing_key(tmp_path: Path, trained) -> None:
    state = trained.state_dict()
    del state["conv2.weight"]
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(WeightsError) as exc:
        SPEC.build(tmp_path / "w.pt")
    assert _one_line(exc) == f"{tmp_path / 'w.pt'}: missing key 'conv2.weight' (1 missing in total)"


def test_unexpected_key(tmp_path: Path, trained) -> None:
    torch.save({**trained.state_dict(), "head.extra": torch.zeros(2)}, tmp_path / "w.pt")
    with pytest.raises(WeightsError) as exc:
        SPEC.build(tmp_path / "w.pt")
    assert "unexpected key 'head.extra'" in _one_line(exc)


def test_shape_mismatch(tmp_path: Path, trained) -> None:
    torch.save({**trained.state_dict(), "fc.weight": torch.zeros(2, 8)}, tmp_path / "w.pt")
    with pytest.raises(WeightsError) as exc:
        SPEC.build(tmp_path / "w.pt")
    assert "shape mismatch for key 'fc.weight': file has [2, 8], model expects [1, 8]" in _one_line(exc)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04broken zip"])
def test_corrupt_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "corrupt.pt"
    path.write_bytes(content)
    with pytest.raises(WeightsError) as exc:
        SPEC.build(path)
    assert _one_line(exc).startswith(f"{path}: not a readable PyTorch checkpoint")


def test_truncated_checkpoint(tmp_path: Path, trained) -> None:
    path = tmp_path / "w.pt"
    torch.save(trained.state_dict(), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(WeightsError, match="not a readable PyTorch checkpoint"):
        SPEC.build(path)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="does not exist"):
        SPEC.build(tmp_path / "nope.pt")
    with pytest.raises(WeightsError, match="found a directory"):
        SPEC.build(tmp_path)


def test_non_tensor_entry(tmp_path: Path, trained) -> None:
    torch.save({**trained.state_dict(), "note": "hello"}, tmp_path / "w.pt")
    with pytest.raises(WeightsError, match="key 'note' is not a tensor"):
        load_weights(SPEC.build(), tmp_path / "w.pt")


def test_seeded_init_does_not_depend_on_thread_count() -> None:
    """sign_gru's orthogonal ``weight_hh`` init is a QR whose rounding moved with torch's thread count: the same
    seed gave two weights identities (and two trained-weights cache entries) in a 1-thread and a 2-thread process."""
    from export_harness.models import sign_language

    spec = next(s for s in sign_language.specs() if s.name == "sign_gru")
    threads = torch.get_num_threads()
    try:
        hashes = set()
        for n in (1, 2):
            torch.set_num_threads(n)
            hashes.add(state_dict_hash(spec.build()))
    finally:
        torch.set_num_threads(threads)
    assert len(hashes) == 1
    assert torch.get_num_threads() == threads


def test_checkpoint_architecture_is_checked_before_loading(tmp_path: Path) -> None:
    """Guide 003: a checkpoint states its architecture (channels, blocks); a mismatch is one line naming the field,
    before any key or shape error; an agreeing checkpoint loads."""
    from export_harness.models import alphazero_chess

    spec = alphazero_chess.specs()[0]
    model = spec.build()
    good = alphazero_chess.checkpoint_dict(model)
    torch.save(good, tmp_path / "good.pt")
    assert state_dict_hash(spec.build(tmp_path / "good.pt")) == state_dict_hash(model)
    bad = {**good, "architecture": {**good["architecture"], "num_res_blocks": 10}}
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(WeightsError, match=r"bad\.pt: architecture mismatch, num_res_blocks: checkpoint 10, model 6$"):
        spec.build(tmp_path / "bad.pt")
