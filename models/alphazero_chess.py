"""AlphaZero chess network: (14, 8, 8) board planes -> 4096 move log-probs + scalar value.

Source: the deployment guide's ``/app/backend`` FastAPI project (repository name unknown): ``neural_network.py``
(``ResidualBlock``, ``AlphaZeroNetwork(num_channels=128, num_res_blocks=6)``), ``model_export.py``
(``ModelExporter`` / ``ModelLoader``) and ``chess_engine.py`` (``ChessEngine.encode_board``, ``move_to_index``), as
described layer by layer in ``reference/MODELS.md`` section 4. 10,716,481 learnable parameters.

Deviations (all deliberate):
- The upstream constructor ends with ``self.to(device_manager.device)``; dropped (the harness places models).
- The upstream source is not public, so the submodule *names* (``conv_input``, ``res_blocks.N.conv1``,
  ``policy_fc``, ...) are ours; the layer structure, order and shapes follow MODELS.md exactly. A checkpoint
  written by the original backend may need a key mapping.
- The registered factory replaces the trivial BatchNorm state of the seeded init (mean 0, var 1, weight 1, bias 0),
  which would let an exporter that drops or mis-folds BN still pass parity: running stats are calibrated on seeded
  real positions, then every BN's stats and affine params are jittered from a fixed seed (``randomize_batchnorm``).
- Inputs are real chess positions: seeded random legal games played with the ``chess`` package from the start
  position, encoded exactly like ``ChessEngine.encode_board`` and permuted to NCHW as ``predict()`` does.
"""

from __future__ import annotations

import functools
from typing import Any

import chess
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from export_harness.models.proxy_tasks import ProxyTask, chess_task
from export_harness.models.spec import BATCH, InputSpec, ModelSpec, OutputSpec, TrainingRecipe
from export_harness.models.training import cached_head_inputs, fit

NUM_PLANES = 14
NUM_MOVES = 4096
REFERENCE_PARAMS = 10_716_481
BN_STATS_SEED = 20_251_007
"""Seed of the deterministic BatchNorm randomisation applied by the registered factory."""
MIN_PLIES = 4
MAX_PLIES = 60
"""Random legal plies played from the start position to make one input position (inclusive range)."""

ARCHITECTURE: dict[str, Any] = {
    "num_channels": 128,
    "num_res_blocks": 6,
    "input_shape": [NUM_PLANES, 8, 8],
    "output_shapes": {"policy": NUM_MOVES, "value": 1},
}
"""The ``architecture`` entry of the backend's PyTorch checkpoint format."""

_PIECE_ORDER = (chess.PAWN, chess.KNIGHT, chess.BISHOP, chess.ROOK, chess.QUEEN, chess.KING)


