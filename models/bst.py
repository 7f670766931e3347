"""BST, the Badminton Stroke-type Transformer: BST_0, BST, BST_CG, BST_AP and BST_CG_AP.

Source: ``Va6lue/BST-Badminton-Stroke-type-Transformer`` (CVPRW 2026, arXiv 2502.21085), HEAD 2ef1797:
``stroke_classification/model/bst.py`` (variants, cross attention) and ``stroke_classification/model/tempose.py``
(TCN, MLP, MLP_Head, FeedForward, MultiHeadAttention, TransformerEncoder). Hyper-parameters follow
``bst_main.py``/``bst_infer.py`` and the deployment guide's exporter: in_dim 72, seq_len 100, n_class 25, n_people 2,
d_model 100, d_head 128, n_head 6, depth_tem 2, depth_inter 1, drop_p 0.3, mlp_d_scale 4, tcn_kernel_size 5.

What is kept exactly as upstream, on purpose:

- the computation, op for op (so traced/exported graphs contain the same ops as the upstream model);
- module attribute names and nesting, so ``state_dict`` keys match upstream checkpoints;
- module registration order and every RNG draw (``torch.randn`` class tokens, default layer init, then the upstream
  re-init), so under the same ``torch.manual_seed`` the weights are bit-identical to the upstream constructor's;
- the TorchScript-hostile constructs: ``map(lambda ...)`` in the attention blocks and the backbone, and
  ``mask: Tensor = None`` / untyped ``mask=None`` defaults. ``torch.jit.script`` therefore fails as it does upstream;
  ``torch.jit.trace`` works.

Deviations (none changes the numbers):

- The five variant classes share one backbone class (``_BSTBackbone``) instead of repeating it five times; each
  variant only adds its head, with the upstream ``forward`` signature.
- ``positional_encodings.torch_encodings.PositionalEncoding1D`` (6.0.4) is reproduced inline
  (:func:`sincos_position_encoding`, interleaved sin/cos, float32) instead of adding the dependency.

Reference behaviour worth knowing (asserted in ``suites/test_family_bst.py``):

- The attention masks drop frames ``>= video_len``, but the TCN front end (two dilated convs, receptive field
  +-8 frames) still reads up to 8 padded frames past ``video_len``. Real clips are zero-padded, and so are the
  generators here; only frames ``>= video_len + 8`` are provably irrelevant to the logits.
- ``video_len == 0`` masks every key of the cross attention, so softmax over all ``-inf`` yields NaN logits. Valid
  inputs have ``1 <= video_len <= seq_len``; the generators draw ``video_len`` in [30, 100].
- ``seq_len`` is baked into the positional-embedding parameters, so only the batch dimension can be dynamic.
"""

import functools
import math
import threading
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from export_harness.models.proxy_tasks import bst_task
from export_harness.models.spec import BATCH, Generator, InputSpec, ModelSpec, OutputSpec
from export_harness.models.synthetic import smooth_series
from export_harness.models.training import heads_recipe

# --------------------------------------------------------------------------------------------------------------------
# Building blocks (tempose.py)
# --------------------------------------------------------------------------------------------------------------------


