"""Worker process of the divergence probes: converts and runs one ONNX sub-model per request (warm: TensorFlow is
imported once per backend, not once per probe). Started through :mod:`export_harness.converters.tf.isolation` in
the backend's interpreter (the default stack, or the onnx-tf venv), so it imports only the stdlib, numpy,
:mod:`~export_harness.converters.divergence.standalone` and the worker loop."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from export_harness.converters.divergence import standalone
from export_harness.converters.tf.worker_loop import serve


def _load(path: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def probe(backend: str, precision: str, onnx_path: str, inputs: str, expected: str, outputs: str, workdir: str,
          keep_shape: list[str]) -> dict[str, Any]:
    """Convert ``onnx_path`` with ``backend``, run it on ``inputs`` (.npz), write its outputs to ``outputs`` (.npz)."""
    t0 = time.perf_counter()
    path = standalone.convert(backend, precision, onnx_path, workdir, keep_shape)
    t1 = time.perf_counter()
    result = standalone.run(backend, precision, path, _load(inputs), _load(expected))
    np.savez(outputs, **result)
    if backend == "onnx2tf":
        import tf_keras

        tf_keras.backend.clear_session()  # one conversion's Keras layer names must not leak into the next
    return {"convert_seconds": t1 - t0, "run_seconds": time.perf_counter() - t1}


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    serve({"probe": probe})