class ResidualBlock(nn.Module):
    """Conv3x3 -> BN -> ReLU -> Conv3x3 -> BN -> in-place ``+= residual`` -> ReLU (convs with bias)."""

    def __init__(self, num_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_channels, num_channels, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(num_channels)
        self.conv2 = nn.Conv2d(num_channels, num_channels, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm2d(num_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += residual
        out = F.relu(out)
        return out


class AlphaZeroNetwork(nn.Module):
    """Residual tower with a 32-channel policy head (log-softmax over 4096) and a 32-channel tanh value head."""

    def __init__(self, num_channels: int = 128, num_res_blocks: int = 6) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.num_res_blocks = num_res_blocks
        self.conv_input = nn.Conv2d(NUM_PLANES, num_channels, kernel_size=3, padding=1, bias=True)
        self.bn_input = nn.BatchNorm2d(num_channels)
        self.res_blocks = nn.ModuleList([ResidualBlock(num_channels) for _ in range(num_res_blocks)])
        self.policy_conv = nn.Conv2d(num_channels, 32, kernel_size=1)
        self.policy_bn = nn.BatchNorm2d(32)
        self.policy_fc = nn.Linear(32 * 8 * 8, NUM_MOVES)
        self.value_conv = nn.Conv2d(num_channels, 32, kernel_size=1)
        self.value_bn = nn.BatchNorm2d(32)
        self.value_fc1 = nn.Linear(32 * 8 * 8, 256)
        self.value_fc2 = nn.Linear(256, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.relu(self.bn_input(self.conv_input(x)))
        for block in self.res_blocks:
            x = block(x)
        policy = F.relu(self.policy_bn(self.policy_conv(x)))
        policy = policy.reshape(policy.size(0), -1)
        policy = F.log_softmax(self.policy_fc(policy), dim=1)
        value = F.relu(self.value_bn(self.value_conv(x)))
        value = value.reshape(value.size(0), -1)
        value = F.relu(self.value_fc1(value))
        value = torch.tanh(self.value_fc2(value))
        return policy, value


def encode_board(board: chess.Board) -> np.ndarray:
    """``ChessEngine.encode_board``: (8, 8, 14) float32 HWC, ``[rank, file, plane]``, rank 0 = white's first rank.

    Planes 0-5 white P N B R Q K, 6-11 black; plane 12 ones if white to move; plane 13 = 0.25 per castling right
    held (K, Q, k, q). No flipping for black.
    """
    planes = np.zeros((8, 8, NUM_PLANES), dtype=np.float32)
    for square, piece in board.piece_map().items():
        plane = _PIECE_ORDER.index(piece.piece_type) + (0 if piece.color == chess.WHITE else 6)
        planes[chess.square_rank(square), chess.square_file(square), plane] = 1.0
    if board.turn == chess.WHITE:
        planes[:, :, 12] = 1.0
    rights = (
        board.has_kingside_castling_rights(chess.WHITE),
        board.has_queenside_castling_rights(chess.WHITE),
        board.has_kingside_castling_rights(chess.BLACK),
        board.has_queenside_castling_rights(chess.BLACK),
    )
    planes[:, :, 13] = 0.25 * sum(rights)
    return planes


def board_to_input(board: chess.Board) -> np.ndarray:
    """Network input for one position: ``encode_board`` permuted to (14, 8, 8), as ``predict()`` does."""
    return np.ascontiguousarray(encode_board(board).transpose(2, 0, 1))


def move_to_index(move: chess.Move) -> int:
    """``from_square * 64 + to_square`` (python-chess numbering, a1=0 ... h8=63); promotions collapse."""
    return move.from_square * 64 + move.to_square


def legal_move_mask(board: chess.Board) -> np.ndarray:
    """Boolean [4096] mask of the policy indices of the legal moves (for legal-move top-1 agreement)."""
    mask = np.zeros(NUM_MOVES, dtype=bool)
    for move in board.legal_moves:
        mask[move_to_index(move)] = True
    return mask


def random_board(rng: np.random.Generator, min_plies: int = MIN_PLIES, max_plies: int = MAX_PLIES) -> chess.Board:
    """A real position: a seeded number of uniformly random legal plies from the start; ended games are redrawn.

    Legal moves are sorted by UCI before choosing, so the result does not depend on move-generation order.
    """
    while True:
        board = chess.Board()
        plies = int(rng.integers(min_plies, max_plies + 1))
        for _ in range(plies):
            moves = sorted(board.legal_moves, key=lambda m: m.uci())
            board.push(moves[int(rng.integers(len(moves)))])
            if board.is_game_over():
                break
        if not board.is_game_over():
            return board


def random_boards(rng: np.random.Generator, batch: int) -> list[chess.Board]:
    """``batch`` independent positions from :func:`random_board`."""
    return [random_board(rng) for _ in range(batch)]


def board_input(rng: np.random.Generator, batch: int) -> np.ndarray:
    """[batch, 14, 8, 8] float32 network input from seeded random legal games."""
    return np.stack([board_to_input(b) for b in random_boards(rng, batch)]).astype(np.float32)


def randomize_batchnorm(model: nn.Module, seed: int = BN_STATS_SEED, calibration_batch: int = 128) -> nn.Module:
    """Deterministic, non-trivial BatchNorm state (in place): calibrate on real positions, then jitter.

    1. Running stats are set to the exact per-channel statistics of ``calibration_batch`` seeded random positions
       (train-mode pass with cumulative averaging), so post-BN activations have realistic scale instead of the
       near-zero ones the trivial init gives (which made the policy argmax identical for every position).
    2. Then jittered: running_mean += 0.2 * std * N(0, 1), running_var *= U(0.7, 1.4), weight ~ U(0.75, 1.25),
       bias ~ N(0, 0.1).

    Depends only on ``seed``, the weights and the module order (not on the global RNG); the module's train/eval mode
    is preserved.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    x = torch.from_numpy(board_input(np.random.default_rng(seed), calibration_batch))
    was_training = model.training
    momenta = [bn.momentum for bn in bns]
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None
        model.train()
        model(x)
        for bn, momentum in zip(bns, momenta, strict=True):
            c = bn.num_features
            bn.momentum = momentum
            bn.running_mean.add_(0.2 * bn.running_var.sqrt() * torch.randn(c, generator=gen))
            bn.running_var.mul_(0.7 + 0.7 * torch.rand(c, generator=gen))
            bn.weight.copy_(0.75 + 0.5 * torch.rand(c, generator=gen))
            bn.bias.copy_(0.1 * torch.randn(c, generator=gen))
    return model.train(was_training)


def build_alphazero_chess() -> AlphaZeroNetwork:
    """Registered factory: ``AlphaZeroNetwork(128, 6)`` with calibrated-then-randomised BatchNorm."""
    return randomize_batchnorm(AlphaZeroNetwork(num_channels=128, num_res_blocks=6))


def checkpoint_dict(model: AlphaZeroNetwork, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """The backend's PyTorch checkpoint: ``{'model_state_dict', 'metadata', 'architecture'}``.

    Plain Python values only, so ``torch.load(..., weights_only=True)`` reads it back.
    """
    meta: dict[str, Any] = {"version": 1, "export_format": "pytorch", "device_used": "CPU"}
    meta.update(metadata or {})
    arch = dict(ARCHITECTURE, num_channels=model.num_channels, num_res_blocks=model.num_res_blocks)
    arch["output_shapes"] = dict(ARCHITECTURE["output_shapes"])
    arch["input_shape"] = list(ARCHITECTURE["input_shape"])
    return {"model_state_dict": model.state_dict(), "metadata": meta, "architecture": arch}


def train_policy_value_heads(spec: ModelSpec, model: nn.Module, task: ProxyTask) -> None:
    """Reference weights: the policy head (NLL of the book move, on book positions) and the value head (MSE of
    tanh(value) to the WDL sign, on endgames) fitted over the frozen seeded body. Train labels are rows of
    [policy index or -1, value target or 2 (none)]."""
    feats = cached_head_inputs(spec, model, task, ("policy_fc", "value_fc1"))
    modules = dict(model.named_modules())
    y = torch.from_numpy(task.train_labels)
    policy_rows = torch.nonzero(y[:, 0] >= 0).squeeze(1)
    value_rows = torch.nonzero(y[:, 1] != 2).squeeze(1)
    fc, fc1, fc2 = modules["policy_fc"], modules["value_fc1"], modules["value_fc2"]
    with torch.enable_grad():
        fit(list(fc.parameters()), lambda b: F.nll_loss(F.log_softmax(fc(feats["policy_fc"][policy_rows[b]]), 1),
                                                        y[policy_rows[b], 0]), len(policy_rows), 12, 1e-3, 128)
        fit(list(fc1.parameters()) + list(fc2.parameters()),
            lambda b: F.mse_loss(torch.tanh(fc2(F.relu(fc1(feats["value_fc1"][value_rows[b]])))).squeeze(1),
                                 y[value_rows[b], 1].float()), len(value_rows), 60, 1e-3, 128)


def specs() -> list[ModelSpec]:
    """The registered chess variant."""
    return [
        ModelSpec(
            name="alphazero_chess",
            family="alphazero_chess",
            guide_opsets=(11,),  # guide 003: opset 11, do_constant_folding=True
            architecture=ARCHITECTURE,  # guide 003's compatibility check before loading a checkpoint
            factory=build_alphazero_chess,
            inputs=(
                InputSpec(
                    name="board_input",
                    shape=(BATCH, NUM_PLANES, 8, 8),
                    dtype="float32",
                    layout="NCHW",
                    generator=board_input,
                    value_range=(0.0, 1.0),
                    description="encode_board() planes of real positions (seeded random legal games), CHW",
                ),
            ),
            outputs=(
                OutputSpec("policy_output", (BATCH, NUM_MOVES), kind="log_probs", description="from*64+to"),
                OutputSpec("value_output", (BATCH, 1), kind="value", description="tanh, in [-1, 1]"),
            ),
            reference_params=REFERENCE_PARAMS,
            description="AlphaZero chess net, 128 ch x 6 residual blocks, policy log-probs 4096 + value",
            smoke=True,
            notes=(
                "Seeded init plus deterministic BatchNorm calibration on real positions and randomisation (running "
                "stats and affine) so BN folding is exercised. Policy is log_softmax output; compare top-1 over legal "
                "moves for quantized targets."
            ),
            # accuracy: polyglot book moves (policy) and syzygy WDL signs (value) from the chess sdist's data
            task=functools.partial(chess_task, board_to_input, legal_move_mask, move_to_index),
            training=TrainingRecipe(train_policy_value_heads, name="heads:policy_fc,value_fc1"),
        )
    ]
