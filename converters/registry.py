"""The target registry: built-in targets plus those installed packages declare as entry points."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable

from export_harness.converters.compression.guide_quant_target import GuideQuantizerTarget
from export_harness.converters.exporters.onnx_export import OnnxExportTarget
from export_harness.converters.exporters.torchscript import TorchScriptTarget
from export_harness.converters.target import Target
from export_harness.converters.variants import guide_chain_variants, opset_variants, sweep_opsets

ENTRY_POINT_GROUP = "export_harness.targets"


def builtin_targets() -> list[Target]:
    """The conformance targets of the default stack, in matrix column order; then their copies on the opset axis
    (``converters/defaults/opsets.toml``) and guide 001's quantize -> ONNX -> TF chain
    (``export_harness.converters.variants``)."""
    base = [
        TorchScriptTarget("trace"),
        TorchScriptTarget("script"),
        OnnxExportTarget("torchscript", opset=17),
        OnnxExportTarget("dynamo", opset=18),
        GuideQuantizerTarget(),
        *_method_targets(),
        *_tflite_targets(),
    ]
    opsets = sweep_opsets()
    return [*base, *opset_variants(base, opsets), *guide_chain_variants(base, opsets)]


def _method_targets() -> list[Target]:
    """Compression methods of the accuracy gates (ONNX Runtime fp16 / int8, torch dynamic int8, L1 pruning)."""
    from export_harness.converters.compression.ort_methods import (
        OrtDynamicInt8Target,
        OrtFp16Target,
        OrtStaticInt8Target,
    )
    from export_harness.converters.compression.torch_methods import TorchDynamicInt8Target, TorchPrunedTarget

    return [
        OrtFp16Target(),
        OrtDynamicInt8Target(),
        *(OrtStaticInt8Target(method) for method in OrtStaticInt8Target.METHODS),
        OrtStaticInt8Target("minmax", per_channel=False),
        TorchDynamicInt8Target(),
        TorchPrunedTarget(0.2),
    ]


def _tflite_targets() -> list[Target]:
    """TF/TFLite targets of the three backends. Always listed: a backend that is not installed skips its cells
    with a one-line reason naming the tox env that provides it (``unavailable_reason()``)."""
    from export_harness.converters.tf.tf_litert_torch import litert_torch_targets
    from export_harness.converters.tf.tf_onnx2tf import onnx2tf_targets
    from export_harness.converters.tf.tf_onnx_tf import onnx_tf_targets

    return [*onnx2tf_targets(), *litert_torch_targets(), *onnx_tf_targets()]


class TargetRegistry:
    """Ordered name -> Target map; names must be unique."""

    def __init__(self, targets: Iterable[Target] = ()) -> None:
        self._targets: dict[str, Target] = {}
        for target in targets:
            self.register(target)

    def register(self, target: Target) -> Target:
        if not isinstance(target, Target):
            raise TypeError(f"register() expects a Target, got {type(target).__name__}")
        if target.name in self._targets:
            raise ValueError(f"target {target.name!r} is already registered")
        self._targets[target.name] = target
        return target

    def get(self, name: str) -> Target:
        try:
            return self._targets[name]
        except KeyError:
            raise KeyError(f"unknown target {name!r}; registered: {', '.join(self._targets)}") from None

    def targets(self) -> list[Target]:
        return list(self._targets.values())

    def names(self) -> list[str]:
        return list(self._targets)


def default_target_registry(include_entry_points: bool = True) -> TargetRegistry:
    reg = TargetRegistry(builtin_targets())
    if include_entry_points:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            provided = ep.load()
            for target in provided() if callable(provided) else provided:
                reg.register(target)
    return reg
