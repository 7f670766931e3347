"""TinyLaDeDa: the 1,297-parameter distilled patch-level deepfake detector (WildRF student).

Source: ``barcavia/RealTime-DeepfakeDetection-in-the-RealWorld`` (Cavia et al., arXiv 2406.09398),
``networks/Tiny_LaDeDa.py``; the deployment guide builds it through the "Team-Converge deepfake-patch-audit"
wrapper as ``tiny_ladeda(preprocess_type="right_diag", num_classes=1, pool=False)``. Layer list, checkpoint keys
and parameter count: ``reference/MODELS.md`` section 2. The code below is written from that description and keeps
the constructs that matter for export: the fixed gradient kernel created inside ``preprocess`` (``grad_kernel =
None`` then assigned, string branches, depthwise ``F.conv2d(..., padding="same")``) and the ``nn.AvgPool2d`` built
inside ``forward`` from the runtime feature-map size.

Deviations (all deliberate):
- ``fc`` is ``Linear(8, 1)``. Upstream declares ``Linear(8 * expansion, 1)`` (= 32, inconsistent with the 8-channel
  output) and its ``test.py`` / ``tiny_trainer.py`` replace it with ``Linear(features_dim=8, 1)``; the released
  checkpoints have ``fc.weight (1, 8)``. We build the replaced layer directly (``features_dim=8``).
- The registered factories randomise every BatchNorm's running stats (and affine weight/bias) from a fixed seed.
  The upstream init leaves BN trivial (mean 0, var 1, weight 1, bias 0), which would let an exporter that drops or
  mis-folds BN still pass parity. Real weights (a user checkpoint with the 21 keys below) overwrite all of it.
- No trained weights ship here (the upstream ``.pth`` files are under a non-commercial licence).

``TinyLaDeDaExportable`` is an export-friendly rewrite (``x.mean((2, 3))`` instead of the in-forward AvgPool, the
gradient kernel as a non-persistent buffer, ``padding=1``); it is scriptable and deliberately *not* registered as a
variant. It has the same state_dict keys. ``suites/test_family_tiny_ladeda.py`` proves the equivalence: the patch
map is bit-identical in float32; the pooled logit is identical in float64, while in float32 it differs from the
faithful one by AvgPool2d's own accumulation rounding over 126x126 values (a few 1e-6 on logits of ~0.3; ``mean``
is the one closer to the float64 value).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from export_harness.models.proxy_tasks import ProxyTask, ladeda_task
from export_harness.models.spec import BATCH, InputSpec, ModelSpec, OutputSpec, TrainingRecipe
from export_harness.models.synthetic import IMAGENET_MEAN, IMAGENET_STD, imagenet_normalize, natural_image
from export_harness.models.training import fit

IMAGE_SIZE = 256
PATCH_GRID = 126
REFERENCE_PARAMS = 1_297
BN_STATS_SEED = 20_240_613
"""Seed of the deterministic BatchNorm-statistics randomisation applied by the registered factories."""

CHECKPOINT_KEYS = (
    "conv1.weight",
    "conv2.weight",
    "bn1.weight",
    "bn1.bias",
    "bn1.running_mean",
    "bn1.running_var",
    "bn1.num_batches_tracked",
    "layer1.0.conv1.weight",
    "layer1.0.bn1.weight",
    "layer1.0.bn1.bias",
    "layer1.0.bn1.running_mean",
    "layer1.0.bn1.running_var",
    "layer1.0.bn1.num_batches_tracked",
    "layer1.0.conv2.weight",
    "layer1.0.bn2.weight",
    "layer1.0.bn2.bias",
    "layer1.0.bn2.running_mean",
    "layer1.0.bn2.running_var",
    "layer1.0.bn2.num_batches_tracked",
    "fc.weight",
    "fc.bias",
)
"""The 21 tensors of the released ``WildRF_Tiny_LaDeDa.pth`` / ``ForenSynth_Tiny_LaDeDa.pth`` checkpoints."""

GRAD_KERNELS: dict[str, list[list[float]]] = {
    "x_grad": [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]],
    "y_grad": [[-1, -2, -1], [0, 0, 0], [1, 2, 1]],
    "left_diag": [[0, 1, 2], [-1, 0, 1], [-2, -1, 0]],
    "right_diag": [[-2, -1, 0], [-1, 0, 1], [0, 1, 2]],
}
"""3x3 gradient filters of the upstream ``preprocess`` (applied per RGB channel)."""


class Bottleneck(nn.Module):
    """Upstream ``Bottleneck`` as used by the student: 1x1 conv, BN, ReLU, kxk conv (pad 0), BN, ReLU; no residual."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, kernel_size: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=kernel_size, stride=stride, padding=0, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        out = self.relu(out)
        return out