class MLP(nn.Module):
    """``Linear(i, h) -> GELU -> Dropout -> Linear(h, o)`` (TemPose MLP_Block)."""

    def __init__(self, in_dim: int, out_dim: int, hd_dim: int, drop_p: float = 0.0) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hd_dim),
            nn.GELU(),
            nn.Dropout(drop_p, inplace=True),
            nn.Linear(hd_dim, out_dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(x)


class MLP_Head(nn.Module):
    """``LayerNorm(i) -> MLP(i, o, h)`` (TemPose MLP_Head)."""

    def __init__(self, in_dim: int, out_dim: int, hd_dim: int, drop_p: float = 0.0) -> None:
        super().__init__()
        self.layer_norm = nn.LayerNorm(in_dim)
        self.mlp = MLP(in_dim, out_dim, hd_dim, drop_p)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer_norm(x)
        x = self.mlp(x)
        return x


class FeedForward(nn.Module):
    """``MLP`` followed by ``Dropout`` (TemPose FeedForward)."""

    def __init__(self, in_dim: int, out_dim: int, hd_dim: int, drop_p: float = 0.0) -> None:
        super().__init__()
        self.mlp = MLP(in_dim, out_dim, hd_dim, drop_p)
        self.dropout = nn.Dropout(drop_p, inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.mlp(x)
        x = self.dropout(x)
        return x


class MultiHeadAttention(nn.Module):
    """Hand-written masked multi-head self-attention (TemPose Attention); ``d_cat = d_head * n_head``."""

    def __init__(self, d_model: int, d_head: int, n_head: int, drop_p: float) -> None:
        super().__init__()
        d_cat = d_head * n_head

        self.h = n_head
        self.to_qkv = nn.Linear(d_model, d_cat * 3, bias=False)
        self.scale = d_head**-0.5

        self.attend = nn.Sequential(
            nn.Softmax(dim=-1),
            nn.Dropout(drop_p),  # not inplace, as upstream
        )

        self.tail = (
            nn.Sequential(nn.Linear(d_cat, d_model), nn.Dropout(drop_p, inplace=True))
            if n_head != 1 or d_cat != d_model
            else nn.Identity()
        )

    # ``mask: Tensor = None`` (not Optional[Tensor]) is upstream's annotation; kept so torch.jit.script fails alike.
    def forward(self, x: Tensor, mask: Tensor = None) -> Tensor:  # type: ignore[assignment]
        # x: (b*n, t, d_model)
        bn, t, _ = x.shape

        qkv: Tensor = self.to_qkv(x)
        qkv = qkv.view(bn, t, self.h, -1).chunk(3, dim=-1)
        q, k, v = map(lambda ts: ts.transpose(1, 2), qkv)
        # q, k, v: (bn, h, t, d_head)

        dots: Tensor = (q.contiguous() @ k.transpose(-1, -2).contiguous()) * self.scale
        # dots: (bn, h, t, t)
        if mask is not None:
            # mask: (bn, t), bool; compared with 0.0 as upstream (Cast + Equal in ONNX)
            mask = mask.view(bn, 1, 1, t)
            dots = dots.masked_fill(mask == 0.0, -torch.inf)

        coef = self.attend(dots)
        attention: Tensor = coef @ v.contiguous()
        # attention: (bn, h, t, d_head)

        out = attention.transpose(1, 2).reshape(bn, t, -1)
        out = self.tail(out)
        return out  # (bn, t, d_model)


class TransformerLayer(nn.Module):
    """Pre-LN layer: ``x = attn(LN(x), mask) + x; x = FF(LN(x)) + x``."""

    def __init__(self, d_model: int, d_head: int, n_head: int, hd_mlp: int, drop_p: float) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, d_head, n_head, drop_p)
        self.layer_norm2 = nn.LayerNorm(d_model)
        self.ff = FeedForward(d_model, d_model, hd_mlp, drop_p)

    def forward(self, x: Tensor, mask=None) -> Tensor:  # untyped default, as upstream
        z = self.layer_norm1(x)
        x = self.attn(z, mask) + x
        z = self.layer_norm2(x)
        x = self.ff(z) + x
        return x


class TransformerEncoder(nn.Module):
    """``depth`` stacked :class:`TransformerLayer` s sharing one mask (TemPose Transformer)."""

    def __init__(self, d_model: int, d_head: int, n_head: int, depth: int, hd_mlp: int, drop_p: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList([TransformerLayer(d_model, d_head, n_head, hd_mlp, drop_p) for _ in range(depth)])

    def forward(self, x: Tensor, mask=None) -> Tensor:  # untyped default, as upstream
        for layer in self.layers:
            x = layer(x, mask)
        return x


class TCN(nn.Module):
    """TemPose TCN: per stage ``Conv1d(k, dilation 2i+1, same padding) -> BN1d -> GELU -> Dropout``.

    ``kernel_size`` must be odd so the sequence length is preserved.
    """

    def __init__(self, in_channel: int, channels: list[int], kernel_size: int = 5, drop_p: float = 0.3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(len(channels)):
            in_ch = in_channel if i == 0 else channels[i - 1]
            out_ch = channels[i]

            dilation = i * 2 + 1
            padding = (kernel_size - 1) * dilation // 2
            layers += [
                nn.Conv1d(in_ch, out_ch, kernel_size, padding=padding, dilation=dilation),
                nn.BatchNorm1d(out_ch),
                nn.GELU(),
                nn.Dropout(drop_p, inplace=True),
            ]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


# --------------------------------------------------------------------------------------------------------------------
# Cross attention (bst.py)
# --------------------------------------------------------------------------------------------------------------------


class MultiHeadCrossAttention(nn.Module):
    """Masked multi-head cross attention: queries from ``x1``, keys and values from ``x2``."""

    def __init__(self, d_model: int, d_head: int, n_head: int, drop_p: float) -> None:
        super().__init__()
        d_cat = d_head * n_head

        self.h = n_head
        self.to_q = nn.Linear(d_model, d_cat, bias=False)
        self.to_kv = nn.Linear(d_model, d_cat * 2, bias=False)
        self.scale = d_head**-0.5

        self.attend = nn.Sequential(
            nn.Softmax(dim=-1),
            nn.Dropout(drop_p),  # not inplace, as upstream
        )

        self.tail = (
            nn.Sequential(nn.Linear(d_cat, d_model), nn.Dropout(drop_p, inplace=True))
            if n_head != 1 or d_cat != d_model
            else nn.Identity()
        )

    def forward(self, x1: Tensor, x2: Tensor, mask: Tensor = None) -> Tensor:  # type: ignore[assignment]
        # x1, x2: (b, t, d_model)
        q: Tensor = self.to_q(x1)
        kv: Tensor = self.to_kv(x2)
        b, t, _ = q.shape

        q = q.view(b, t, self.h, -1).transpose(1, 2)
        kv = kv.view(b, t, self.h, -1).chunk(2, dim=-1)
        k, v = map(lambda ts: ts.transpose(1, 2), kv)
        # q, k, v: (b, h, t, d_head)

        dots: Tensor = (q.contiguous() @ k.transpose(-1, -2).contiguous()) * self.scale
        if mask is not None:
            # mask: (b, t)
            mask = mask.view(b, 1, 1, t)
            dots = dots.masked_fill(mask == 0.0, -torch.inf)

        coef = self.attend(dots)
        attention: Tensor = coef @ v.contiguous()

        out = attention.transpose(1, 2).reshape(b, t, -1)
        out = self.tail(out)
        return out  # (b, t, d_model)


class CrossTransformerLayer(nn.Module):
    """``x = crossattn(LN(x1), LN(x2), mask); x = FF(LN(x)) + x``; note: no residual from ``x1``."""

    def __init__(self, d_model: int, d_head: int, n_head: int, hd_mlp: int, drop_p: float) -> None:
        super().__init__()
        self.layer_norm1_x1 = nn.LayerNorm(d_model)
        self.layer_norm1_x2 = nn.LayerNorm(d_model)
        self.cross_attn = MultiHeadCrossAttention(d_model, d_head, n_head, drop_p)
        self.layer_norm2 = nn.LayerNorm(d_model)
        self.ff = FeedForward(d_model, d_model, hd_mlp, drop_p)

    def forward(self, x1: Tensor, x2: Tensor, mask=None) -> Tensor:  # untyped default, as upstream
        x1 = self.layer_norm1_x1(x1)
        x2 = self.layer_norm1_x2(x2)
        x = self.cross_attn(x1, x2, mask)
        z = self.layer_norm2(x)
        x = self.ff(z) + x
        return x


def sincos_position_encoding(length: int, channels: int) -> Tensor:
    """``(length, channels)`` float32 encoding of ``positional_encodings`` 6.0.4 ``PositionalEncoding1D``.

    sin and cos are interleaved (``[sin f0, cos f0, sin f1, ...]``), ``inv_freq = 1 / 10000^(2i / channels)``.
    """
    ch = int(math.ceil(channels / 2) * 2)
    inv_freq = 1.0 / (10000 ** (torch.arange(0, ch, 2).float() / ch))
    pos_x = torch.arange(length, dtype=inv_freq.dtype)
    sin_inp = torch.einsum("i,j->ij", pos_x, inv_freq)
    emb = torch.flatten(torch.stack((sin_inp.sin(), sin_inp.cos()), dim=-1), -2, -1)
    return emb[:, :channels]


# --------------------------------------------------------------------------------------------------------------------
# BST variants (bst.py)
# --------------------------------------------------------------------------------------------------------------------


class _BSTBackbone(nn.Module):
    """Shared BST body: optional PPF, TCNs, temporal encoder, shuttle cross attention, interactional encoder.

    Submodules are registered in upstream order so seeded init and ``state_dict`` keys match upstream exactly.
    The constructor signature is upstream's; subclasses pick the variant through the three class flags.
    """

    ppf: bool = True
    """Pose Position Fusion: ``JnB = JnB * MLP(pos) + JnB`` (every variant but BST_0)."""
    clean_gate: bool = False
    aim_player: bool = False

    def __init__(
        self,
        in_dim: int,
        seq_len: int,
        n_class: int = 35,
        n_people: int = 2,
        d_model: int = 100,
        d_head: int = 128,
        n_head: int = 6,
        depth_tem: int = 2,
        depth_inter: int = 1,
        drop_p: float = 0.3,
        mlp_d_scale: int = 4,
        tcn_kernel_size: int = 5,
    ) -> None:
        super().__init__()
        if n_people > 2:
            raise NotImplementedError

        # Pose Position Fusion
        if self.ppf:
            self.mlp_positions = MLP(2, out_dim=in_dim, hd_dim=256, drop_p=drop_p)

        self.tcn_pose = TCN(in_dim, [d_model, d_model], tcn_kernel_size, drop_p)
        self.tcn_shuttle = TCN(2, [d_model // 2, d_model], tcn_kernel_size, drop_p)

        # Temporal TransformerLayers
        self.learned_token_tem = nn.Parameter(torch.randn(1, d_model))
        self.embedding_tem = nn.Parameter(torch.empty(1, 1 + seq_len, d_model))
        self.pre_dropout = nn.Dropout(drop_p, inplace=True)
        self.encoder_tem = TransformerEncoder(d_model, d_head, n_head, depth_tem, d_model * mlp_d_scale, drop_p)

        # CrossTransformerLayer
        self.embedding_cross = nn.Parameter(torch.empty(1, seq_len, d_model))
        self.cross_trans = CrossTransformerLayer(d_model, d_head, n_head, d_model * mlp_d_scale, drop_p)

        # Interactional TransformerLayers
        self.learned_token_inter = nn.Parameter(torch.randn(1, d_model))
        self.embedding_inter = nn.Parameter(torch.empty(1, 1 + seq_len, d_model))
        self.encoder_inter = TransformerEncoder(d_model, d_head, n_head, depth_inter, d_model * mlp_d_scale, drop_p)

        # Aim Player: cosine similarity (no parameters)
        if self.aim_player:
            self.cos_sim = nn.CosineSimilarity()

        # Clean Gate
        if self.clean_gate:
            self.mlp_clean = MLP(d_model, d_model, d_model, drop_p)

        # MLP Head: AP without CG drops shuttle_cls from the head input
        head_in = d_model * 2 if self.aim_player and not self.clean_gate else d_model * 3
        self.mlp_head = MLP_Head(head_in, n_class, d_model * mlp_d_scale, drop_p)

        self.d_model = d_model

        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Upstream init: sin/cos position encodings, N(0, 0.02) class tokens, Xavier Linear/Conv1d weights."""
        for embedding in (self.embedding_tem, self.embedding_cross, self.embedding_inter):
            embedding.copy_(sincos_position_encoding(embedding.shape[1], self.d_model).unsqueeze(0))

        nn.init.normal_(self.learned_token_tem, std=0.02)
        nn.init.normal_(self.learned_token_inter, std=0.02)

        self.apply(self.init_weights_recursive)

    @staticmethod
    def init_weights_recursive(m: nn.Module) -> None:
        """Xavier-uniform Linear weights with zero bias (JAX ViT), Xavier-normal Conv1d weights."""
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.Conv1d):
            nn.init.xavier_normal_(m.weight)

    def _encode(
        self,
        JnB: Tensor,
        shuttle: Tensor,  # (b, t, 2)
        pos: Tensor | None,  # (b, t, n, 2); None without PPF
        video_len: Tensor,  # (b,) int64
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Backbone up to the heads: ``(p1_cls, p2_cls, shuttle_cls, p1_shuttle_cls, p2_shuttle_cls)``, each (b, d)."""
        b, t, n, in_dim = JnB.shape
        JnB = JnB.permute(0, 2, 3, 1).reshape(b * n, in_dim, t)

        if pos is not None:
            pos = self.mlp_positions(pos)
            pos_impact = pos.permute(0, 2, 3, 1).reshape(b * n, in_dim, t)
            JnB = JnB * pos_impact + JnB

        JnB = self.tcn_pose(JnB)
        JnB = JnB.view(b, n, -1, t).transpose(-2, -1)

        shuttle = shuttle.transpose(1, 2).contiguous()
        shuttle = self.tcn_shuttle(shuttle)
        shuttle = shuttle.unsqueeze(1).transpose(-2, -1)

        x = torch.cat((JnB, shuttle), dim=1)
        _, n, _, d = x.shape

        class_token_tem = self.learned_token_tem.view(1, 1, -1).expand(b * n, -1, -1)
        x = x.view(b * n, t, d)
        x = torch.cat((class_token_tem, x), dim=1) + self.embedding_tem

        range_t = torch.arange(0, 1 + t, device=x.device).unsqueeze(0).expand(b, -1)
        video_len = video_len.unsqueeze(-1)
        mask = range_t < (1 + video_len)
        # mask: (b, 1+t); the class-token position is always valid
        mask_n = mask.repeat_interleave(n, dim=0)
        # mask_n: (b*n, 1+t)

        x = self.pre_dropout(x)
        x = self.encoder_tem(x, mask_n)
        x = x.view(b, n, 1 + t, d)

        p1, p2, shuttle = map(lambda ts: ts.squeeze(1), x.chunk(3, dim=1))

        p1_cls, p2_cls, shuttle_cls = p1[:, 0].contiguous(), p2[:, 0].contiguous(), shuttle[:, 0].contiguous()

        p1 = p1[:, 1:].contiguous() + self.embedding_cross
        p2 = p2[:, 1:].contiguous() + self.embedding_cross
        shuttle = shuttle[:, 1:].contiguous() + self.embedding_cross

        cross_mask = mask[:, 1:].contiguous()
        p1_shuttle = self.cross_trans(p1, shuttle, cross_mask)
        p2_shuttle = self.cross_trans(p2, shuttle, cross_mask)

        class_token_inter = self.learned_token_inter.view(1, 1, -1).expand(b, -1, -1)
        p1_shuttle = torch.cat((class_token_inter, p1_shuttle), dim=1) + self.embedding_inter
        p2_shuttle = torch.cat((class_token_inter, p2_shuttle), dim=1) + self.embedding_inter

        p1_shuttle = self.encoder_inter(p1_shuttle, mask)
        p2_shuttle = self.encoder_inter(p2_shuttle, mask)

        p1_shuttle_cls = p1_shuttle[:, 0, :].contiguous()
        p2_shuttle_cls = p2_shuttle[:, 0, :].contiguous()
        return p1_cls, p2_cls, shuttle_cls, p1_shuttle_cls, p2_shuttle_cls

    def _aim_alpha(self, p1_shuttle_cls: Tensor, p2_shuttle_cls: Tensor, shuttle_cls: Tensor) -> Tensor:
        """Aim Player weight ``(cos(p1, s) - cos(p2, s) + 2) / 4`` in [0.25, 0.75], shape (b, 1)."""
        p1_shuttle_sim = self.cos_sim(p1_shuttle_cls, shuttle_cls)
        p2_shuttle_sim = self.cos_sim(p2_shuttle_cls, shuttle_cls)
        alpha: Tensor = (p1_shuttle_sim - p2_shuttle_sim + 2) / 4
        return alpha.unsqueeze(1)

    def _clean(self, p1_shuttle_cls: Tensor, p2_shuttle_cls: Tensor, shuttle_cls: Tensor) -> Tensor:
        """Clean Gate: ``shuttle_cls - MLP(min(p1_shuttle_cls, p2_shuttle_cls))``."""
        info_need_clean = torch.minimum(p1_shuttle_cls, p2_shuttle_cls)
        dirt = self.mlp_clean(info_need_clean)
        return shuttle_cls - dirt


class BST_0(_BSTBackbone):
    """BST backbone without Pose Position Fusion; ``forward(JnB, shuttle, video_len)``."""

    ppf, clean_gate, aim_player = False, False, False

    def forward(self, JnB: Tensor, shuttle: Tensor, video_len: Tensor) -> Tensor:
        p1_cls, p2_cls, shuttle_cls, p1_shuttle_cls, p2_shuttle_cls = self._encode(JnB, shuttle, None, video_len)
        p1_conclusion = p1_cls + p1_shuttle_cls
        p2_conclusion = p2_cls + p2_shuttle_cls
        x = torch.cat((p1_conclusion, p2_conclusion, shuttle_cls), dim=1)
        return self.mlp_head(x)


class BST(_BSTBackbone):
    """BST: backbone plus PPF (Pose Position Fusion); ``forward(JnB, shuttle, pos, video_len)``."""

    ppf, clean_gate, aim_player = True, False, False

    def forward(self, JnB: Tensor, shuttle: Tensor, pos: Tensor, video_len: Tensor) -> Tensor:
        p1_cls, p2_cls, shuttle_cls, p1_shuttle_cls, p2_shuttle_cls = self._encode(JnB, shuttle, pos, video_len)
        p1_conclusion = p1_cls + p1_shuttle_cls
        p2_conclusion = p2_cls + p2_shuttle_cls
        x = torch.cat((p1_conclusion, p2_conclusion, shuttle_cls), dim=1)
        return self.mlp_head(x)


class BST_CG(_BSTBackbone):
    """BST with the Clean Gate on ``shuttle_cls``."""

    ppf, clean_gate, aim_player = True, True, False

    def forward(self, JnB: Tensor, shuttle: Tensor, pos: Tensor, video_len: Tensor) -> Tensor:
        p1_cls, p2_cls, shuttle_cls, p1_shuttle_cls, p2_shuttle_cls = self._encode(JnB, shuttle, pos, video_len)
        shuttle_cls = self._clean(p1_shuttle_cls, p2_shuttle_cls, shuttle_cls)
        p1_conclusion = p1_cls + p1_shuttle_cls
        p2_conclusion = p2_cls + p2_shuttle_cls
        x = torch.cat((p1_conclusion, p2_conclusion, shuttle_cls), dim=1)
        return self.mlp_head(x)


class BST_AP(_BSTBackbone):
    """BST with Aim Player weighting; the head sees only the two players (``shuttle_cls`` unused)."""

    ppf, clean_gate, aim_player = True, False, True

    def forward(self, JnB: Tensor, shuttle: Tensor, pos: Tensor, video_len: Tensor) -> Tensor:
        p1_cls, p2_cls, shuttle_cls, p1_shuttle_cls, p2_shuttle_cls = self._encode(JnB, shuttle, pos, video_len)
        p1_conclusion = p1_cls + p1_shuttle_cls
        p2_conclusion = p2_cls + p2_shuttle_cls
        alpha = self._aim_alpha(p1_shuttle_cls, p2_shuttle_cls, shuttle_cls)
        p1_conclusion = alpha * p1_conclusion
        p2_conclusion = (1 - alpha) * p2_conclusion
        x = torch.cat((p1_conclusion, p2_conclusion), dim=1)
        return self.mlp_head(x)


class BST_CG_AP(_BSTBackbone):
    """BST with Aim Player (on the uncleaned ``shuttle_cls``) then Clean Gate."""

    ppf, clean_gate, aim_player = True, True, True

    def forward(self, JnB: Tensor, shuttle: Tensor, pos: Tensor, video_len: Tensor) -> Tensor:
        p1_cls, p2_cls, shuttle_cls, p1_shuttle_cls, p2_shuttle_cls = self._encode(JnB, shuttle, pos, video_len)
        alpha = self._aim_alpha(p1_shuttle_cls, p2_shuttle_cls, shuttle_cls)
        p1_conclusion = p1_cls + p1_shuttle_cls
        p2_conclusion = p2_cls + p2_shuttle_cls
        p1_conclusion = alpha * p1_conclusion
        p2_conclusion = (1 - alpha) * p2_conclusion
        shuttle_cls = self._clean(p1_shuttle_cls, p2_shuttle_cls, shuttle_cls)
        x = torch.cat((p1_conclusion, p2_conclusion, shuttle_cls), dim=1)
        return self.mlp_head(x)


# --------------------------------------------------------------------------------------------------------------------
# Harness registration
# --------------------------------------------------------------------------------------------------------------------

HPARAMS: dict[str, int | float] = {
    "in_dim": 72,
    "seq_len": 100,
    "n_class": 25,
    "n_people": 2,
    "d_model": 100,
    "d_head": 128,
    "n_head": 6,
    "depth_tem": 2,
    "depth_inter": 1,
    "drop_p": 0.3,
    "mlp_d_scale": 4,
    "tcn_kernel_size": 5,
}
"""Hyper-parameters of the deployed models (``bst_main.py`` on merged ShuttleSet, the guide's ``DEFAULT_PARAMS``)."""

VARIANTS: dict[str, type[_BSTBackbone]] = {
    "bst_0": BST_0,
    "bst": BST,
    "bst_cg": BST_CG,
    "bst_ap": BST_AP,
    "bst_cg_ap": BST_CG_AP,
}

REFERENCE_PARAMS: dict[int, dict[str, int]] = {
    25: {"bst_0": 1_826_975, "bst": 1_846_247, "bst_cg": 1_866_447, "bst_ap": 1_806_047, "bst_cg_ap": 1_866_447},
    35: {"bst_0": 1_830_985, "bst": 1_850_257, "bst_cg": 1_870_457, "bst_ap": 1_810_057, "bst_cg_ap": 1_870_457},
}
"""Learnable-parameter counts at seq_len 100, keyed by ``n_class`` then variant (MODELS.md section 1)."""

SEQ_LEN = int(HPARAMS["seq_len"])
N_PEOPLE = 2
N_JOINTS = 17
COCO_BONE_PAIRS: tuple[tuple[int, int], ...] = (
    (0, 1), (0, 2), (1, 2), (1, 3), (2, 4),  # head
    (3, 5), (4, 6),  # ears to shoulders
    (5, 7), (7, 9), (6, 8), (8, 10),  # arms
    (5, 6), (5, 11), (6, 12), (11, 12),  # torso
    (11, 13), (13, 15), (12, 14), (14, 16),  # legs
)  # fmt: skip
"""The 19 COCO bones of upstream ``get_bone_pairs('coco')``, as (start, end) joint indices."""
IN_DIM = (N_JOINTS + len(COCO_BONE_PAIRS)) * 2
TCN_HALO = 8
"""Frames past ``video_len`` the TCN front end still reads: (5 - 1) / 2 * 1 + (5 - 1) / 2 * 3."""
MIN_VIDEO_LEN, MAX_VIDEO_LEN = 30, SEQ_LEN

# Standing player, COCO-17 order, in upstream's normalisation: joints relative to the person box, divided by the box
# diagonal and centred on the box centre, so |x|, |y| < 0.5. x to the image right, y down; "left" is the player's left.
_POSE_TEMPLATE = np.array(
    [
        (0.00, -0.40),  # nose
        (0.02, -0.42), (-0.02, -0.42),  # eyes
        (0.045, -0.41), (-0.045, -0.41),  # ears
        (0.10, -0.30), (-0.10, -0.30),  # shoulders
        (0.14, -0.15), (-0.14, -0.15),  # elbows
        (0.15, -0.02), (-0.15, -0.02),  # wrists
        (0.07, 0.02), (-0.07, 0.02),  # hips
        (0.08, 0.20), (-0.08, 0.20),  # knees
        (0.08, 0.40), (-0.08, 0.40),  # ankles
    ],
    dtype=np.float64,
)  # fmt: skip
_JOINT_JITTER = np.array([0.02] * 5 + [0.02, 0.02, 0.05, 0.05, 0.08, 0.08, 0.02, 0.02, 0.04, 0.04, 0.05, 0.05])
_MISSING_JOINT_RATE = 0.01
_MISSING_SHUTTLE_RATE = 0.05


def create_bones(joints: np.ndarray) -> np.ndarray:
    """``(..., 17, 2)`` joints -> ``(..., 19, 2)`` bones ``end - start``; 0 where either coordinate is 0 (upstream)."""
    starts = joints[..., [s for s, _ in COCO_BONE_PAIRS], :]
    ends = joints[..., [e for _, e in COCO_BONE_PAIRS], :]
    return np.where((starts != 0.0) & (ends != 0.0), ends - starts, 0.0)


def _sample_joints(rng: np.random.Generator, batch: int, video_len: np.ndarray) -> np.ndarray:
    """``[batch, T, 2, 17, 2]`` smooth COCO-17 trajectories: template pose, jitter and one racket swing per player."""
    t = np.arange(SEQ_LEN, dtype=np.float64)[None, :, None]
    scale = rng.uniform(0.9, 1.1, size=(batch, 1, N_PEOPLE, 1, 1))
    joints = _POSE_TEMPLATE * scale + np.zeros((batch, SEQ_LEN, N_PEOPLE, 1, 1))

    # Racket arm swings about its shoulder once, around a hit frame inside the clip.
    right_handed = rng.random((batch, N_PEOPLE)) < 0.9
    hit = rng.uniform(0.3, 0.7, size=(batch, N_PEOPLE)) * video_len[:, None]
    width = rng.uniform(4.0, 12.0, size=(batch, N_PEOPLE))
    amp = rng.uniform(0.8, 2.0, size=(batch, N_PEOPLE)) * np.where(right_handed, -1.0, 1.0)
    angle = amp[:, None] * np.exp(-(((t - hit[:, None]) / width[:, None]) ** 2))  # [batch, T, 2]
    cos, sin = np.cos(angle)[..., None], np.sin(angle)[..., None]
    for b in range(batch):
        for p in range(N_PEOPLE):
            shoulder, elbow, wrist = (6, 8, 10) if right_handed[b, p] else (5, 7, 9)
            centre = joints[b, :, p, shoulder]
            for j in (elbow, wrist):
                d = joints[b, :, p, j] - centre
                rx = cos[b, :, p, 0] * d[:, 0] - sin[b, :, p, 0] * d[:, 1]
                ry = sin[b, :, p, 0] * d[:, 0] + cos[b, :, p, 0] * d[:, 1]
                joints[b, :, p, j] = centre + np.stack((rx, ry), axis=-1)

    jitter = smooth_series(rng, batch, SEQ_LEN, N_PEOPLE * N_JOINTS * 2).astype(np.float64)
    joints += jitter.reshape(batch, SEQ_LEN, N_PEOPLE, N_JOINTS, 2) * _JOINT_JITTER[:, None]
    joints = np.clip(joints, -0.499, 0.499)

    # Keypoint detector misses: the joint is stored as (0, 0).
    missing = rng.random((batch, SEQ_LEN, N_PEOPLE, N_JOINTS)) < _MISSING_JOINT_RATE
    joints[missing] = 0.0
    return joints


def _sample_shuttle(rng: np.random.Generator, batch: int, video_len: np.ndarray) -> np.ndarray:
    """``[batch, T, 2]`` shuttle flight in frame fractions: a lifted arc between the players, with tracker misses."""
    out = np.zeros((batch, SEQ_LEN, 2))
    for b in range(batch):
        n = int(video_len[b])
        s = np.linspace(0.0, 1.0, n)
        top_first = rng.random() < 0.5
        y_top, y_bottom = rng.uniform(0.25, 0.45), rng.uniform(0.6, 0.85)
        y0, y1 = (y_top, y_bottom) if top_first else (y_bottom, y_top)
        x0, x1 = rng.uniform(0.25, 0.75, size=2)
        lift = rng.uniform(0.05, 0.25)
        out[b, :n, 0] = x0 + (x1 - x0) * s
        out[b, :n, 1] = y0 + (y1 - y0) * s - 4.0 * lift * s * (1.0 - s)
        out[b, :n] += 0.003 * rng.standard_normal((n, 2))
    out = np.clip(out, 0.0, 1.0)
    out[rng.random((batch, SEQ_LEN)) < _MISSING_SHUTTLE_RATE] = 0.0
    return out


def _sample_positions(rng: np.random.Generator, batch: int) -> np.ndarray:
    """``[batch, T, 2, 2]`` court-normalised foot midpoints: player 0 in the top half, player 1 in the bottom half."""
    centre = np.empty((batch, 1, N_PEOPLE, 2))
    centre[..., 0] = rng.uniform(0.25, 0.75, size=(batch, 1, N_PEOPLE))
    centre[:, :, 0, 1] = rng.uniform(0.1, 0.4, size=(batch, 1))
    centre[:, :, 1, 1] = rng.uniform(0.6, 0.9, size=(batch, 1))
    motion = smooth_series(rng, batch, SEQ_LEN, N_PEOPLE * 2).reshape(batch, SEQ_LEN, N_PEOPLE, 2)
    return np.clip(centre + 0.06 * motion, 0.0, 1.0)


def sample_clip(rng: np.random.Generator, batch: int) -> dict[str, np.ndarray]:
    """One batch of realistic BST clips: ``JnB``, ``shuttle``, ``pos`` and ``video_len``, mutually consistent.

    ``video_len`` is drawn in [30, 100]; every frame at or past it is zero in ``JnB``, ``shuttle`` and ``pos``,
    as upstream's ``make_seq_len_same`` pads real clips.
    """
    video_len = rng.integers(MIN_VIDEO_LEN, MAX_VIDEO_LEN + 1, size=batch).astype(np.int64)
    joints = _sample_joints(rng, batch, video_len)
    shuttle = _sample_shuttle(rng, batch, video_len)
    pos = _sample_positions(rng, batch)

    padded = np.arange(SEQ_LEN)[None, :] >= video_len[:, None]  # [batch, T]
    joints[padded] = 0.0
    shuttle[padded] = 0.0
    pos[padded] = 0.0

    jnb = np.concatenate((joints, create_bones(joints)), axis=-2)  # [batch, T, 2, 36, 2]
    return {
        "JnB": jnb.reshape(batch, SEQ_LEN, N_PEOPLE, IN_DIM).astype(np.float32),
        "shuttle": shuttle.astype(np.float32),
        "pos": pos.astype(np.float32),
        "video_len": video_len,
    }


@dataclass
class _Clip:
    rng: np.random.Generator
    batch: int
    arrays: dict[str, np.ndarray]
    served: set[str] = field(default_factory=set)


class ClipSampler:
    """Per-input generators that agree on ``video_len`` and padding.

    The harness calls each input's generator in turn with one shared ``rng``. The first call samples a whole clip
    (:func:`sample_clip`) and later calls with the same ``rng`` and batch are served from it; asking for an input
    already served from the current clip samples a fresh clip, so repeated calls still advance the stream.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clip: _Clip | None = None

    def generator(self, name: str) -> Generator:
        """The generator of input ``name``: ``(rng, batch) -> array``."""

        def generate(rng: np.random.Generator, batch: int) -> np.ndarray:
            with self._lock:
                clip = self._clip
                if clip is None or clip.rng is not rng or clip.batch != batch or name in clip.served:
                    clip = self._clip = _Clip(rng, batch, sample_clip(rng, batch))
                clip.served.add(name)
                return clip.arrays[name].copy()

        generate.__name__ = f"bst_{name}_generator"
        return generate


def _inputs(with_pos: bool) -> tuple[InputSpec, ...]:
    sampler = ClipSampler()
    specs = [
        InputSpec(
            "JnB",
            (BATCH, SEQ_LEN, N_PEOPLE, IN_DIM),
            "float32",
            "BTNF",
            sampler.generator("JnB"),
            value_range=(-1.0, 1.0),
            description=(
                "Per frame and player, 17 COCO joints then the 19 COCO bones (end - start, 0 where a joint is "
                "missing), each (x, y), flattened to 72. Joints are relative to the person box, divided by its "
                "diagonal and centred (|x|,|y| < 0.5); smooth synthetic trajectories with one racket swing and ~1% "
                "missing joints. Frames >= video_len are zero."
            ),
        ),
        InputSpec(
            "shuttle",
            (BATCH, SEQ_LEN, 2),
            "float32",
            "BTF",
            sampler.generator("shuttle"),
            value_range=(0.0, 1.0),
            description=(
                "Shuttlecock (x, y) divided by the video resolution: an arc between the players, ~5% tracker "
                "misses stored as (0, 0). Frames >= video_len are zero."
            ),
        ),
    ]
    if with_pos:
        specs.append(
            InputSpec(
                "pos",
                (BATCH, SEQ_LEN, N_PEOPLE, 2),
                "float32",
                "BTNF",
                sampler.generator("pos"),
                value_range=(0.0, 1.0),
                description=(
                    "Court-normalised foot midpoint (x, y) of the top (0) and bottom (1) player, smooth motion. "
                    "Frames >= video_len are zero."
                ),
            )
        )
    specs.append(
        InputSpec(
            "video_len",
            (BATCH,),
            "int64",
            "B",
            sampler.generator("video_len"),
            value_range=(1.0, float(SEQ_LEN)),
            description=(
                "Number of valid frames per clip; the model requires 1 <= video_len <= 100 (0 gives NaN logits). "
                "Drawn in [30, 100]."
            ),
        )
    )
    return tuple(specs)


def build_variant(name: str, **overrides: int | float) -> nn.Module:
    """Construct variant ``name`` (a key of :data:`VARIANTS`) with :data:`HPARAMS`, overridden by ``overrides``."""
    return VARIANTS[name](**{**HPARAMS, **overrides})  # type: ignore[arg-type]


_NOTES = (
    "Untrained (seeded upstream init); no public checkpoint is bundled. seq_len is fixed at 100 (positional "
    "parameters), batch is dynamic. torch.jit.script fails as upstream (lambdas, non-Optional mask defaults); "
    "trace instead. The TCN reads up to 8 padded frames past video_len, so inputs must be zero-padded like the "
    "real data. video_len=0 gives NaN."
)

_DESCRIPTIONS = {
    "bst_0": "BST backbone (TCN + temporal/cross/interactional transformers), no pose-position fusion; 3 inputs.",
    "bst": "BST: backbone plus Pose Position Fusion (PPF).",
    "bst_cg": "BST with the Clean Gate on the shuttle class token.",
    "bst_ap": "BST with Aim Player cosine weighting of the two players; shuttle token not in the head.",
    "bst_cg_ap": "BST with Aim Player and Clean Gate (the paper's best variant).",
}


"""The TF converters' failures on BST's ONNX export (opset 17, and 13: the same graph ops)."""


def specs() -> list[ModelSpec]:
    """The five BST variants at the deployed hyper-parameters (C=25, T=100)."""
    out = []
    for name in VARIANTS:
        out.append(
            ModelSpec(
                name=name,
                family="bst",
                guide_opsets=(11,),  # guide 000's export example (its --opset_version defaults to 13)
                factory=functools.partial(build_variant, name),
                inputs=_inputs(with_pos=name != "bst_0"),
                outputs=(
                    OutputSpec(
                        "shot_predictions",
                        (BATCH, int(HPARAMS["n_class"])),
                        kind="logits",
                        description="Stroke-type logits over the 25 merged ShuttleSet classes (index 0: unknown).",
                    ),
                ),
                reference_params=REFERENCE_PARAMS[25][name],
                description=_DESCRIPTIONS[name],
                smoke=name == "bst_cg_ap",
                notes=_NOTES,
                extra={"hparams": dict(HPARAMS), "source": "Va6lue/BST-Badminton-Stroke-type-Transformer@2ef1797"},
                # accuracy: JapaneseVowels speakers as stroke classes 1..9 (0 = unknown); the MLP head is fitted
                task=functools.partial(bst_task, with_pos=name != "bst_0"),
                training=heads_recipe("mlp_head", offset=1),
            )
        )
    return out
