"""onnx2tf backend: ``onnx:fp32`` -> one onnx2tf run -> SavedModel + fp32/fp16/int8-dynamic/int8-full .tflite.

The run is the ``tf:savedmodel[onnx2tf]`` artifact (a bundle); each ``tflite:PRECISION[onnx2tf]`` target takes
its file from it, so onnx2tf runs once per model, not once per precision. Measured pitfalls handled here
(docs/stack.md): onnx2tf overwrites its input (a copy is converted), calls ``onnxsim`` through
PATH, downloads a calibration image unless a file of that name is in the CWD (one is made from the spec's
data), and transposes every rank>=3 input unless told to keep it (``-kat`` for non-image inputs). Full-integer
calibration uses ``-cind`` with 128 samples of the spec's realistic data in TF layout.

If onnx2tf fails or crashes part-way (TF's converter segfaults calibrating some RNNs, or rejects int64 inputs
in calibration), the files written before are kept and each missing precision carries that error (for a crash:
the signal and the last stderr lines) as its own export error.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from export_harness.converters.cache import Artifact
from export_harness.converters.target import ExportError, StageError, Target
from export_harness.converters.tf.isolation import WorkerCrash, WorkerTimeout
from export_harness.converters.tf.tf_worker import ONNX2TF_IMAGE_SAMPLE
from export_harness.converters.tf.tflite import (
    PRECISIONS,
    Backend,
    BundleFileTarget,
    SavedModelTarget,
    calibration_data,
    channels_last,
    image_inputs,
)
from export_harness.models.spec import ModelSpec

ONNX2TF = Backend(
    name="onnx2tf",
    modules=("onnx2tf", "tensorflow", "tf_keras", "onnx_graphsurgeon", "sng4onnx", "onnxsim", "ai_edge_litert"),
    tox_env="py311",
    packages=("onnx2tf", "tensorflow", "tf_keras", "onnx", "onnxsim", "onnxslim", "onnx_graphsurgeon",
              "ai-edge-litert"),
    install_hint="install the harness's tf extra: pip install 'export-conformance-harness[tf]'",
)
ONNX2TF_FILES = {"fp32": "model_float32.tflite", "fp16": "model_float16.tflite",
                 "int8-dynamic": "model_dynamic_range_quant.tflite", "int8-full": "model_full_integer_quant.tflite"}
QUANT_TYPE = "per-channel"


def _image_sample(calib: Mapping[str, np.ndarray], names: list[str]) -> np.ndarray | None:
    """onnx2tf's [20,128,128,3] sample for RGB inputs, cut from the spec's own images (never downloaded)."""
    for name in names:
        x = calib[name]
        if x.ndim == 4 and x.shape[1] == 3:
            nhwc = channels_last(x[:20].astype(np.float32))
            rows = np.linspace(0, nhwc.shape[1] - 1, 128).astype(int)
            cols = np.linspace(0, nhwc.shape[2] - 1, 128).astype(int)
            return np.ascontiguousarray(nhwc[:, rows][:, :, cols])
    return None


class Onnx2tfSavedModel(SavedModelTarget):
    """``tf:savedmodel[onnx2tf]``: the onnx2tf bundle, checked and run as a SavedModel on TensorFlow."""

    backend_spec = ONNX2TF
    depends_on = ("onnx:fp32",)
    calibrated = True  # int8-full .tflite of the bundle

    def config(self) -> dict[str, Any]:
        return {**super().config(), "quant_type": QUANT_TYPE, "files": ONNX2TF_FILES}

    def _run(self, out: Path, **args: Any) -> dict[str, Any]:
        """One onnx2tf worker run; a failure after the SavedModel was written is returned as ``partial``."""
        try:
            return self.backend_spec.call("onnx2tf_convert", fresh=True, **args)
        except WorkerTimeout:
            raise
        except StageError as exc:  # a Python error or a crash: keep what was written before it
            if not (out / "saved_model.pb").is_file():
                raise ExportError(f"onnx2tf failed: {exc}") from exc
            verb = "crashed" if isinstance(exc, WorkerCrash) else "failed"
            return {"partial": f"onnx2tf {verb} after writing the SavedModel: {exc}"}

    def convert(self, spec: ModelSpec, model: nn.Module, workdir: Path, deps: Mapping[str, Artifact]) -> dict[str, Any]:
        onnx_file = deps["onnx:fp32"].path
        nchw = image_inputs(spec)
        keep = [i.name for i in spec.inputs if len(i.shape) >= 3 and i.name not in nchw]
        calib = calibration_data(spec)
        scratch = workdir / "inputs"
        scratch.mkdir()
        files = {}
        for name, x in calib.items():
            files[name] = str(scratch / f"calib_{name}.npy")
            np.save(files[name], channels_last(x) if name in nchw else x)
        sample = _image_sample(calib, nchw)
        sample_path = None
        if sample is not None:
            sample_path = str(scratch / ONNX2TF_IMAGE_SAMPLE)
            np.save(sample_path, sample)
        out = workdir / "saved_model"
        args = {"onnx_path": str(onnx_file), "out_dir": str(out), "keep_shape": keep, "calibration": files,
                "image_sample": sample_path, "batch_size": None, "quant_type": QUANT_TYPE}
        result = self._run(out, **args)  # onnx2tf saves the SavedModel before any .tflite, int8 calibration last
        crash = result.pop("partial", None)
        produced, errors = {}, {}
        for precision in PRECISIONS:
            src = out / ONNX2TF_FILES[precision]
            if src.is_file():
                src.rename(workdir / f"model_{precision}.tflite")
                produced[precision] = f"model_{precision}.tflite"
            else:
                errors[precision] = crash or "onnx2tf finished without writing this file"
        for extra in out.glob("*.tflite"):  # float-IO integer and int16-activation variants: not targets
            extra.unlink()
        shutil.rmtree(scratch)
        shutil.rmtree(workdir / "saved_model-scratch", ignore_errors=True)  # onnx2tf's CWD, left by a failure
        return {"main": "saved_model", "tflite": produced, "errors": errors, "channels_last": nchw,
                "keep_layout": keep, "onnx2tf_seconds": result.get("seconds"),
                "versions": result.get("versions") or self.versions(), "crash": crash}


class Onnx2tfTFLite(BundleFileTarget):
    """``tflite:PRECISION[onnx2tf]``: one file of the onnx2tf bundle."""

    backend_spec = ONNX2TF
    bundle = "tf:savedmodel[onnx2tf]"


def onnx2tf_targets() -> list[Target]:
    return [Onnx2tfSavedModel(), *(Onnx2tfTFLite(p) for p in PRECISIONS)]