class TinyLaDeDa(nn.Module):
    """Faithful TinyLaDeDa student. ``pool=True``: image logit [B, 1]; ``pool=False``: patch logits [B, 1, H', W']."""

    def __init__(
        self,
        block: type[Bottleneck],
        layer: int,
        stride: int,
        kernel: int,
        preprocess_type: str,
        num_classes: int = 1,
        pool: bool = True,
        features_dim: int = 8,
    ) -> None:
        self.inplanes = 8
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, kernel_size=1, stride=1, padding=0, bias=False)
        self.conv2 = nn.Conv2d(8, 8, kernel_size=3, stride=1, padding=0, bias=False)
        self.bn1 = nn.BatchNorm2d(8, momentum=0.001)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, 8, blocks=layer, stride=stride, kernel3=kernel)
        self.avgpool = nn.AvgPool2d(1, stride=1)  # declared upstream but unused; stateless
        # Upstream declares Linear(8 * block.expansion, ...) and replaces it with Linear(features_dim=8, ...).
        self.fc = nn.Linear(features_dim, num_classes)
        self.pool = pool
        self.block = block
        self.preprocess_type = preprocess_type
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2.0 / n))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()

    def _make_layer(
        self, block: type[Bottleneck], planes: int, blocks: int, stride: int = 1, kernel3: int = 0
    ) -> nn.Sequential:
        # Upstream appends exactly one block whatever ``blocks`` is; kernel3 != 0 selects a 3x3 kernel.
        kernel = 1 if kernel3 == 0 else 3
        layers = [block(self.inplanes, planes, stride, kernel_size=kernel)]
        self.inplanes = planes * block.expansion
        return nn.Sequential(*layers)

    def interpolate(self, img: torch.Tensor, factor: float) -> torch.Tensor:
        down = F.interpolate(img, scale_factor=factor, mode="nearest", recompute_scale_factor=True)
        return F.interpolate(down, scale_factor=1 / factor, mode="nearest", recompute_scale_factor=True)

    def preprocess(self, x: torch.Tensor, preprocess_type: str) -> torch.Tensor:
        if preprocess_type == "raw":
            return x
        if preprocess_type == "NPR":
            return x - self.interpolate(x, 0.5)
        grad_kernel = None
        # Define kernels for gradients in x, y, and diagonal directions
        if preprocess_type == "x_grad":
            grad_kernel = torch.tensor([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=torch.float32, device=x.device)
            grad_kernel = grad_kernel.unsqueeze(0).unsqueeze(0).repeat(3, 1, 1, 1)
        if preprocess_type == "y_grad":
            grad_kernel = torch.tensor([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], dtype=torch.float32, device=x.device)
            grad_kernel = grad_kernel.unsqueeze(0).unsqueeze(0).repeat(3, 1, 1, 1)
        if preprocess_type == "left_diag":
            grad_kernel = torch.tensor([[0, 1, 2], [-1, 0, 1], [-2, -1, 0]], dtype=torch.float32, device=x.device)
            grad_kernel = grad_kernel.unsqueeze(0).unsqueeze(0).repeat(3, 1, 1, 1)
        if preprocess_type == "right_diag":
            grad_kernel = torch.tensor([[-2, -1, 0], [-1, 0, 1], [0, 1, 2]], dtype=torch.float32, device=x.device)
            grad_kernel = grad_kernel.unsqueeze(0).unsqueeze(0).repeat(3, 1, 1, 1)
        return F.conv2d(x, grad_kernel, groups=3, padding="same")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(x, self.preprocess_type)
        x = self.conv1(x)
        x = self.conv2(x)
        x = self.bn1(x)
        x = self.relu(x)
        x = self.layer1(x)
        if self.pool:
            x = nn.AvgPool2d(x.size()[2], stride=1)(x)
            x = x.view(x.size(0), -1)
            x = self.fc(x)
        else:
            x = x.permute(0, 2, 3, 1)
            x = self.fc(x)
            x = x.permute(0, 3, 1, 2)
        return x


class TinyLaDeDaExportable(TinyLaDeDa):
    """Export-friendly equivalent: kernel as a (non-persistent) buffer, ``padding=1``, global mean instead of AvgPool.

    Same parameters and state_dict keys as :class:`TinyLaDeDa`, so checkpoints load into either. Only the gradient
    preprocess types are supported (``raw`` / ``NPR`` are not needed by the registered variants).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.preprocess_type not in GRAD_KERNELS:
            raise ValueError(f"TinyLaDeDaExportable supports {sorted(GRAD_KERNELS)}, got {self.preprocess_type!r}")
        kernel = torch.tensor(GRAD_KERNELS[self.preprocess_type], dtype=torch.float32)
        self.register_buffer("grad_kernel", kernel.unsqueeze(0).unsqueeze(0).repeat(3, 1, 1, 1), persistent=False)

    @classmethod
    def from_model(cls, model: TinyLaDeDa) -> TinyLaDeDaExportable:
        """Export-friendly copy of a faithful model (same weights and buffers, same mode)."""
        out = cls(
            model.block,
            1,
            2,
            1,
            model.preprocess_type,
            num_classes=model.fc.out_features,
            pool=model.pool,
            features_dim=model.fc.in_features,
        )
        out.load_state_dict(model.state_dict())
        return out.train(model.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.grad_kernel, groups=3, padding=1)
        x = self.relu(self.bn1(self.conv2(self.conv1(x))))
        x = self.layer1(x)
        if self.pool:
            return self.fc(x.mean((2, 3)))
        return self.fc(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def tiny_ladeda(preprocess_type: str = "right_diag", **kwargs) -> TinyLaDeDa:
    """Upstream builder: one 3x3 stride-2 bottleneck (``kernel=1`` selects 3x3 in ``_make_layer``)."""
    return TinyLaDeDa(Bottleneck, layer=1, stride=2, kernel=1, preprocess_type=preprocess_type, **kwargs)


def randomize_batchnorm(model: nn.Module, seed: int = BN_STATS_SEED) -> nn.Module:
    """Deterministically give every BatchNorm non-trivial running stats and affine params (in place).

    running_mean ~ N(0, 0.5), running_var ~ U(0.5, 2), weight ~ U(0.75, 1.25), bias ~ N(0, 0.1). Independent of the
    global torch RNG, so the result depends only on ``seed`` and the module order.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.running_mean.copy_(0.5 * torch.randn(c, generator=gen))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(c, generator=gen))
                m.weight.copy_(0.75 + 0.5 * torch.rand(c, generator=gen))
                m.bias.copy_(0.1 * torch.randn(c, generator=gen))
    return model


