"""onnx-tf backend (guides 001/002's path): ``onnx:fp32`` -> onnx-tf SavedModel -> TFLiteConverter, four precisions.

onnx-tf 1.10 only works beside tensorflow-cpu 2.15.1 / tensorflow-addons 0.23 / tensorflow-probability 0.23 /
onnx 1.14.1 / numpy 1.26.4, which cannot share a venv with the core stack (numpy 2, onnx 1.23). So the pytest
process stays in the default env (same torch, same ``onnx:fp32`` artifact, IR 8 / opset 17 as the guide
exports) and everything onnx-tf does runs in a worker on that venv's interpreter, named by
``$HARNESS_ONNX_TF_PYTHON``, else the venv ``export-harness setup onnx-tf`` builds (:data:`DEFAULT_VENV`). The
same worker runs the SavedModel on
TF 2.15 and the .tflite files on ai-edge-litert 2.3.0 (which installs there too), so the runtime is the same
reference interpreter as the other backends.

One worker call makes the bundle ``tf:savedmodel[onnx-tf]`` (SavedModel plus the four .tflite files:
fp16 via ``supported_types=[tf.float16]``, dynamic range via ``Optimize.DEFAULT``, full integer via a
representative dataset of 128 realistic samples with int8 I/O); ``tflite:PRECISION[onnx-tf]`` take their file.
onnx-tf keeps the ONNX (PyTorch) layout, so no transposes are declared.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from export_harness.converters.cache import Artifact
from export_harness.converters.target import ExportError, StageError, Target
from export_harness.converters.tf.isolation import WorkerTimeout
from export_harness.converters.tf.tflite import (
    PRECISIONS,
    Backend,
    BundleFileTarget,
    SavedModelTarget,
    calibration_data,
)
from export_harness.models.spec import ModelSpec

REQUIREMENTS = ("tensorflow-cpu==2.15.1", "tensorflow-addons==0.23.0", "tensorflow-probability==0.23.0",
                "onnx==1.14.1", "onnx-tf==1.10.0", "numpy==1.26.4", "protobuf==4.25.9", "ai-edge-litert==2.3.0")
"""The onnx-tf venv's pinned stack (the versions onnx-tf 1.10 installs cleanly with, measured together)."""
DEFAULT_VENV = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "export-conformance-harness-onnx-tf"
"""Where ``export-harness setup onnx-tf`` builds the venv by default, and where the backend looks for it."""

ONNX_TF = Backend(
    name="onnx-tf",
    modules=("onnx_tf", "tensorflow", "tensorflow_addons", "tensorflow_probability", "onnx", "ai_edge_litert"),
    tox_env="legacy",
    packages=("onnx-tf", "tensorflow-cpu", "tensorflow-addons", "tensorflow-probability", "onnx", "numpy",
              "ai-edge-litert"),
    python_env_var="HARNESS_ONNX_TF_PYTHON",
    install_hint=f"run `export-harness setup onnx-tf` (builds the pinned TF 2.15 venv in {DEFAULT_VENV}, where the "
                 "harness finds it; or point $HARNESS_ONNX_TF_PYTHON at such a venv's python)",
    default_python=DEFAULT_VENV / "bin" / "python",
)


class OnnxTfSavedModel(SavedModelTarget):
    """``tf:savedmodel[onnx-tf]``: the onnx-tf bundle, run as a SavedModel on TF 2.15."""

    backend_spec = ONNX_TF
    depends_on = ("onnx:fp32",)
    calibrated = True  # int8-full .tflite of the bundle

    def convert(self, spec: ModelSpec, model: nn.Module, workdir: Path, deps: Mapping[str, Artifact]) -> dict[str, Any]:
        calib = workdir / "calibration.npz"
        np.savez(calib, **calibration_data(spec))
        try:
            result = self.backend_spec.call("onnx_tf_convert", fresh=True, onnx_path=str(deps["onnx:fp32"].path),
                                            out_dir=str(workdir), calibration=str(calib))
        except WorkerTimeout:
            raise
        except StageError as exc:
            raise ExportError(f"onnx-tf failed: {exc}") from exc
        finally:
            calib.unlink(missing_ok=True)
        return {"main": "saved_model", "tflite": result["tflite"], "errors": result["errors"],
                "channels_last": [], "worker_seconds": result["seconds"], "versions": result["versions"]}


class OnnxTfTFLite(BundleFileTarget):
    """``tflite:PRECISION[onnx-tf]``: one file of the onnx-tf bundle."""

    backend_spec = ONNX_TF
    bundle = "tf:savedmodel[onnx-tf]"


def onnx_tf_targets() -> list[Target]:
    return [OnnxTfSavedModel(), *(OnnxTfTFLite(p) for p in PRECISIONS)]
