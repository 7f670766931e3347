"""Family tests for the AlphaZero chess network (models/alphazero_chess.py): architecture, encoding, checkpoints."""

from __future__ import annotations

import warnings
from pathlib import Path

import chess
import numpy as np
import pytest
import torch

from export_harness.converters.expectations import Expectations
from export_harness.models import alphazero_chess as az
from export_harness.models.spec import ModelSpec, count_parameters, run_torch

DECLARED = Expectations.load(Path(__file__).resolve().parents[1] / "baselines" / "expectations.toml")

SPEC: ModelSpec = az.specs()[0]


@pytest.fixture(scope="module")
def model() -> az.AlphaZeroNetwork:
    return SPEC.build()


def test_registered_variant() -> None:
    assert [s.name for s in az.specs()] == ["alphazero_chess"]
    assert SPEC.family == "alphazero_chess" and SPEC.smoke
    assert DECLARED.for_cell("alphazero_chess-torchscript:script") is None  # plain module: scripts
    assert SPEC.input_names == ["board_input"]
    assert SPEC.inputs[0].shape == ("B", 14, 8, 8) and SPEC.inputs[0].layout == "NCHW"
    assert SPEC.output_names == ["policy_output", "value_output"]
    assert [o.kind for o in SPEC.outputs] == ["log_probs", "value"]
    assert SPEC.outputs[0].shape == ("B", 4096) and SPEC.outputs[1].shape == ("B", 1)


def test_param_count(model: az.AlphaZeroNetwork) -> None:
    assert count_parameters(model) == az.REFERENCE_PARAMS == SPEC.reference_params == 10_716_481
    assert count_parameters(model.policy_fc) == 8_392_704


def test_architecture_details(model: az.AlphaZeroNetwork) -> None:
    assert model.conv_input.bias is not None and model.conv_input.kernel_size == (3, 3)
    assert len(model.res_blocks) == 6
    for block in model.res_blocks:
        assert block.conv1.bias is not None and block.conv2.bias is not None
    assert model.policy_conv.out_channels == 32 and model.value_conv.out_channels == 32
    assert (model.policy_fc.in_features, model.policy_fc.out_features) == (2048, 4096)
    assert (model.value_fc1.in_features, model.value_fc1.out_features) == (2048, 256)
    assert (model.value_fc2.in_features, model.value_fc2.out_features) == (256, 1)


@pytest.mark.parametrize("batch", [1, 3])
def test_forward_shapes_and_ranges(model: az.AlphaZeroNetwork, batch: int) -> None:
    outs = run_torch(SPEC, model, SPEC.example_inputs(batch))
    policy, value = outs["policy_output"], outs["value_output"]
    assert policy.shape == (batch, 4096) and value.shape == (batch, 1)
    assert policy.dtype == np.float32 and value.dtype == np.float32
    assert np.isfinite(policy).all() and np.isfinite(value).all()
    np.testing.assert_allclose(np.exp(policy.astype(np.float64)).sum(axis=1), 1.0, atol=1e-5)
    assert (policy <= 0).all()
    assert (np.abs(value) <= 1.0).all()


def test_outputs_depend_on_position(model: az.AlphaZeroNetwork) -> None:
    """Non-degenerate outputs: different positions give different top-1 moves and values."""
    outs = run_torch(SPEC, model, SPEC.example_inputs(16))
    assert len(set(outs["policy_output"].argmax(axis=1).tolist())) > 4
    assert outs["value_output"].std() > 1e-2


def test_batchnorm_randomised_deterministically(model: az.AlphaZeroNetwork) -> None:
    other = SPEC.build().state_dict()
    sd = model.state_dict()
    for key in sd:
        assert torch.equal(sd[key], other[key]), key
    for name in ("bn_input", "res_blocks.0.bn1", "res_blocks.5.bn2", "policy_bn", "value_bn"):
        mean, var = sd[f"{name}.running_mean"], sd[f"{name}.running_var"]
        assert not torch.allclose(mean, torch.zeros_like(mean))
        assert not torch.allclose(var, torch.ones_like(var))
        assert (var > 0).all()


