"""Guide 000's serving handlers, one per runtime, behind one contract
(:mod:`export_harness.converters.serving.contract`).

A :class:`Handler` takes a request body (JSON text, bytes, or an already parsed JSON value) and returns
``(status, body dict)``: 200 with the guide's response, 400 with ``{"error", "field"}`` for a request the contract
rejects (never a 500), 500 with ``{"error"}`` when the runtime fails on a valid request. The guide's three handlers map
to :func:`torch_handler` (its TorchScript Cloud Function and Lambda: ``torch.jit.load`` gives an ``nn.Module``),
:func:`onnx_handler` (its ONNX Runtime Cloud Function) and, beyond the guide, :func:`tflite_handler`.
:func:`cloud_function_response` and :func:`lambda_response` adapt a handler to a functions-framework (flask) request
and to an AWS Lambda API Gateway event.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from export_harness.converters.serving.contract import BadRequest, Contract, ServingError, build_response, parse_request
from export_harness.models.spec import ModelSpec

Predict = Callable[[dict[str, np.ndarray]], np.ndarray]
"""Named input arrays (the contract's dtypes) -> one batch of logits."""

JSON_HEADERS = {"Content-Type": "application/json", "Access-Control-Allow-Origin": "*"}
"""Response headers of the guide's Lambda handler."""

LITERT_POSITIONAL = ("args_{i}", "output_{i}")
"""Signature names of litert-torch .tflite files (tried after the spec's own names)."""


MAX_BODY_BYTES = 32 << 20
"""Largest request body read (``$SERVING_MAX_BODY_BYTES`` overrides): a full batch of ``MAX_BATCH`` BST clips is
about 20 MB of JSON; a larger body is refused with 413 before it is parsed."""


def max_body_bytes() -> int:
    """``$SERVING_MAX_BODY_BYTES`` (a positive integer), else :data:`MAX_BODY_BYTES`."""
    text = os.environ.get("SERVING_MAX_BODY_BYTES", "")
    if not text:
        return MAX_BODY_BYTES
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"SERVING_MAX_BODY_BYTES: expected a positive integer, got {text!r}")
    return int(text)


class Handler:
    """One runtime behind the contract. ``serialize``: one request at a time (runtimes that are not thread-safe);
    ``max_body``: the largest body (bytes or text) parsed, else 413."""

    def __init__(self, predict: Predict, contract: Contract, runtime: str, *, serialize: bool = False,
                 max_body: int | None = None) -> None:
        self.predict = predict
        self.contract = contract
        self.runtime = runtime
        self.max_body = max_body or max_body_bytes()
        self._lock = threading.Lock() if serialize else None

    def too_large(self, size: int | None) -> tuple[int, dict[str, Any]] | None:
        """The 413 answer for a body of ``size`` bytes, or None when it may be read."""
        if size is not None and size > self.max_body:
            return 413, {"error": f"body: at most {self.max_body} bytes, got {size}", "field": "body"}
        return None

    def __call__(self, body: Any) -> tuple[int, dict[str, Any]]:
        refused = self.too_large(len(body)) if isinstance(body, (bytes, bytearray, str)) else None
        if refused:
            return refused
        try:
            inputs = parse_request(body, self.contract)
        except BadRequest as exc:
            return 400, {"error": str(exc), "field": exc.field}
        try:
            if self._lock is None:
                logits = self.predict(inputs)
            else:
                with self._lock:
                    logits = self.predict(inputs)
            return 200, build_response(logits, self.contract, inputs)
        except ServingError as exc:
            return 500, {"error": f"{self.runtime}: {exc}"}
        except Exception as exc:  # a runtime failure on a valid request: a server error, reported in one line
            head = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            return 500, {"error": f"{self.runtime}: {type(exc).__name__}: {head}"}

    def __repr__(self) -> str:
        return f"<Handler {self.runtime}>"


