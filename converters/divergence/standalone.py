"""Convert one ONNX file with a backend's converter, run it on that backend's runtime, compare with expected outputs.

This module is the backend path of the divergence finder *and* the body of every reproducer's ``repro.py`` (its source
is copied there verbatim): what the finder probed is exactly what a converter's maintainer runs. So it imports only the
standard library and numpy at module level, each converter lazily inside the function that needs it, and never the
harness. It runs in the backend's own interpreter (the onnx-tf venv has numpy 1.26 and onnx 1.14).

Backends (``BACKEND``, ``PRECISION``): ``onnx2tf`` with ``savedmodel`` / ``fp32`` / ``fp16`` (onnx2tf's SavedModel and
its float32 / float16 .tflite on ai-edge-litert), ``onnx-tf`` with the same three (onnx-tf's SavedModel, TF's
TFLiteConverter), ``ort-fp16`` (ONNX Runtime's ``convert_float_to_float16(keep_io_types=True)`` on ONNX Runtime) and
``ort`` (plain ONNX Runtime: the reference). From a ``torch.export`` program (``.pt2``, its example inputs kept):
``litert-torch`` with ``fp32`` / ``fp16`` (litert-torch's .tflite, its fp16 recipe, on ai-edge-litert), and the ONNX
exporter ``torch-onnx`` (TorchScript-based, at ``opset``) / ``torch-onnx-dynamo`` on ONNX Runtime.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

SATURATED = 1e30
"""Beyond this magnitude two values of the same sign are the same (a mask's -inf and a converter's lowest float)."""
FP16_MAX = 65504.0
"""float16's largest finite value: in an fp16 artifact a mask's -inf may come out as -65504 (the same mask)."""


def saturation(precision: str) -> float:
    """The magnitude beyond which two values of the same sign are the same mask value for ``precision``."""
    return FP16_MAX if precision == "fp16" else SATURATED


def _norm(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


def convert(backend: str, precision: str, onnx_path: str, workdir: str, keep_shape: list[str],
            opset: int | None = None) -> str:
    """Convert ``onnx_path`` (for the PyTorch backends: a ``torch.export`` program, ``.pt2``) into ``workdir``;
    returns the file or directory to run."""
    work = Path(workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    onnx_path = str(Path(onnx_path).resolve())
    if backend == "onnx2tf":
        import onnx2tf

        scratch = work / "scratch"
        scratch.mkdir(exist_ok=True)
        copy = scratch / "model.onnx"  # onnx2tf overwrites its input
        shutil.copyfile(onnx_path, copy)
        os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        out = work / "saved_model"
        with contextlib.chdir(scratch):  # onnx2tf calls onnxsim through PATH and writes stray files into its CWD
            try:
                onnx2tf.convert(input_onnx_file_path=str(copy), output_folder_path=str(out),
                                output_signaturedefs=True, copy_onnx_input_output_names_to_tflite=True,
                                keep_shape_absolutely_input_names=keep_shape or None, non_verbose=True)
            except Exception:
                # onnx2tf writes the SavedModel before its .tflite files: a TFLite converter error does not concern it
                if precision != "savedmodel" or not (out / "saved_model.pb").is_file():
                    raise
        files = {"savedmodel": out, "fp32": out / "model_float32.tflite", "fp16": out / "model_float16.tflite"}
        return str(files[precision])
    if backend == "onnx-tf":
        import onnx
        from onnx_tf.backend import prepare

        saved = work / "saved_model"
        prepare(onnx.load(onnx_path)).export_graph(str(saved))
        if precision == "savedmodel":
            return str(saved)
        import tensorflow as tf

        conv = tf.lite.TFLiteConverter.from_saved_model(str(saved))
        if precision == "fp16":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.target_spec.supported_types = [tf.float16]
        path = work / f"model_{precision}.tflite"
        path.write_bytes(conv.convert())
        return str(path)
    if backend == "litert-torch":
        import litert_torch
        import torch

        program = torch.export.load(onnx_path)
        args, _ = program.example_inputs
        path = work / "model_float32.tflite"
        litert_torch.convert(program.module(), args).export(str(path))
        if precision == "fp16":  # litert-torch's fp16 recipe: float16 weights (ai-edge-quantizer)
            from ai_edge_quantizer import quantizer
            from litert_torch.generative.quantize import quant_recipes
            from litert_torch.quantize import translate_recipe

            q = quantizer.Quantizer(str(path))
            q.load_quantization_recipe(
                translate_recipe.translate_to_ai_edge_recipe(quant_recipes.full_fp16_recipe().generative_recipe))
            path = work / "model_float16.tflite"
            path.write_bytes(q.quantize().quantized_model)
        return str(path)
    if backend in ("torch-onnx", "torch-onnx-dynamo"):
        import torch

        program = torch.export.load(onnx_path)
        args, _ = program.example_inputs
        path = work / "model.onnx"
        names = [f"args_{i}" for i in range(len(args))]
        if backend == "torch-onnx":  # the TorchScript-based exporter, at the cell's opset
            unlifted = program.module()  # refuses train(), which the exporter calls: a plain GraphModule of it
            module = torch.fx.GraphModule(unlifted, unlifted.graph)
            torch.onnx.export(module, args, str(path), input_names=names, opset_version=opset or 17,
                              dynamo=False, do_constant_folding=True)
        else:
            torch.onnx.export(program, args, str(path), input_names=names, dynamo=True, external_data=False,
                              verbose=False)
        return str(path)
    if backend in ("ort-fp16", "ort"):
        import onnx

        model = onnx.load(onnx_path)
        if backend == "ort-fp16":
            from onnxruntime.transformers.float16 import convert_float_to_float16

            model = convert_float_to_float16(model, keep_io_types=True)
        path = work / "model.onnx"
        onnx.save(model, str(path))
        return str(path)
    raise ValueError(f"unknown backend {backend!r}")


def _candidates(array: np.ndarray) -> list[np.ndarray]:
    """``array`` as is, then channels-last (a TF converter's layout of a rank >= 3 tensor)."""
    out = [array]
    if array.ndim >= 3:
        out.append(np.ascontiguousarray(np.moveaxis(array, 1, -1)))
    return out


def _from_artifact(value: np.ndarray, shape: tuple[int, ...]) -> list[np.ndarray]:
    """``value`` mapped back to the ONNX ``shape``: as is and/or from channels-last, whichever shapes fit."""
    value = np.asarray(value)
    found = [value] if value.shape == shape else []
    if value.ndim >= 3:
        back = np.moveaxis(value, -1, 1)
        if back.shape == shape:
            found.append(back)
    return found


def _error(expected: np.ndarray, actual: np.ndarray, saturated: float = SATURATED) -> float:
    """The largest disagreement (the same rules as :func:`judge`)."""
    exp, act = np.asarray(expected, np.float64), np.asarray(actual, np.float64)
    if exp.shape != act.shape:
        return float("inf")
    same = (exp == act) | (np.isnan(exp) & np.isnan(act))
    same |= ((exp <= -saturated) & (act <= -saturated)) | ((exp >= saturated) & (act >= saturated))
    diff = np.where(same, 0.0, np.abs(exp - act))
    return float(np.nan_to_num(diff, nan=np.inf).max()) if diff.size else 0.0


class _Run:
    """The converted artifact opened on its runtime: named inputs -> named outputs (its own layouts)."""

    def __init__(self, backend: str, precision: str, path: str) -> None:
        onnx_file = backend.startswith(("ort", "torch-onnx"))
        self.kind = "onnx" if onnx_file else ("savedmodel" if precision == "savedmodel" else "tflite")
        if self.kind == "onnx":
            import onnxruntime as ort

            self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            self.inputs = {i.name: tuple(i.shape) for i in self.session.get_inputs()}
            self.outputs = [o.name for o in self.session.get_outputs()]
            self.dtypes = {}
        elif self.kind == "tflite":
            from ai_edge_litert.interpreter import Interpreter

            self.interpreter = Interpreter(model_path=path, num_threads=2)
            signatures = self.interpreter.get_signature_list()
            if signatures:
                key = "serving_default" if "serving_default" in signatures else next(iter(signatures))
                self.runner = self.interpreter.get_signature_runner(key)
                ins, outs = self.runner.get_input_details(), self.runner.get_output_details()
            else:  # no signature: the tensors' own names
                self.runner = None
                ins = {d["name"]: d for d in self.interpreter.get_input_details()}
                outs = {d["name"]: d for d in self.interpreter.get_output_details()}
            self.index = {n: int(d["index"]) for n, d in {**ins, **outs}.items()}
            self.inputs = {n: tuple(int(s) for s in d["shape_signature"]) for n, d in ins.items()}
            self.dtypes = {n: np.dtype(d["dtype"]) for n, d in ins.items()}
            self.outputs = list(outs)
        else:
            import tensorflow as tf

            self.loaded = tf.saved_model.load(path)
            self.function = self.loaded.signatures["serving_default"]
            specs = self.function.structured_input_signature[1]
            self.inputs = {n: tuple(-1 if d is None else int(d) for d in s.shape.as_list()) for n, s in specs.items()}
            self.dtypes = {n: np.dtype(s.dtype.as_numpy_dtype) for n, s in specs.items()}
            self.outputs = list(self.function.structured_outputs)

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {n: v.astype(self.dtypes[n]) if n in self.dtypes and v.dtype != self.dtypes[n] else v
                 for n, v in feeds.items()}
        if self.kind == "onnx":
            return dict(zip(self.outputs, self.session.run(self.outputs, feeds), strict=True))
        if self.kind == "tflite" and self.runner is not None:
            return {k: np.asarray(v) for k, v in self.runner(**feeds).items()}
        if self.kind == "tflite":
            interp = self.interpreter
            for name, value in feeds.items():
                interp.resize_tensor_input(self.index[name], list(value.shape))
            interp.allocate_tensors()
            for name, value in feeds.items():
                interp.set_tensor(self.index[name], value)
            interp.invoke()
            return {name: np.array(interp.get_tensor(self.index[name])) for name in self.outputs}
        import tensorflow as tf

        return {k: np.asarray(v) for k, v in self.function(**{n: tf.constant(v) for n, v in feeds.items()}).items()}


def _match(wanted: list[str], available: list[str]) -> dict[str, str]:
    """ONNX name -> the artifact's name for it, one to one: exact, then equal once normalised, then one normalised name
    ending with the other, at least 6 characters (onnx2tf prefixes names that start with '/' with ``wa``), then by
    position."""
    found: dict[str, str] = {}
    def suffix(w: str, a: str) -> bool:
        short, long = sorted((_norm(w), _norm(a)), key=len)
        return len(short) >= 6 and long.endswith(short)

    rules = (lambda w, a: a == w, lambda w, a: _norm(a) == _norm(w), suffix)
    for rule in rules:
        for name in wanted:
            if name not in found:
                hits = [a for a in available if a not in found.values() and rule(name, a)]
                if hits:
                    found[name] = hits[0]
    rest = [a for a in available if a not in found.values()]
    for name in wanted:
        if name not in found:
            found[name] = rest.pop(0) if rest else available[0]
    return found


def _fits(shape: tuple[int, ...], signature: Any) -> bool:
    return len(shape) == len(signature) and all(s in (-1, None, 0, d) or isinstance(s, str)
                                                for d, s in zip(shape, signature, strict=True))


def run(backend: str, precision: str, path: str, inputs: dict[str, np.ndarray],
        expected: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run the converted artifact on ``inputs`` (ONNX names and layouts); outputs in ONNX names and layouts.

    A TF converter may take and give a rank >= 3 tensor channels-last: an input goes in whichever layout the
    artifact's signature accepts, an output comes back in whichever layout has the ONNX shape; where both fit (a
    square tensor) every combination is run and the one closest to ``expected`` kept (a layout is not a miscompile).
    """
    runner = _Run(backend, precision, path)
    names = _match(list(inputs), list(runner.inputs))
    options = []
    for name, value in inputs.items():
        sig = runner.inputs[names[name]]
        fits = [c for c in _candidates(np.asarray(value)) if _fits(c.shape, sig)]
        options.append(fits or [np.asarray(value)])
    best: dict[str, np.ndarray] | None = None
    best_error = float("inf")
    for combo in itertools.product(*options):
        feeds = {names[n]: v for n, v in zip(inputs, combo, strict=True)}
        raw = runner(feeds)
        out_names = _match(list(expected), list(raw))
        outputs: dict[str, np.ndarray] = {}
        total = 0.0
        for name, exp in expected.items():
            cands = _from_artifact(raw[out_names[name]], np.shape(exp)) or [np.asarray(raw[out_names[name]])]
            errors = [_error(exp, c, saturation(precision)) for c in cands]
            pick = int(np.argmin(errors))
            outputs[name], total = cands[pick], max(total, errors[pick])
        if best is None or total < best_error:
            best, best_error = outputs, total
    assert best is not None
    return best


def judge(expected: np.ndarray, actual: np.ndarray, tolerance: dict[str, float], saturated: float = SATURATED
          ) -> tuple[bool, float, float]:
    """(passes, cosine, max_abs) under the harness's tier: cosine >= cosine_min and every element within
    ``atol + rtol*|ref| + scale_atol*max|ref|``. NaN where the reference has NaN, and two values of the same sign
    beyond ``saturated`` (-inf and float32's lowest in an attention mask), count as agreement."""
    exp, act = np.asarray(expected, np.float64), np.asarray(actual, np.float64)
    if exp.shape != act.shape:
        return False, float("nan"), float("inf")
    same = (exp == act) | (np.isnan(exp) & np.isnan(act))
    same |= ((exp <= -saturated) & (act <= -saturated)) | ((exp >= saturated) & (act >= saturated))
    exp, act = exp[~same], act[~same]
    finite = np.isfinite(exp) & np.isfinite(act)
    diff = np.where(finite, np.abs(exp - act), np.inf)
    e, a = exp[finite], act[finite]
    ne, na = np.linalg.norm(e), np.linalg.norm(a)
    cosine = 1.0 if ne == 0 and na == 0 else (0.0 if ne == 0 or na == 0 else float(np.dot(e, a) / (ne * na)))
    if not finite.all():
        cosine = float("nan")
    magnitude = np.abs(np.where(np.isfinite(exp), exp, 0.0))
    scale = float(magnitude.max()) if magnitude.size else 0.0
    allowed = tolerance["atol"] + tolerance["rtol"] * magnitude + tolerance.get("scale_atol", 0.0) * scale
    max_abs = float(diff.max()) if diff.size else 0.0
    passed = bool(cosine >= tolerance["cosine_min"]) and bool(np.all(diff <= allowed))
    return passed, cosine, max_abs


def mismatches(expected: np.ndarray, actual: np.ndarray, tolerance: dict[str, float], saturated: float = SATURATED
               ) -> int:
    """How many elements are beyond the tier's elementwise bound (same rules as :func:`judge`)."""
    exp, act = np.asarray(expected, np.float64), np.asarray(actual, np.float64)
    if exp.shape != act.shape:
        return int(exp.size)
    same = (exp == act) | (np.isnan(exp) & np.isnan(act))
    same |= ((exp <= -saturated) & (act <= -saturated)) | ((exp >= saturated) & (act >= saturated))
    magnitude = np.abs(np.where(np.isfinite(exp), exp, 0.0))
    scale = float(magnitude.max()) if magnitude.size else 0.0
    allowed = tolerance["atol"] + tolerance["rtol"] * magnitude + tolerance.get("scale_atol", 0.0) * scale
    with np.errstate(invalid="ignore"):
        bad = ~same & ~(np.abs(exp - act) <= allowed)
    return int(bad.sum())


def main(config: dict[str, Any], here: Path) -> int:
    """The reproducer: convert ``model.onnx`` (``model.pt2``) as ``config`` says, run ``inputs.npz``, compare with
    ``expected.npz`` (ONNX Runtime or PyTorch, fp32); prints one line per output and exits 1 on a mismatch."""
    with np.load(here / "inputs.npz") as f:
        inputs = {k: f[k] for k in f.files}
    with np.load(here / "expected.npz") as f:
        expected = {k: f[k] for k in f.files}
    work = here / "work"
    shutil.rmtree(work, ignore_errors=True)
    path = convert(config["backend"], config["precision"], str(here / config.get("model", "model.onnx")), str(work),
                   config.get("keep_shape", []), config.get("opset"))
    actual = run(config["backend"], config["precision"], path, inputs, expected)
    mismatch = False
    for name, exp in expected.items():
        limit = saturation(config["precision"])
        ok, cosine, max_abs = judge(exp, actual[name], config["tolerance"], limit)
        bad = mismatches(exp, actual[name], config["tolerance"], limit)
        mismatch |= not ok
        if np.shape(actual[name]) != np.shape(exp):
            print(f"{name}: MISMATCH shape {list(np.shape(actual[name]))} instead of {list(np.shape(exp))}")
            mismatch = True
            continue
        print(f"{name}: {'OK' if ok else 'MISMATCH'} cosine {cosine:.6f} max_abs {max_abs:.6g}, {bad} of "
              f"{np.size(exp)} elements off (shape {list(np.shape(exp))}; tolerance {config['tolerance']})")
    print(f"{config['backend']} {config['precision']}: "
          f"{'MISMATCH' if mismatch else 'matches ' + config.get('reference', 'ONNX Runtime')}")
    return 1 if mismatch else 0
