"""Deployable entry points of guide 000's handlers (its ``main.py``), configured by environment variables.

- ``SERVING_RUNTIME``: ``onnx`` (default), ``torchscript``, ``tflite`` or ``eager``;
- ``SERVING_ARTIFACT``: the ``.onnx`` / TorchScript ``.pt`` / ``.tflite`` file (``eager``: an optional weights file);
- ``SERVING_MODEL``: the model's spec in the registry, whose inputs are the request keys (default ``bst_cg_ap``).

Google Cloud Functions / functions-framework::

    functions-framework --source=converters/serving/main.py --target=predict_badminton_shot --port=8080

AWS Lambda: handler ``export_harness.converters.serving.main.lambda_handler``. The model is loaded on the first
request, once per
process (the guide's ``load_model()`` global): never before gunicorn forks its worker, whose runtime thread pools
would not survive the fork.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from export_harness.converters.serving.handlers import (
    Handler,
    cloud_function_response,
    lambda_response,
    onnx_handler,
    tflite_handler,
    torch_handler,
)

RUNTIMES = ("onnx", "torchscript", "tflite", "eager")

_handler: Handler | None = None
_lock = threading.Lock()


def load_handler(runtime: str, artifact: str | None, model: str = "bst_cg_ap") -> Handler:
    """The handler of ``runtime`` on ``artifact`` for the registry's spec ``model``."""
    from export_harness.models.registry import default_registry

    spec = default_registry().get(model)
    if runtime not in RUNTIMES:
        raise ValueError(f"SERVING_RUNTIME: expected one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if runtime == "eager":
        return torch_handler(spec.build(artifact), spec)
    if not artifact:
        raise ValueError(f"SERVING_ARTIFACT: the {runtime} runtime needs an artifact file")
    if runtime == "onnx":
        return onnx_handler(artifact, spec)
    if runtime == "tflite":
        return tflite_handler(artifact, spec)
    import torch

    return torch_handler(torch.jit.load(artifact, map_location="cpu"), spec)


def handler() -> Handler:
    """The process's handler, loaded from the environment on first use."""
    global _handler
    if _handler is None:
        with _lock:
            if _handler is None:
                _handler = load_handler(os.environ.get("SERVING_RUNTIME", "onnx"), os.environ.get("SERVING_ARTIFACT"),
                                        os.environ.get("SERVING_MODEL", "bst_cg_ap"))
    return _handler


def _loaded() -> Handler | dict[str, Any]:
    try:
        return handler()
    except Exception as exc:
        return {"error": f"model not loaded: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}


def predict_badminton_shot(request: Any) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Cloud Functions (functions-framework) HTTP entry point: flask request -> JSON response."""
    loaded = _loaded()
    if isinstance(loaded, dict):
        return loaded, 500, {"Content-Type": "application/json"}
    return cloud_function_response(loaded, request)


def lambda_handler(event: Any, context: Any = None) -> dict[str, Any]:
    """AWS Lambda entry point: API Gateway event -> ``{"statusCode", "headers", "body"}``."""
    loaded = _loaded()
    if isinstance(loaded, dict):
        import json

        return {"statusCode": 500, "headers": {"Content-Type": "application/json"}, "body": json.dumps(loaded)}
    return lambda_response(loaded, event)