def torch_handler(model: nn.Module, spec: ModelSpec) -> Handler:
    """PyTorch: an eager ``nn.Module`` or a loaded TorchScript file (``torch.jit.load``), called positionally in the
    spec's input order under ``torch.inference_mode``."""
    import torch

    contract = Contract.from_spec(spec)
    model.eval()

    def predict(inputs: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            out = model(*(torch.from_numpy(inputs[n]) for n in contract.names))
        out = out[0] if isinstance(out, (tuple, list)) else out
        return out.detach().cpu().numpy()

    kind = "torchscript" if isinstance(model, torch.jit.ScriptModule) else "torch"
    return Handler(predict, contract, kind)


def onnx_handler(path: str | Path, spec: ModelSpec, threads: int = 0) -> Handler:
    """ONNX Runtime (CPU) on an ``.onnx`` file, through the harness's :class:`OnnxRuntimeRunner`."""
    from export_harness.converters.exporters.onnx_runner import OnnxRuntimeRunner

    contract = Contract.from_spec(spec)
    runner = OnnxRuntimeRunner(Path(path), spec, threads=threads)
    return Handler(lambda inputs: runner(inputs)[contract.output], contract, "onnxruntime")


def tflite_handler(tflite: str | Path | Any, spec: ModelSpec) -> Handler:
    """LiteRT on a ``.tflite`` path (opened with the harness's :class:`TFLiteRunner` in its worker process), or on a
    runner a TFLite target's ``load`` returned. Requests are served one at a time (the runner's exchange with its
    worker is not thread-safe)."""
    contract = Contract.from_spec(spec)
    if isinstance(tflite, (str, Path)):
        from export_harness.converters.tf.tflite_runtime import TFLiteRunner

        runner = TFLiteRunner(Path(tflite), spec, positional=LITERT_POSITIONAL)
    else:
        runner = tflite
    return Handler(lambda inputs: runner(inputs)[contract.output], contract, "litert", serialize=True)


def cloud_function_response(handler: Handler, request: Any) -> tuple[dict[str, Any], int, dict[str, str]]:
    """A functions-framework (flask) request -> ``(body, status, headers)``, which flask serializes as JSON. The raw
    body is parsed by the contract (flask's own ``get_json`` would answer invalid JSON with an HTML page)."""
    if request.method != "POST":
        return {"error": f"method: expected POST, got {request.method}"}, 405, {**JSON_HEADERS, "Allow": "POST"}
    refused = handler.too_large(request.content_length)  # before reading it
    if refused:
        return refused[1], refused[0], dict(JSON_HEADERS)
    status, body = handler(request.get_data(cache=False))
    return body, status, dict(JSON_HEADERS)


def lambda_response(handler: Handler, event: Any) -> dict[str, Any]:
    """An AWS Lambda event -> ``{"statusCode", "headers", "body"}``. API Gateway events (REST ``httpMethod`` or HTTP
    API ``requestContext.http.method``; ``body`` a JSON string, base64 when ``isBase64Encoded``); an event without
    ``body`` is the request itself (direct invocation), as in the guide's ``lambda_handler``."""
    status, body = _lambda_status_body(handler, event)
    return {"statusCode": status, "headers": dict(JSON_HEADERS), "body": json.dumps(body, allow_nan=False)}


def _lambda_status_body(handler: Handler, event: Any) -> tuple[int, dict[str, Any]]:
    if not isinstance(event, Mapping):
        return 400, {"error": f"event: expected a JSON object, got {type(event).__name__}", "field": "event"}
    context = event.get("requestContext")
    http = context.get("http") if isinstance(context, Mapping) else None
    method = event.get("httpMethod") or (http.get("method") if isinstance(http, Mapping) else None)
    if method is not None and str(method).upper() != "POST":
        return 405, {"error": f"method: expected POST, got {method}"}
    if "body" not in event:
        return handler(event)
    body = event["body"]
    if body is None:
        body = ""
    if event.get("isBase64Encoded") and isinstance(body, str):
        try:
            body = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            return 400, {"error": "body: expected base64 (isBase64Encoded is true), got invalid base64",
                         "field": "body"}
    return handler(body)
