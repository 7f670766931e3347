"""Sign-language classifiers on MediaPipe keypoints: ``SignTransformer`` and ``MediaPipeGRU`` (MODELS.md section 3).

Sources
- ``jeipab/Pansinayan-Mobile`` (FSL-105 mobile/export repo): ``models/transformer.py`` and ``models/mediapipe_gru.py``;
  the guide's ``scripts/export_models.py`` lives at commit 3aaa338.
- The training repo ``jeipab/fslr-transformer-vs-iv3gru`` has the same files (its HEAD transformer is the 156-dim
  variant). The layer code below was checked line by line against the 178-dim ``SignTransformer`` and the
  ``MediaPipeGRU`` source text found in a public code index; the Pansinayan-Mobile files themselves were not readable
  there, so they were matched through MODELS.md's description and the exact parameter counts.

Both classes are faithful re-implementations: same module tree and parameter names (a reference ``state_dict`` loads
strictly), same forward semantics, same init. Kept on purpose because they are export pitfalls the harness must see:
- ``SignTransformer``/``EncoderLayer``/``MultiHeadAttentionBlock`` take unannotated ``mask=None`` arguments and
  ``EncoderLayer.forward`` returns a Tensor or a tuple depending on ``return_attn``, so ``torch.jit.script`` fails.
- The custom ``LayerNormalization`` (eps 1e-6) is written out in ops, not ``nn.LayerNorm``.
- ``cls_token`` is always a parameter although mean pooling never uses it (it is counted: 3,286,259 params).
- Both forwards carry ``raise ValueError(f"...{x.shape}")`` shape checks (TracerWarnings only).
- ``MediaPipeGRU.forward`` keeps the ``lengths`` ``pack_padded_sequence`` path (not traceable to a general graph).

Deviations: none in the models. The registered graph is the plain ``model(input)`` call (no mask, no lengths), which
returns ``(gloss_logits, category_logits)``; the guide's exporter names a single output, the harness names both.

Input data: no FSL keypoints ship offline, so ``keypoint_sequence`` draws a plausible signer (fixed body layout,
articulated hands with smooth wrist trajectories, finger curl and hand rotation, small head and body sway, MediaPipe
style dropped hands as zeros). The order of the 178 features is assumed to be 25 pose, 21 left-hand, 21 right-hand
and 22 face keypoints, each ``(x, y)`` interleaved, as the mobile repo's README lists them.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from export_harness.models.proxy_tasks import sign_task
from export_harness.models.spec import BATCH, InputSpec, ModelSpec, OutputSpec
from export_harness.models.synthetic import smooth_series
from export_harness.models.training import heads_recipe

__all__ = [
    "EncoderLayer",
    "FeedForwardBlock",
    "LayerNormalization",
    "MediaPipeGRU",
    "MultiHeadAttentionBlock",
    "PositionalEncoding",
    "ResidualConnection",
    "SignTransformer",
    "keypoint_sequence",
    "specs",
]

SEQ_LEN = 300
INPUT_DIM = 178
NUM_GLOSS = 105
NUM_CAT = 10


# ---------------------------------------------------------------------------------------------------------------------
# SignTransformer (models/transformer.py)
# ---------------------------------------------------------------------------------------------------------------------
class PositionalEncoding(nn.Module):
    """Sinusoidal positional encoding buffer ``pe[1, max_len, E]`` (sin even dims, cos odd), then dropout."""

    def __init__(self, emb_dim: int, dropout: float = 0.1, max_len: int = 300) -> None:
        super().__init__()
        self.dropout = nn.Dropout(p=dropout)
        self.max_len = max_len

        position = torch.arange(0, max_len, dtype=torch.float).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, emb_dim, 2).float() * (-math.log(10000.0) / emb_dim))
        pe = torch.zeros(max_len, emb_dim)
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term)
        self.register_buffer("pe", pe.unsqueeze(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq_len = x.size(1)
        if seq_len > self.max_len:
            raise ValueError(
                f"Sequence length {seq_len} exceeds maximum supported length {self.max_len}. "
                f"Consider increasing max_len parameter or reducing sequence length."
            )
        x = x + self.pe[:, :seq_len, :]
        return self.dropout(x)


class LayerNormalization(nn.Module):
    """Custom LayerNorm written out in ops: ``gamma * (x - mean) / sqrt(var_biased + eps) + beta``."""

    def __init__(self, features: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(features))
        self.beta = nn.Parameter(torch.zeros(features))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True, unbiased=False)
        normalized = self.gamma * (x - mean) / torch.sqrt(var + self.eps) + self.beta
        return normalized


class FeedForwardBlock(nn.Module):
    """Position-wise FFN: Linear, ReLU, Dropout, Linear."""

    def __init__(self, emb_dim: int, ff_dim: int = 512, dropout: float = 0.1) -> None:
        super().__init__()
        self.linear1 = nn.Linear(emb_dim, ff_dim)
        self.activation = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(ff_dim, emb_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear1(x)
        x = self.activation(x)
        x = self.dropout(x)
        x = self.linear2(x)
        return x


class MultiHeadAttentionBlock(nn.Module):
    """Multi-head self-attention with W_q/W_k/W_v/W_o and an explicit softmax(QK^T/sqrt(d))V."""

    def __init__(self, emb_dim: int, num_heads: int, dropout: float = 0.1) -> None:
        super().__init__()
        if emb_dim % num_heads != 0:
            raise ValueError(f"Embedding dim {emb_dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = emb_dim // num_heads
        self.W_q = nn.Linear(emb_dim, emb_dim)
        self.W_k = nn.Linear(emb_dim, emb_dim)
        self.W_v = nn.Linear(emb_dim, emb_dim)
        self.W_o = nn.Linear(emb_dim, emb_dim)
        self.dropout = nn.Dropout(dropout)

    @staticmethod
    def SelfAttention(Q, K, V, mask=None, dropout=None):  # reference name and (unannotated) signature
        """Scaled dot-product attention; ``mask`` (1 keep, 0 drop) is applied with ``masked_fill(-inf)``."""
        d_k = Q.size(-1)
        scores = torch.matmul(Q, K.transpose(-2, -1))
        scores = scores / math.sqrt(d_k)
        if mask is not None:
            if mask.shape[-1] != scores.shape[-1]:
                raise ValueError(f"Mask last dimension {mask.shape[-1]} doesn't match scores {scores.shape[-1]}")
            scores = scores.masked_fill(mask == 0, float("-inf"))
        attn = torch.softmax(scores, dim=-1)
        if dropout is not None:
            attn = dropout(attn)
        out = torch.matmul(attn, V)
        return out, attn

    def forward(self, x: torch.Tensor, mask=None):  # mask unannotated on purpose (reference; breaks jit.script)
        B, T, E = x.size()
        Q = self.W_q(x)
        K = self.W_k(x)
        V = self.W_v(x)
        Q = Q.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)
        K = K.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)
        V = V.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)
        out, attn = MultiHeadAttentionBlock.SelfAttention(Q, K, V, mask, self.dropout)
        out = out.transpose(1, 2).contiguous().view(B, T, E)
        out = self.W_o(out)
        return out, attn


class ResidualConnection(nn.Module):
    """Pre-LN residual: ``x + Dropout(sublayer(LN(x)))`` (the encoder layer uses its ``norm``/``dropout`` directly)."""

    def __init__(self, emb_dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.norm = LayerNormalization(emb_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, sublayer):
        normalized_x = self.norm(x)
        sublayer_output = sublayer(normalized_x)
        dropped_output = self.dropout(sublayer_output)
        return x + dropped_output


class EncoderLayer(nn.Module):
    """Pre-LN encoder layer: self-attention block then FFN block, each with a residual."""

    def __init__(self, emb_dim: int, num_heads: int, ff_dim: int = 512, dropout: float = 0.1) -> None:
        super().__init__()
        self.attention = MultiHeadAttentionBlock(emb_dim, num_heads, dropout)
        self.feed_forward = FeedForwardBlock(emb_dim, ff_dim, dropout)
        self.residual1 = ResidualConnection(emb_dim, dropout)
        self.residual2 = ResidualConnection(emb_dim, dropout)

    def forward(self, x, mask=None, return_attn=False):  # Tensor-or-tuple return, as in the reference
        normed_x = self.residual1.norm(x)
        attn_out, attn = self.attention(normed_x, mask)
        x = x + self.residual1.dropout(attn_out)

        normed_x2 = self.residual2.norm(x)
        ff_out = self.feed_forward(normed_x2)
        x = x + self.residual2.dropout(ff_out)

        if return_attn:
            return x, attn
        return x


class SignTransformer(nn.Module):
    """Transformer encoder over [B, T, 178] keypoints with gloss (105) and category (10) heads."""

    def __init__(
        self,
        input_dim: int = 178,
        emb_dim: int = 256,
        n_heads: int = 8,
        n_layers: int = 4,
        num_gloss: int = 105,
        num_cat: int = 10,
        dropout: float = 0.1,
        max_len: int = 300,
        ff_dim: int | None = None,
        pooling_method: str = "mean",
    ) -> None:
        super().__init__()
        self.embedding = nn.Linear(input_dim, emb_dim)
        self.pos_encoder = PositionalEncoding(emb_dim, dropout, max_len)
        self.input_norm = LayerNormalization(emb_dim)

        if ff_dim is None:
            ff_dim = emb_dim * 4
        self.encoder_layers = nn.ModuleList(
            [EncoderLayer(emb_dim, n_heads, ff_dim=ff_dim, dropout=dropout) for _ in range(n_layers)]
        )

        if pooling_method not in ("mean", "max", "cls"):
            raise ValueError(f"Invalid pooling_method: {pooling_method}. Choose from 'mean', 'max', 'cls'")
        self.pooling_method = pooling_method

        # Always created, used only when pooling_method == 'cls' (counted in the parameter total).
        self.cls_token = nn.Parameter(torch.randn(1, 1, emb_dim))

        self.dropout_final = nn.Dropout(dropout)
        self.gloss_head = nn.Sequential(
            nn.Linear(emb_dim, emb_dim // 2), nn.ReLU(), nn.Dropout(dropout), nn.Linear(emb_dim // 2, num_gloss)
        )
        self.category_head = nn.Sequential(
            nn.Linear(emb_dim, emb_dim // 2), nn.ReLU(), nn.Dropout(dropout), nn.Linear(emb_dim // 2, num_cat)
        )

    def forward(self, x: torch.Tensor, mask=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` [B, T<=300, 178], optional ``mask`` [B, T] (1 valid, 0 pad) -> (gloss [B,105], category [B,10])."""
        if len(x.shape) != 3:
            raise ValueError(f"Expected input with 3 dimensions [B, T, features], got shape {x.shape}")
        if x.shape[-1] != self.embedding.in_features:
            raise ValueError(f"Expected {self.embedding.in_features} input features, got {x.shape[-1]}")

        B, T, _ = x.size()
        x = self.embedding(x)

        if self.pooling_method == "cls":
            cls_tokens = self.cls_token.expand(B, -1, -1)
            x = torch.cat([cls_tokens, x], dim=1)
            if mask is not None:
                cls_mask = torch.ones(B, 1, device=mask.device, dtype=mask.dtype)
                mask = torch.cat([cls_mask, mask], dim=1)

        x = self.pos_encoder(x)
        x = self.input_norm(x)

        if mask is not None:
            expected_len = T + (1 if self.pooling_method == "cls" else 0)
            if mask.shape[0] != B:
                raise ValueError(f"Mask batch size {mask.shape[0]} doesn't match input batch size {B}")
            if mask.shape[1] != expected_len:
                raise ValueError(f"Mask sequence length {mask.shape[1]} doesn't match expected length {expected_len}")
            attention_mask = mask.unsqueeze(1).unsqueeze(2)
        else:
            attention_mask = None

        for encoder_layer in self.encoder_layers:
            x = encoder_layer(x, attention_mask)

        if self.pooling_method == "cls":
            pooled = x[:, 0, :]
        elif self.pooling_method == "mean":
            if mask is not None:
                mask_expanded = mask.unsqueeze(-1).expand_as(x)
                masked_x = x * mask_expanded
                mask_sum = mask.sum(dim=1, keepdim=True)
                valid_lengths = mask_sum.clamp(min=1)
                pooled = masked_x.sum(dim=1) / valid_lengths
                completely_masked = (mask_sum == 0).expand_as(pooled)
                pooled = pooled.masked_fill(completely_masked, 0.0)
            else:
                pooled = x.mean(dim=1)
        elif self.pooling_method == "max":
            if mask is not None:
                mask_expanded = mask.unsqueeze(-1).expand_as(x)
                masked_x = x.masked_fill(~mask_expanded.bool(), float("-inf"))
                pooled = masked_x.max(dim=1)[0]
                has_valid_tokens = (mask.sum(dim=1) > 0).unsqueeze(-1)
                pooled = torch.where(has_valid_tokens, pooled, torch.zeros_like(pooled))
            else:
                pooled = x.max(dim=1)[0]
        else:
            raise ValueError(f"Unknown pooling method: {self.pooling_method}")

        pooled = self.dropout_final(pooled)
        gloss_out = self.gloss_head(pooled)
        cat_out = self.category_head(pooled)
        return gloss_out, cat_out

    def get_attention_weights(self, x, mask=None):
        """Per-layer attention maps [B, H, T, T] (CPU, detached), as the reference's visualisation helper."""
        B = x.size(0)
        attention_weights = []
        x = self.embedding(x)
        if self.pooling_method == "cls":
            cls_tokens = self.cls_token.expand(B, -1, -1)
            x = torch.cat([cls_tokens, x], dim=1)
            if mask is not None:
                cls_mask = torch.ones(B, 1, device=mask.device, dtype=mask.dtype)
                mask = torch.cat([cls_mask, mask], dim=1)
        x = self.pos_encoder(x)
        x = self.input_norm(x)
        attention_mask = mask.unsqueeze(1).unsqueeze(2) if mask is not None else None
        for encoder_layer in self.encoder_layers:
            x, attn_weights = encoder_layer(x, attention_mask, return_attn=True)
            attention_weights.append(attn_weights.detach().cpu())
        return attention_weights