def build_tiny_ladeda(pool: bool = True) -> TinyLaDeDa:
    """Registered factory: the guide's ``tiny_ladeda("right_diag", num_classes=1, pool=...)`` with randomised BN."""
    return randomize_batchnorm(tiny_ladeda("right_diag", num_classes=1, pool=pool))


def build_tiny_ladeda_exportable(pool: bool = True) -> TinyLaDeDaExportable:
    """Export-friendly twin of :func:`build_tiny_ladeda` (same RNG consumption, hence same weights for one seed)."""
    model = TinyLaDeDaExportable(Bottleneck, 1, 2, 1, "right_diag", num_classes=1, pool=pool)
    return randomize_batchnorm(model)


def image_input(rng: np.random.Generator, batch: int) -> np.ndarray:
    """[batch, 3, 256, 256] ImageNet-normalised natural-looking RGB images (1/f spectrum, hard edges)."""
    return imagenet_normalize(natural_image(rng, batch, IMAGE_SIZE, IMAGE_SIZE))


_VALUE_RANGE = (
    float(((0.0 - IMAGENET_MEAN) / IMAGENET_STD).min()),
    float(((1.0 - IMAGENET_MEAN) / IMAGENET_STD).max()),
)

_INPUT = InputSpec(
    name="input",
    shape=(BATCH, 3, IMAGE_SIZE, IMAGE_SIZE),
    dtype="float32",
    layout="NCHW",
    generator=image_input,
    value_range=_VALUE_RANGE,
    description="RGB resized to 256 (no crop), ImageNet mean/std normalised",
)

