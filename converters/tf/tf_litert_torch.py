"""litert-torch backend: PyTorch -> .tflite directly (no ONNX, no SavedModel), quantized with ai-edge-quantizer.

``tflite:fp32[litert-torch]`` converts the model with ``litert_torch.convert(model, args)`` in a worker, at
batch 1 with the spec's realistic inputs: the model travels pickled (its classes import from the repo); a model
that cannot be unpickled there is sent as the ``torch.export`` program made here instead (meta ``route``). The other
precisions quantize that float file in the worker, as ``litert_torch.convert(quant_config=...)`` itself does
after lowering (so the model is lowered once, not four times):

- ``fp16``: litert-torch's ``full_fp16_recipe`` translated to its ai-edge-quantizer recipe (fp16 weights);
- ``int8-dynamic``: ai-edge-quantizer ``dynamic_wi8_afp32`` (int8 weights, float activations and I/O);
- ``int8-full``: ai-edge-quantizer ``static_wi8_ai8`` calibrated on 128 samples of the spec's data, then the
  float I/O boundary replaced by int8 I/O (``ai_edge_litert``'s model-interface tool) so the file really takes
  and returns int8.

The signature keeps the PyTorch layout; its tensors are named ``args_<i>`` / ``output_<i>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from export_harness.converters.cache import Artifact
from export_harness.converters.exporters.onnx_export import export_mode
from export_harness.converters.target import ExportError, StageError, Target
from export_harness.converters.tf.isolation import WorkerTimeout
from export_harness.converters.tf.tflite import PRECISIONS, Backend, TFLiteTarget, calibration_data
from export_harness.converters.util.errors import error_head
from export_harness.models.spec import ModelSpec, to_torch

LITERT_TORCH = Backend(
    name="litert-torch",
    modules=("litert_torch", "ai_edge_quantizer", "ai_edge_litert"),
    tox_env="py311",
    packages=("litert-torch", "litert-converter", "ai-edge-quantizer", "ai-edge-litert", "torch"),
    install_hint="install the harness's tf extra: pip install 'export-conformance-harness[tf]'",
)
EXPORT_BATCH = 1
"""litert-torch exports a static batch; the runner loops larger batches sample by sample."""
RECIPES = {"fp16": "fp16", "int8-dynamic": "dynamic_wi8_afp32", "int8-full": "static_wi8_ai8"}


class LiteRTTorchTFLite(TFLiteTarget):
    """``tflite:PRECISION[litert-torch]``."""

    backend_spec = LITERT_TORCH
    positional_names = ("args_{i}", "output_{i}")

    @property
    def depends_on(self) -> tuple[str, ...]:  # type: ignore[override]
        return () if self.precision == "fp32" else ("tflite:fp32[litert-torch]",)

    @property
    def calibrated(self) -> bool:  # type: ignore[override]
        return self.precision == "int8-full"

    def config(self) -> dict[str, Any]:
        return {**super().config(), "export_batch": EXPORT_BATCH, "recipe": RECIPES.get(self.precision)}

    def convert(self, spec: ModelSpec, model: nn.Module, workdir: Path, deps: Mapping[str, Artifact]) -> dict[str, Any]:
        out = workdir / "model.tflite"
        if self.precision == "fp32":
            result = self._convert_float(spec, model, workdir, out)
            fp32_size = None
        else:
            base = deps["tflite:fp32[litert-torch]"]
            args: dict[str, Any] = {"float_model": str(base.path), "out_path": str(out),
                                    "recipe": RECIPES[self.precision]}
            if self.precision == "int8-full":
                calib = calibration_data(spec)
                args["calibration"] = str(workdir / "calibration.npz")
                np.savez(args["calibration"], **{f"args_{i}": calib[n] for i, n in enumerate(spec.input_names)})
            try:
                result = self.backend_spec.call("aeq_quantize", name="litert-torch-convert", **args)
            except WorkerTimeout:
                raise
            except StageError as exc:
                raise ExportError(f"ai-edge-quantizer {RECIPES[self.precision]} failed: {exc}") from exc
            finally:
                (workdir / "calibration.npz").unlink(missing_ok=True)
            fp32_size = base.path.stat().st_size
        return {"main": "model.tflite", "versions": result.get("versions") or self.versions(),
                "worker_seconds": result.get("seconds"), "fp32_size_bytes": fp32_size, "route": result.get("route"),
                "export_batch": EXPORT_BATCH, "recipe": RECIPES.get(self.precision, "litert_torch.convert")}

    def _convert_float(self, spec: ModelSpec, model: nn.Module, workdir: Path, out: Path) -> dict[str, Any]:
        inputs = spec.example_inputs(EXPORT_BATCH, seed=1234)
        args = to_torch(inputs, spec.input_names)
        program, sample, pickled = workdir / "program.pt2", workdir / "sample.npz", workdir / "module.pt"
        try:
            with export_mode(), torch.no_grad():
                torch.export.save(torch.export.export(model, args), str(program))
        except Exception as exc:
            raise ExportError(f"torch.export (for litert-torch) failed: {error_head(exc)}") from exc
        try:
            torch.save(model, str(pickled))
        except Exception:  # unpicklable model: the worker converts the exported program instead
            pickled.unlink(missing_ok=True)
        np.savez(sample, **{f"arg{i}": inputs[n] for i, n in enumerate(spec.input_names)})
        try:
            return self.backend_spec.call("litert_torch_convert", name="litert-torch-convert",
                                          pickled=str(pickled) if pickled.exists() else None, program=str(program),
                                          sample=str(sample), out_path=str(out))
        except WorkerTimeout:
            raise
        except StageError as exc:
            raise ExportError(f"litert_torch.convert failed: {exc}") from exc
        finally:
            for path in (program, sample, pickled):
                path.unlink(missing_ok=True)


def litert_torch_targets() -> list[Target]:
    return [LiteRTTorchTFLite(p) for p in PRECISIONS]