def test_torchscript_trace_and_script(model: az.AlphaZeroNetwork) -> None:
    x = torch.from_numpy(SPEC.example_inputs(2)["board_input"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, x)
        scripted = torch.jit.script(model)
    x3 = torch.from_numpy(SPEC.example_inputs(3, seed=1)["board_input"])
    with torch.no_grad():
        ref = model(x3)
        for module in (traced, scripted):
            for got, want in zip(module(x3), ref, strict=True):
                torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_encode_start_position() -> None:
    planes = az.encode_board(chess.Board())
    assert planes.shape == (8, 8, 14) and planes.dtype == np.float32
    assert (planes[1, :, 0] == 1).all() and planes[:, :, 0].sum() == 8  # white pawns on rank index 1
    assert (planes[6, :, 6] == 1).all() and planes[:, :, 6].sum() == 8  # black pawns on rank index 6
    assert planes[0, 4, 5] == 1 and planes[:, :, 5].sum() == 1  # white king e1
    assert planes[7, 4, 11] == 1 and planes[:, :, 11].sum() == 1  # black king e8
    assert planes[0, 3, 4] == 1 and planes[7, 3, 10] == 1  # queens on d-file
    assert planes[0, 1, 1] == planes[0, 6, 1] == 1  # white knights b1, g1
    assert planes[0, 2, 2] == planes[0, 5, 2] == 1  # white bishops c1, f1
    assert planes[0, 0, 3] == planes[0, 7, 3] == 1  # white rooks a1, h1
    assert planes[:, :, :12].sum() == 32
    assert planes[:, :, :12].sum(axis=2).max() == 1  # at most one piece per square
    assert (planes[:, :, 12] == 1).all()  # white to move
    assert (planes[:, :, 13] == 1.0).all()  # four castling rights x 0.25


def test_encode_side_to_move_and_castling() -> None:
    board = chess.Board()
    board.push_uci("e2e4")
    planes = az.encode_board(board)
    assert (planes[:, :, 12] == 0).all()  # black to move, no flipping
    assert planes[3, 4, 0] == 1 and planes[1, 4, 0] == 0
    partial = az.encode_board(chess.Board("r3k2r/8/8/8/8/8/8/R3K2R w Kq - 0 1"))
    assert (partial[:, :, 13] == 0.5).all()
    none = az.encode_board(chess.Board("4k3/8/8/8/8/8/8/4K3 b - - 0 1"))
    assert (none[:, :, 13] == 0).all() and (none[:, :, 12] == 0).all()


def test_board_to_input_is_chw_permutation() -> None:
    board = chess.Board()
    chw = az.board_to_input(board)
    assert chw.shape == (14, 8, 8)
    assert np.array_equal(chw, np.transpose(az.encode_board(board), (2, 0, 1)))


def test_move_to_index() -> None:
    assert az.move_to_index(chess.Move.from_uci("e2e4")) == chess.E2 * 64 + chess.E4 == 796
    assert az.move_to_index(chess.Move(chess.A1, chess.A1)) == 0
    assert az.move_to_index(chess.Move.from_uci("h8h7")) == 63 * 64 + 55
    # Promotions collapse onto one index.
    assert az.move_to_index(chess.Move.from_uci("a7a8q")) == az.move_to_index(chess.Move.from_uci("a7a8n"))
    mask = az.legal_move_mask(chess.Board())
    assert mask.shape == (4096,) and mask.sum() == 20 and mask[796]


def test_random_board_is_real_and_unfinished() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        board = az.random_board(rng)
        assert az.MIN_PLIES <= len(board.move_stack) <= az.MAX_PLIES
        assert not board.is_game_over()
        assert board.is_valid()
        # Replaying the moves from the start reproduces the position: it is reachable by legal play.
        replay = chess.Board()
        for move in board.move_stack:
            assert replay.is_legal(move)
            replay.push(move)
        assert replay.fen() == board.fen()


def test_generator_deterministic() -> None:
    a = SPEC.example_inputs(4, seed=11)["board_input"]
    b = SPEC.example_inputs(4, seed=11)["board_input"]
    assert np.array_equal(a, b)
    assert not np.array_equal(a, SPEC.example_inputs(4, seed=12)["board_input"])
    rng1, rng2 = np.random.default_rng(5), np.random.default_rng(5)
    assert [x.fen() for x in az.random_boards(rng1, 3)] == [x.fen() for x in az.random_boards(rng2, 3)]


def test_generator_matches_encoding() -> None:
    """The spec input is exactly encode_board() of the boards the same rng yields, permuted to CHW."""
    x = az.board_input(np.random.default_rng(9), 5)
    boards = az.random_boards(np.random.default_rng(9), 5)
    expected = np.stack([np.transpose(az.encode_board(b), (2, 0, 1)) for b in boards])
    assert x.dtype == np.float32 and np.array_equal(x, expected)


def test_generated_planes_are_valid() -> None:
    x = SPEC.example_inputs(8, seed=2)["board_input"]
    assert x.shape == (8, 14, 8, 8) and x.dtype == np.float32
    lo, hi = SPEC.inputs[0].value_range
    assert x.min() >= lo and x.max() <= hi
    assert set(np.unique(x[:, :13]).tolist()) <= {0.0, 1.0}
    for sample in x:
        assert sample[5].sum() == 1 and sample[11].sum() == 1  # one king each
        assert sample[:12].sum(axis=0).max() <= 1
        assert sample[:12].sum() <= 32  # captures allowed
        assert len(np.unique(sample[12])) == 1 and len(np.unique(sample[13])) == 1
        assert sample[13, 0, 0] in (0.0, 0.25, 0.5, 0.75, 1.0)
    assert {float(s[12, 0, 0]) for s in x} == {0.0, 1.0}  # both sides to move occur (seeded)


def test_checkpoint_dict_roundtrip(model: az.AlphaZeroNetwork, tmp_path: Path) -> None:
    ckpt = az.checkpoint_dict(model, {"exported_by": "harness"})
    assert set(ckpt) == {"model_state_dict", "metadata", "architecture"}
    assert ckpt["architecture"] == {
        "num_channels": 128,
        "num_res_blocks": 6,
        "input_shape": [14, 8, 8],
        "output_shapes": {"policy": 4096, "value": 1},
    }
    assert ckpt["metadata"]["exported_by"] == "harness" and ckpt["metadata"]["export_format"] == "pytorch"
    path = tmp_path / "model_v1_export.pt"
    torch.save(ckpt, path)
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    arch = loaded["architecture"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)  # different init: the weights must come from the checkpoint
        fresh = az.AlphaZeroNetwork(arch["num_channels"], arch["num_res_blocks"])
    fresh.load_state_dict(loaded["model_state_dict"], strict=True)
    fresh.eval()
    x = torch.from_numpy(SPEC.example_inputs(2)["board_input"])
    with torch.no_grad():
        for got, want in zip(fresh(x), model(x), strict=True):
            torch.testing.assert_close(got, want, atol=0, rtol=0)
