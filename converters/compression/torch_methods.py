"""PyTorch-side compression methods (guide 000) as TorchScript targets.

- ``torchscript:int8-dynamic``: ``torch.ao.quantization.quantize_dynamic`` of ``nn.Linear`` / ``nn.GRU`` /
  ``nn.LSTM`` to int8 weights, then ``torch.jit.trace`` (ONNX cannot export quantized GRUs; TorchScript can).
- ``torchscript:pruned-l1-20``: ``torch.nn.utils.prune.l1_unstructured(amount=0.2)`` on every Linear / Conv
  weight, made permanent (``prune.remove``), then traced. No fine-tuning: the accuracy gate measures what 20%
  magnitude pruning costs as is.

``transform(model)`` returns the eager transformed copy (the localisation compares it layer by layer).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from export_harness.converters.cache import Artifact
from export_harness.converters.exporters.torchscript import (
    TRACE_BATCH,
    TorchScriptRunner,
    quiet_jit_warnings,
    save_script_module,
)
from export_harness.converters.target import ExportError, Target
from export_harness.converters.util.errors import error_head
from export_harness.models.spec import ModelSpec, to_torch


class _TransformedTraceTarget(Target):
    """Transform an eager copy of the model, then trace it to TorchScript."""

    format = "torchscript"
    tier = "int8"

    def transform(self, model: nn.Module) -> tuple[nn.Module, dict[str, Any]]:
        raise NotImplementedError

    def convert(self, spec: ModelSpec, model: nn.Module, workdir: Path, deps: Mapping[str, Artifact]) -> dict[str, Any]:
        try:
            transformed, facts = self.transform(model)
            example = to_torch(spec.example_inputs(TRACE_BATCH, seed=1234), spec.input_names)
            with warnings.catch_warnings(), torch.no_grad():
                quiet_jit_warnings()
                warnings.simplefilter("ignore")
                traced = torch.jit.trace(transformed, example, check_trace=False)
            save_script_module(traced, workdir / "model.pt")
        except Exception as exc:
            raise ExportError(f"{self.name} failed: {error_head(exc)}") from exc
        return {"main": "model.pt", "versions": self.versions(), **facts}

    def load(self, artifact: Artifact, spec: ModelSpec) -> TorchScriptRunner:
        return TorchScriptRunner(artifact.path, spec)


class TorchDynamicInt8Target(_TransformedTraceTarget):
    """``torchscript:int8-dynamic``: dynamic int8 quantization of Linear/GRU/LSTM, traced."""

    precision = "int8-dynamic"
    tier = "int8-dynamic"
    LAYERS = (nn.Linear, nn.GRU, nn.LSTM)

    def config(self) -> dict[str, Any]:
        return {"layers": [c.__name__ for c in self.LAYERS], "dtype": "qint8", "trace_batch": TRACE_BATCH}

    def transform(self, model: nn.Module) -> tuple[nn.Module, dict[str, Any]]:
        from torch.ao.quantization import quantize_dynamic

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantized = quantize_dynamic(copy.deepcopy(model).eval(), set(self.LAYERS), dtype=torch.qint8)
        names = [n for n, m in quantized.named_modules() if type(m).__module__.startswith("torch.ao.nn.quantized")]
        if not names:
            raise ExportError(f"{self.name}: the model has no Linear/GRU/LSTM layer to quantize")
        return quantized, {"quantized_modules": len(names)}


class TorchPrunedTarget(_TransformedTraceTarget):
    """``torchscript:pruned-l1-20``: 20% L1 unstructured pruning of Linear/Conv weights, traced."""

    tier = "pruned"

    def __init__(self, amount: float = 0.2) -> None:
        self.amount = amount
        self.precision = f"pruned-l1-{round(amount * 100)}"

    def config(self) -> dict[str, Any]:
        return {"amount": self.amount, "layers": ["Linear", "Conv1d", "Conv2d"], "trace_batch": TRACE_BATCH}

    def transform(self, model: nn.Module) -> tuple[nn.Module, dict[str, Any]]:
        from torch.nn.utils import prune

        pruned = copy.deepcopy(model).eval()
        total = zeros = 0
        for module in pruned.modules():
            if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)) and getattr(module, "weight", None) is not None:
                prune.l1_unstructured(module, "weight", amount=self.amount)
                prune.remove(module, "weight")
                total += module.weight.numel()
                zeros += int((module.weight == 0).sum())
        return pruned, {"pruned_fraction": round(zeros / max(total, 1), 4)}