_NOTES = (
    "Seeded upstream init plus deterministic BatchNorm randomisation (running stats and affine) so that BN folding "
    "is exercised by parity checks; user checkpoints with the 21 upstream keys replace all of it. Tracing bakes the "
    "AvgPool kernel (126) and the gradient kernel as constants; scripting the faithful module fails (AvgPool built "
    "in forward, Optional kernel, string branches)."
)


def train_ladeda(spec: ModelSpec, model: nn.Module, task: ProxyTask) -> None:
    """Reference weights: every parameter, binary cross-entropy of the mean output logit (fake = 1) on 64x64 crops."""
    x = torch.from_numpy(task.train_inputs["input"])
    y = torch.from_numpy(task.train_labels).float()
    with torch.enable_grad():
        fit(list(model.parameters()), lambda b: F.binary_cross_entropy_with_logits(
            model(x[b]).reshape(len(b), -1).mean(1), y[b]), len(y), 4, 1e-2, 64)


def specs() -> list[ModelSpec]:
    """The two registered TinyLaDeDa variants: pooled image logit and patch-logit map."""
    pooled, patch = [
        ModelSpec(
            name="tiny_ladeda",
            family="tiny_ladeda",
            guide_opsets=(12,),  # guide 001: opset 12, then onnx-tf -> TFLite
            guide_chains=("guide-int8",),  # guide 001 quantizes first: quantizer -> ONNX -> TF -> TFLite
            factory=lambda: build_tiny_ladeda(pool=True),
            inputs=(_INPUT,),
            outputs=(OutputSpec("logit", (BATCH, 1), kind="logit", description="image logit; sigmoid = P(fake)"),),
            reference_params=REFERENCE_PARAMS,
            description="TinyLaDeDa (right_diag, pool=True): 1,297-param deepfake detector, pooled image logit",
            smoke=True,
            notes=_NOTES,
            # accuracy: real crops of bundled photos vs their down/up-sampled fakes, AUC of the mean logit
            task=functools.partial(ladeda_task, "logit"),
            training=TrainingRecipe(train_ladeda),
        ),
        ModelSpec(
            name="tiny_ladeda_patch",
            family="tiny_ladeda",
            guide_opsets=(12,),  # guide 001: opset 12, then onnx-tf -> TFLite
            guide_chains=("guide-int8",),  # guide 001 quantizes first: quantizer -> ONNX -> TF -> TFLite
            factory=lambda: build_tiny_ladeda(pool=False),
            inputs=(_INPUT,),
            outputs=(
                OutputSpec(
                    "patch_logits",
                    (BATCH, 1, PATCH_GRID, PATCH_GRID),
                    kind="map",
                    description="per-patch logits, 7x7 receptive field, stride 2",
                ),
            ),
            reference_params=REFERENCE_PARAMS,
            description="TinyLaDeDa (right_diag, pool=False): the guide's patch-logit map [B,1,126,126]",
            notes=_NOTES,
            task=functools.partial(ladeda_task, "patch_logits"),
        ),
    ]
    # the same state dict as the pooled variant: its trained reference weights, trained once
    return [pooled, dataclasses.replace(patch, weights_from=pooled)]
