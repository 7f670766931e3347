"""Worker process for every TensorFlow-side operation: conversions (onnx2tf, onnx-tf, litert-torch,
ai-edge-quantizer) and execution (LiteRT interpreter, TensorFlow SavedModel).

Started by :mod:`export_harness.converters.tf.isolation` as ``python -m export_harness.converters.tf.tf_worker`` in
the default stack, or with the
legacy onnx-tf venv's interpreter. The conversion ops live here (their source is part of every TF artifact's
cache key); the execution and inspection ops are in :mod:`export_harness.converters.tf.tf_worker_runtime` (not part of
the key).
Only the stdlib and numpy are imported at start-up, each framework lazily inside the op that needs it, so the
legacy venv never touches torch or litert-torch. Arrays travel as ``.npz`` files; results are JSON dicts.
Policy (names, layouts, quantization, tolerances) stays in the parent
(:mod:`export_harness.converters.tf.tflite_runtime`); this
file only does what needs the framework.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from export_harness.converters.tf.tf_worker_runtime import RUNTIME_HANDLERS, load_npz, tflite_inspect
from export_harness.converters.tf.worker_loop import serve
from export_harness.converters.util.versions import package_versions

ONNX2TF_IMAGE_SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"
"""File onnx2tf otherwise downloads for image-like inputs; looked up in the CWD first."""


@contextlib.contextmanager
def _cwd(path: Path):
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


# ------------------------------------------------------------------------------------------------ conversions


def onnx2tf_convert(onnx_path: str, out_dir: str, keep_shape: list[str], calibration: dict[str, str],
                    image_sample: str | None, batch_size: int | None, quant_type: str) -> dict[str, Any]:
    """One onnx2tf run writing ``out_dir``: SavedModel plus float32/float16/dynamic-range/integer .tflite files.

    ``calibration`` maps input names to .npy files in TF layout (>= 100 samples of the spec's realistic data).
    Runs in a scratch CWD holding ``image_sample`` (else onnx2tf downloads one) with the venv's ``bin/`` on PATH
    (onnx2tf calls ``onnxsim``), on a copy of the ONNX file (onnx2tf overwrites its input). The parent collects
    the files, so whatever was written before a crash (e.g. during int8 calibration) survives it.
    """
    import onnx2tf

    scratch = Path(out_dir).parent / (Path(out_dir).name + "-scratch")
    scratch.mkdir(parents=True, exist_ok=True)
    model_copy = scratch / "model.onnx"
    shutil.copyfile(onnx_path, model_copy)
    if image_sample:
        shutil.copyfile(image_sample, scratch / ONNX2TF_IMAGE_SAMPLE)
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    cind = [[name, path, np.zeros(1, np.float32), np.ones(1, np.float32)] for name, path in calibration.items()]
    t0 = time.perf_counter()
    with _cwd(scratch):
        onnx2tf.convert(
            input_onnx_file_path=str(model_copy), output_folder_path=out_dir, output_signaturedefs=True,
            copy_onnx_input_output_names_to_tflite=True, output_integer_quantized_tflite=True,
            quant_type=quant_type, custom_input_op_name_np_data_path=cind or None,
            keep_shape_absolutely_input_names=keep_shape or None, batch_size=batch_size, non_verbose=True,
        )
    shutil.rmtree(scratch, ignore_errors=True)
    return {"seconds": time.perf_counter() - t0,
            "versions": package_versions("onnx2tf", "tensorflow", "onnx", "onnxsim", "onnxslim", "ai-edge-litert")}


def onnx_tf_convert(onnx_path: str, out_dir: str, calibration: str) -> dict[str, Any]:
    """onnx-tf ``prepare(...).export_graph`` to a SavedModel, then TFLiteConverter for the four precisions.

    ``calibration`` is an .npz of >= 100 samples per input (PyTorch layout: onnx-tf keeps NCHW). A precision
    whose TFLiteConverter raises is reported in ``errors``; the others are kept.
    """
    import onnx
    import tensorflow as tf
    from onnx_tf.backend import prepare

    out = Path(out_dir)
    t0 = time.perf_counter()
    prepare(onnx.load(onnx_path)).export_graph(str(out / "saved_model"))
    seconds = {"savedmodel": time.perf_counter() - t0}
    calib = load_npz(calibration)
    count = len(next(iter(calib.values())))
    loaded = tf.saved_model.load(str(out / "saved_model"))
    sig = loaded.signatures["serving_default"]
    arg_names = list(sig.structured_input_signature[1])
    del loaded, sig

    def representative() -> Any:
        for i in range(count):
            yield {name: calib[name][i:i + 1] for name in arg_names}

    produced, errors = {}, {}
    for precision in ("fp32", "fp16", "int8-dynamic", "int8-full"):
        t0 = time.perf_counter()
        conv = tf.lite.TFLiteConverter.from_saved_model(str(out / "saved_model"))
        if precision == "fp16":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.target_spec.supported_types = [tf.float16]
        elif precision == "int8-dynamic":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
        elif precision == "int8-full":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = representative
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
        try:
            (out / f"model_{precision}.tflite").write_bytes(conv.convert())
            produced[precision] = f"model_{precision}.tflite"
        except Exception as exc:
            from export_harness.converters.util.errors import error_head_and_tail

            errors[precision] = error_head_and_tail(exc)
        seconds[precision] = time.perf_counter() - t0
    return {"seconds": seconds, "tflite": produced, "errors": errors, "savedmodel": "saved_model",
            "versions": package_versions("onnx-tf", "tensorflow-cpu", "tensorflow-addons", "onnx", "ai-edge-litert")}


def litert_torch_convert(pickled: str | None, program: str, sample: str, out_path: str) -> dict[str, Any]:
    """litert-torch: ``litert_torch.convert(model, args)`` -> float .tflite (quantization is a separate op).

    ``pickled`` is the model pickled by the parent (its classes import from the repo), converted exactly as a user
    would; when it is absent or cannot be unpickled here (a class defined in a conftest), the parent's
    ``torch.export`` program's module is converted instead (``route`` says which).
    """
    import litert_torch
    import torch

    inputs = load_npz(sample)
    args = tuple(torch.from_numpy(inputs[f"arg{i}"]) for i in range(len(inputs)))
    route = "nn.Module"
    try:
        if not pickled:
            raise FileNotFoundError("no pickled module")
        model = torch.load(pickled, weights_only=False).eval()  # written by the parent process of this run
    except Exception as exc:
        print(f"litert_torch_convert: using the exported program ({exc})", file=sys.stderr)
        model, route = torch.export.load(program).module(), "torch.export program"
    t0 = time.perf_counter()
    litert_torch.convert(model, args).export(out_path)
    return {"seconds": time.perf_counter() - t0, "route": route,
            "versions": package_versions("litert-torch", "litert-converter", "torch")}


def aeq_quantize(float_model: str, out_path: str, recipe: str, calibration: str | None = None) -> dict[str, Any]:
    """ai-edge-quantizer on a float .tflite: ``fp16`` (litert-torch's fp16 recipe), ``dynamic_wi8_afp32``, or
    ``static_wi8_ai8`` calibrated on ``calibration`` (.npz keyed by signature input name) with int8 I/O."""
    from ai_edge_quantizer import quantizer
    from ai_edge_quantizer import recipe as recipes

    t0 = time.perf_counter()
    q = quantizer.Quantizer(float_model)
    if recipe == "fp16":
        from litert_torch.generative.quantize import quant_recipes
        from litert_torch.quantize import translate_recipe

        q.load_quantization_recipe(
            translate_recipe.translate_to_ai_edge_recipe(quant_recipes.full_fp16_recipe().generative_recipe))
    else:
        q.load_quantization_recipe(getattr(recipes, recipe)())
    if calibration:
        from ai_edge_litert.interpreter import Interpreter

        interp = Interpreter(float_model)
        key = next(iter(interp.get_signature_list()))
        details = interp.get_signature_runner(key).get_input_details()
        calib = load_npz(calibration)
        count = len(next(iter(calib.values())))
        # the file's own input dtypes (litert-torch turns int64 inputs into int32), as a user feeding it would
        samples = [{name: calib[name][i:i + 1].astype(d["dtype"]) for name, d in details.items()} for i in range(count)]
        result = q.quantize(q.calibrate({key: samples}))
    else:
        result = q.quantize()
    result.export_model(out_path, overwrite=True)
    io_rewritten = False
    if recipe.startswith("static") and _has_float_io(out_path):
        from ai_edge_litert import _pywrap_modify_model_interface as interface
        from ai_edge_litert import schema_py_generated as schema

        tmp = out_path + ".floatio"
        os.replace(out_path, tmp)
        interface.modify_model_interface(tmp, out_path, schema.TensorType.INT8, schema.TensorType.INT8)
        os.unlink(tmp)
        io_rewritten = True
    return {"seconds": time.perf_counter() - t0, "io_rewritten_to_int8": io_rewritten,
            "versions": package_versions("ai-edge-quantizer", "ai-edge-litert", "litert-torch")}


def _has_float_io(path: str) -> bool:
    facts = tflite_inspect(path)
    return any(d["dtype"] == "float32" for d in facts["inputs"] + facts["outputs"])


HANDLERS = {
    "onnx2tf_convert": onnx2tf_convert,
    "onnx_tf_convert": onnx_tf_convert,
    "litert_torch_convert": litert_torch_convert,
    "aeq_quantize": aeq_quantize,
    **RUNTIME_HANDLERS,  # defined there so that a new execution op does not change this file (the cache key)
}

if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    serve(HANDLERS)