# ---------------------------------------------------------------------------------------------------------------------
# MediaPipeGRU (models/mediapipe_gru.py)
# ---------------------------------------------------------------------------------------------------------------------
def _dropout_packed(packed_seq: nn.utils.rnn.PackedSequence, p: float, training: bool) -> nn.utils.rnn.PackedSequence:
    """Dropout on a PackedSequence's data."""
    if p <= 0.0:
        return packed_seq
    data = F.dropout(packed_seq.data, p=p, training=training)
    return nn.utils.rnn.PackedSequence(
        data, packed_seq.batch_sizes, packed_seq.sorted_indices, packed_seq.unsorted_indices
    )


class MediaPipeGRU(nn.Module):
    """Two stacked GRUs (178->256->128), last hidden state, gloss and category linear heads."""

    def __init__(
        self,
        num_gloss: int,
        num_cat: int,
        input_dim: int = 178,
        projection_dim: int | None = None,
        hidden1: int = 256,
        hidden2: int = 128,
        dropout: float = 0.3,
        bidirectional: bool = False,
    ) -> None:
        super().__init__()
        self.input_dim = input_dim
        self.projection_dim = projection_dim
        self.hidden1 = hidden1
        self.hidden2 = hidden2
        self.dropout_p = dropout
        self.bidirectional = bidirectional
        self.num_directions = 2 if bidirectional else 1

        if projection_dim is not None:
            self.input_projection = nn.Linear(input_dim, projection_dim)
            gru_input_dim = projection_dim
        else:
            self.input_projection = None
            gru_input_dim = input_dim

        self.gru1 = nn.GRU(
            input_size=gru_input_dim, hidden_size=hidden1, num_layers=1, batch_first=True, bidirectional=bidirectional
        )
        effective_hidden1 = hidden1 * self.num_directions
        self.gru2 = nn.GRU(
            input_size=effective_hidden1,
            hidden_size=hidden2,
            num_layers=1,
            batch_first=True,
            bidirectional=bidirectional,
        )
        effective_hidden2 = hidden2 * self.num_directions

        self.do1 = nn.Dropout(dropout)
        self.do2 = nn.Dropout(dropout)
        self.gloss_head = nn.Linear(effective_hidden2, num_gloss)
        self.category_head = nn.Linear(effective_hidden2, num_cat)
        self._init_weights()

    def _init_weights(self) -> None:
        """Xavier-uniform ``weight_ih``, orthogonal ``weight_hh``, zero biases; heads Xavier/zero."""
        for gru in (self.gru1, self.gru2):
            for name, param in gru.named_parameters():
                if "weight_ih" in name:
                    nn.init.xavier_uniform_(param)
                elif "weight_hh" in name:
                    nn.init.orthogonal_(param)
                elif "bias" in name:
                    nn.init.zeros_(param)
        if self.input_projection is not None:
            nn.init.xavier_uniform_(self.input_projection.weight)
            nn.init.zeros_(self.input_projection.bias)
        for head in (self.gloss_head, self.category_head):
            nn.init.xavier_uniform_(head.weight)
            nn.init.zeros_(head.bias)

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None, return_probs: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` [B, T, 178], optional ``lengths`` [B] (packed path) -> (gloss [B,105], category [B,10])."""
        if len(x.shape) != 3:
            raise ValueError(f"Expected input with 3 dimensions [B, T, features], got shape {x.shape}")
        if x.shape[-1] != self.input_dim:
            raise ValueError(f"Expected {self.input_dim} input features, got {x.shape[-1]}")

        T = x.size(1)
        if self.input_projection is not None:
            x = self.input_projection(x)

        if lengths is not None:
            if lengths.min() < 1:
                raise ValueError("All sequence lengths must be positive")
            if lengths.max() > T:
                raise ValueError(f"Maximum length {lengths.max()} exceeds sequence length {T}")
            lengths_cpu = lengths if lengths.device.type == "cpu" else lengths.to("cpu")
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths_cpu, batch_first=True, enforce_sorted=False)
            y1, _h1 = self.gru1(packed)
            y1 = _dropout_packed(y1, self.do1.p, training=self.training)
            _y2, h2 = self.gru2(y1)
            h = torch.cat([h2[-2], h2[-1]], dim=-1) if self.bidirectional else h2[-1]
        else:
            y1, _h1 = self.gru1(x)
            y1 = self.do1(y1)
            _y2, h2 = self.gru2(y1)
            h = torch.cat([h2[-2], h2[-1]], dim=-1) if self.bidirectional else h2[-1]

        h = self.do2(h)
        gloss_logits = self.gloss_head(h)
        cat_logits = self.category_head(h)
        if return_probs:
            return F.softmax(gloss_logits, dim=-1), F.softmax(cat_logits, dim=-1)
        return gloss_logits, cat_logits

    def predict_proba(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Softmax probabilities instead of logits."""
        return self.forward(x, lengths=lengths, return_probs=True)


# ---------------------------------------------------------------------------------------------------------------------
# Realistic keypoint sequences
# ---------------------------------------------------------------------------------------------------------------------
_N_POSE, _N_HAND, _N_FACE = 25, 21, 22

# MediaPipe pose landmarks 0..24 for a signer facing the camera (image coords, y down); subject's left = image right.
_POSE_HEAD = {  # index: (dx, dy) relative to the nose
    0: (0.0, 0.0),
    1: (0.015, -0.02),
    2: (0.03, -0.022),
    3: (0.045, -0.02),
    4: (-0.015, -0.02),
    5: (-0.03, -0.022),
    6: (-0.045, -0.02),
    7: (0.07, -0.005),
    8: (-0.07, -0.005),
    9: (0.02, 0.04),
    10: (-0.02, 0.04),
}
_SHOULDER = {11: (0.13, 0.16), 12: (-0.13, 0.16)}  # relative to the nose
_HIP = {23: (0.09, 0.56), 24: (-0.09, 0.56)}

# Canonical right hand (21 landmarks) in hand-local coords: wrist at 0, fingers along -y (up), unit = hand length.
_FINGER_BASE_X = np.array([-0.28, -0.12, 0.0, 0.11, 0.21])  # thumb, index, middle, ring, pinky (image-left = thumb)
_FINGER_BASE_Y = np.array([-0.15, -0.48, -0.5, -0.46, -0.4])
_FINGER_ANGLE = np.array([-0.9, -0.12, 0.0, 0.12, 0.25])  # radians from vertical
_FINGER_SEG = np.array(
    [
        [0.0, 0.18, 0.14, 0.12],
        [0.0, 0.22, 0.13, 0.1],
        [0.0, 0.24, 0.15, 0.11],
        [0.0, 0.22, 0.14, 0.1],
        [0.0, 0.17, 0.11, 0.09],
    ]
)


def _hand_shape(curl: np.ndarray, rot: np.ndarray, size: np.ndarray, mirror: bool) -> np.ndarray:
    """[B, T, 21, 2] hand landmark offsets from the wrist; ``curl`` [B,T,5] in [0,1], ``rot`` [B,T] radians."""
    b, t = rot.shape
    pts = np.zeros((b, t, _N_HAND, 2))
    for f in range(5):
        shrink = 0.45 if f == 0 else 1.0  # the thumb's CMC sits closer to the wrist
        pos = np.broadcast_to(np.array([_FINGER_BASE_X[f], _FINGER_BASE_Y[f]]) * shrink, (b, t, 2))
        # Curling folds a finger towards the palm: in the image its segments shorten and tilt a little
        # (the thumb swings across the palm).
        bend = (0.5 if f == 0 else 0.15) * curl[..., f]
        fold = 1.0 - 0.5 * curl[..., f : f + 1]
        for j in range(4):
            if j > 0:
                angle = _FINGER_ANGLE[f] + j * bend
                pos = pos + _FINGER_SEG[f, j] * fold * np.stack([np.sin(angle), -np.cos(angle)], -1)
            pts[:, :, 1 + 4 * f + j] = pos
    if mirror:
        pts[..., 0] = -pts[..., 0]
    c, s = np.cos(rot)[..., None], np.sin(rot)[..., None]
    rotated = np.stack([c * pts[..., 0] - s * pts[..., 1], s * pts[..., 0] + c * pts[..., 1]], -1)
    return rotated * size[..., None, None]


def keypoint_sequence(rng: np.random.Generator, batch: int, steps: int = SEQ_LEN) -> np.ndarray:
    """[batch, steps, 178] float32 in [0, 1]: a plausible MediaPipe signer (pose 25, left 21, right 21, face 22)."""
    b, t = batch, steps
    # Per-sample framing: where the signer stands and how large they appear.
    scale = rng.uniform(0.85, 1.1, size=(b, 1, 1))
    nose0 = np.stack([rng.uniform(0.44, 0.56, b), rng.uniform(0.17, 0.24, b)], -1)[:, None, :]  # [B,1,2]
    sway = 0.012 * smooth_series(rng, b, t, 2, n_waves=2)  # body sway
    head = nose0 + sway + 0.01 * smooth_series(rng, b, t, 2, n_waves=3)  # head moves a little more than the body
    body = nose0 + sway

    def rel(anchor: np.ndarray, d: tuple[float, float]) -> np.ndarray:
        return anchor + scale * np.asarray(d)

    pose = np.zeros((b, t, _N_POSE, 2))
    for i, d in _POSE_HEAD.items():
        pose[:, :, i] = rel(head, d)
    for i, d in {**_SHOULDER, **_HIP}.items():
        pose[:, :, i] = rel(body, d)

    # Wrist trajectories in the signing space in front of the chest; the dominant (right) hand moves more.
    motion = smooth_series(rng, b, t, 4, n_waves=3)  # roughly [-1, 1]
    r_rest = rel(body, (-0.07, 0.3)) + scale * 0.11 * motion[..., 0:2]
    l_rest = rel(body, (0.1, 0.34)) + scale * 0.06 * motion[..., 2:4]
    wrists = {16: r_rest, 15: l_rest}
    hands = {}
    for side, (wrist_idx, shoulder_idx, mirror) in {"right": (16, 12, False), "left": (15, 11, True)}.items():
        wrist = wrists[wrist_idx]
        shoulder = pose[:, :, shoulder_idx]
        outward = -1.0 if side == "right" else 1.0
        elbow = shoulder + 0.55 * (wrist - shoulder) + scale * np.array([outward * 0.06, 0.1])
        pose[:, :, wrist_idx] = wrist
        pose[:, :, wrist_idx - 2] = elbow
        curl = np.clip(0.45 + 0.6 * smooth_series(rng, b, t, 5, n_waves=2), 0.0, 1.0)
        rot = (0.25 if side == "right" else -0.25) + 0.5 * smooth_series(rng, b, t, 1, n_waves=2)[..., 0]
        size = scale[..., 0] * rng.uniform(0.1, 0.12, size=(b, 1))
        offsets = _hand_shape(curl, rot, np.broadcast_to(size, (b, t)), mirror)
        hands[side] = wrist[:, :, None, :] + offsets
        # Pose pinky/index/thumb points (17..22) follow the hand landmarks 17, 5 and 4.
        parity = 0 if side == "left" else 1
        pose[:, :, 17 + parity] = hands[side][:, :, 17]
        pose[:, :, 19 + parity] = hands[side][:, :, 5]
        pose[:, :, 21 + parity] = hands[side][:, :, 4]

    # Face: 12 points on the face oval, 4 eyebrow points, 6 lip points (mouth opening varies).
    ang = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    oval = np.stack([0.065 * np.cos(ang), 0.085 * np.sin(ang) + 0.005], -1)
    brows = np.array([[-0.045, -0.045], [-0.02, -0.05], [0.02, -0.05], [0.045, -0.045]])
    lip_ang = np.linspace(0, 2 * np.pi, 6, endpoint=False)
    mouth_open = 0.004 + 0.006 * (1 + smooth_series(rng, b, t, 1, n_waves=3)[..., 0])  # [B,T]
    lips = np.zeros((b, t, 6, 2))
    lips[..., 0] = 0.025 * np.cos(lip_ang)
    lips[..., 1] = 0.04 + mouth_open[..., None] * np.sin(lip_ang)
    static = np.concatenate([oval, brows])[None, None]
    face = head[:, :, None, :] + scale[..., None] * np.concatenate(
        [np.broadcast_to(static, (b, t, 16, 2)), lips], axis=2
    )

    # MediaPipe drops hands it cannot see: zeros for a contiguous stretch in some clips.
    for i in range(b):
        if rng.random() < 0.3:
            side = "left" if rng.random() < 0.7 else "right"
            start = int(rng.integers(0, t - t // 5))
            stop = min(t, start + int(rng.integers(t // 20, t // 4)))
            hands[side][i, start:stop] = 0.0

    frames = np.concatenate([pose, hands["left"], hands["right"], face], axis=2)  # [B,T,89,2]
    frames = frames + 0.0015 * rng.standard_normal(frames.shape) * (frames != 0)
    out = np.clip(frames, 0.0, 1.0).reshape(b, t, INPUT_DIM)
    return out.astype(np.float32)


def _keypoint_input() -> InputSpec:
    return InputSpec(
        name="input",
        shape=(BATCH, "frames", INPUT_DIM),  # dynamic, as guide 002 exports it (default 300 frames)
        dtype="float32",
        layout="NTC",
        generator=lambda rng, batch, frames=SEQ_LEN: keypoint_sequence(rng, batch, frames),
        value_range=(0.0, 1.0),
        description="89 MediaPipe keypoints (25 pose, 21 left hand, 21 right hand, 22 face) as (x, y) in [0, 1]",
    )


_OUTPUTS = (
    OutputSpec("gloss_logits", (BATCH, NUM_GLOSS), kind="logits", description="105 FSL glosses"),
    OutputSpec("category_logits", (BATCH, NUM_CAT), kind="logits", description="10 gloss categories"),
)


def build_sign_transformer() -> SignTransformer:
    """The reference default SignTransformer (3,286,259 params)."""
    return SignTransformer(input_dim=INPUT_DIM, num_gloss=NUM_GLOSS, num_cat=NUM_CAT, max_len=SEQ_LEN)


def build_sign_gru() -> MediaPipeGRU:
    """The reference default MediaPipeGRU (497,907 params)."""
    return MediaPipeGRU(num_gloss=NUM_GLOSS, num_cat=NUM_CAT, input_dim=INPUT_DIM)


SIGN_RECIPE = heads_recipe("gloss_head", "category_head")
"""Reference weights: both classifier heads fitted over the frozen seeded body (speaker as gloss and category)."""


def specs() -> list[ModelSpec]:
    """``sign_transformer`` and ``sign_gru`` (smoke)."""
    source = "jeipab/Pansinayan-Mobile (models/transformer.py, models/mediapipe_gru.py)"
    return [
        ModelSpec(
            name="sign_transformer",
            family="sign_language",
            factory=build_sign_transformer,
            # guide 002's --sequence-length 500 needs a model built with max_len >= 500; this one has max_len 300
            axis_lengths={"frames": (SEQ_LEN, 150)},
            inputs=(_keypoint_input(),),
            outputs=_OUTPUTS,
            reference_params=3_286_259,
            description="SignTransformer: Linear 178->256, sinusoidal PE, custom LN, 4 pre-LN layers (8 heads, "
            "ff 1024), mean pooling, gloss/category MLP heads",
            notes=f"Faithful to {source}. Unannotated mask=None and the Tensor-or-tuple EncoderLayer return make "
            "torch.jit.script fail (trace works); the custom LayerNorm exports as ReduceMean/Sub/Pow/Sqrt/Div.",
            extra={"source": source, "max_len": SEQ_LEN},
            task=functools.partial(sign_task, max_eval=150),  # ~0.1 s per clip: a seeded eval subset
            training=SIGN_RECIPE,
        ),
        ModelSpec(
            name="sign_gru",
            family="sign_language",
            axis_lengths={"frames": (SEQ_LEN, 500)},  # guide 002: default 300, --sequence-length 500
            factory=build_sign_gru,
            inputs=(_keypoint_input(),),
            outputs=_OUTPUTS,
            reference_params=497_907,
            description="MediaPipeGRU: GRU 178->256, Dropout 0.3, GRU 256->128, last hidden, gloss/category heads",
            smoke=True,
            notes=f"Faithful to {source}. Exported without lengths (the pack_padded_sequence path is data-bound). "
            "PyTorch GRU has linear_before_reset=1 semantics (dynamo ONNX export was reported to drop it).",
            extra={"source": source},
            task=sign_task,
            training=SIGN_RECIPE,
        ),
    ]
