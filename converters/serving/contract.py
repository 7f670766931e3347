"""Guide 000's serving contract: the JSON request parser/validator and the response builder of every handler.

Request: a JSON object with one key per model input (BST: ``JnB`` [B, T, 2, 72], ``shuttle`` [B, T, 2], ``pos``
[B, T, 2, 2], ``video_len`` [B]), nested lists of numbers. Response (200): ``predictions`` (logits), ``probabilities``
(softmax), ``top_predictions`` {``indices``, ``probabilities``} (top 5, most probable first), ``batch_size`` and
``sequence_length``, as the guide's TorchScript Cloud Function returns them. A request the contract rejects raises
:class:`BadRequest`: HTTP 400 with a one-line message naming the field and what was expected.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from export_harness.models.spec import BATCH, ModelSpec

TOP_K = 5
MAX_BATCH = 64
"""Clips per request (a BST clip is ~14.8k numbers, ~0.3 MB of JSON); a larger batch is a 400."""


class BadRequest(ValueError):
    """A request the contract rejects: HTTP 400. ``field`` is the offending key (``body`` for the whole request)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class ServingError(RuntimeError):
    """A valid request the model could not answer (e.g. non-finite logits): HTTP 500."""


@dataclass(frozen=True)
class Field:
    """One request key: the model input's name, shape (``"B"`` is the batch axis, first), dtype and integer bounds."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str
    bounds: tuple[int, int] | None = None

    def describe(self, batch: int | None = None) -> str:
        dims = [str(batch) if d == BATCH and batch is not None else str(d) for d in self.shape]
        return f"[{', '.join(dims)}]"

    def parse(self, value: Any, batch: int | None, first: str, max_batch: int = MAX_BATCH) -> np.ndarray:
        """``value`` as an array of the field's dtype and shape; ``batch`` is the batch of the first field (None for
        the first field itself, named ``first``). Raises :class:`BadRequest`."""
        kind = "integers" if self.dtype.startswith("int") else f"{self.dtype} numbers"
        expected = f"a nested list of {kind} of shape {self.describe()}"
        if value is None or isinstance(value, (str, bool, dict)):
            raise BadRequest(self.name, f"expected {expected}, got {_json_type(value)}")
        if _contains_bool(value):  # numpy would read [true, 0.5] as [1.0, 0.5]
            raise BadRequest(self.name, f"expected {kind}, got booleans")
        try:
            raw = np.asarray(value)
        except (ValueError, TypeError, OverflowError):
            raise BadRequest(self.name, f"expected {expected}, got a ragged nested list") from None
        if raw.ndim >= 1 and raw.shape[0] == 0:
            raise BadRequest(self.name, f"empty batch: expected at least one item of shape {self.describe()}")
        if raw.dtype.kind not in "iuf":
            got = {"U": "strings", "S": "strings", "b": "booleans"}.get(raw.dtype.kind, "null, objects or "
                                                                         "out-of-range integers")
            raise BadRequest(self.name, f"expected {kind}, got {got}")
        if raw.ndim != len(self.shape) or any(d != BATCH and n != d for n, d in zip(raw.shape, self.shape,
                                                                                       strict=False)):
            raise BadRequest(self.name, f"expected shape {self.describe()}, got {list(raw.shape)}")
        if batch is not None and raw.shape[0] != batch:
            raise BadRequest(self.name, f"expected shape {self.describe(batch)} (batch {batch}, as {first}), "
                                        f"got {list(raw.shape)}")
        if raw.shape[0] > max_batch:
            raise BadRequest(self.name, f"batch of {raw.shape[0]}: expected at most {max_batch} per request")
        if self.dtype.startswith("int"):
            return self._integers(raw, kind)
        with np.errstate(over="ignore", invalid="ignore"):
            arr = raw.astype(self.dtype)
        _require(np.isfinite(arr), raw, self.name, f"expected finite {kind} (within the {self.dtype} range)")
        return arr

    def _integers(self, raw: np.ndarray, kind: str) -> np.ndarray:
        if raw.dtype.kind == "f":
            _require(np.isfinite(raw), raw, self.name, f"expected finite {kind}")
            _require(raw == np.round(raw), raw, self.name, f"expected {kind}")
        if self.bounds is not None:
            lo, hi = self.bounds
            _require((raw >= lo) & (raw <= hi), raw, self.name, f"expected {kind} in [{lo}, {hi}]")
        info = np.iinfo(self.dtype)
        _require((raw >= info.min) & (raw <= info.max), raw, self.name, f"expected {kind} in the {self.dtype} range")
        return raw.astype(self.dtype)


@dataclass(frozen=True)
class Contract:
    """The request fields (in the model's argument order), the logits output and the number of top predictions."""

    fields: tuple[Field, ...]
    output: str
    top_k: int = TOP_K
    max_batch: int = MAX_BATCH

    @classmethod
    def from_spec(cls, spec: ModelSpec, top_k: int = TOP_K, max_batch: int = MAX_BATCH) -> Contract:
        """The contract of a batch-first model with one logits output. Integer inputs are bounded by their declared
        ``value_range`` (BST: ``1 <= video_len <= 100``; 0 gives NaN logits)."""
        if not spec.dynamic_batch or any(i.batch_axis != 0 for i in spec.inputs):
            raise ValueError(f"{spec.name}: serving needs every input batch-first")
        if len(spec.outputs) != 1 or not spec.outputs[0].is_classifier:
            raise ValueError(f"{spec.name}: serving needs exactly one logits output")
        fields = []
        for i in spec.inputs:
            bounds = None
            if i.dtype.startswith("int") and i.value_range is not None:
                bounds = (math.ceil(i.value_range[0]), math.floor(i.value_range[1]))
            fields.append(Field(i.name, tuple(i.shape), i.dtype, bounds))
        return cls(tuple(fields), spec.outputs[0].name, top_k, max_batch)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]


def parse_request(body: Any, contract: Contract) -> dict[str, np.ndarray]:
    """Named input arrays from a request body: JSON text (``str`` / ``bytes``) or an already parsed JSON value.
    Raises :class:`BadRequest` for anything the contract rejects, and nothing else."""
    if isinstance(body, (bytes, bytearray)):
        try:
            body = bytes(body).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRequest("body", f"expected UTF-8 JSON text, got undecodable bytes ({exc.reason} at byte "
                                     f"{exc.start})") from None
    if isinstance(body, str):
        if not body.strip():
            raise BadRequest("body", f"expected a JSON object with keys {', '.join(contract.names)}, got an empty "
                                     "body")
        try:
            body = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise BadRequest("body", f"expected a JSON object, got invalid JSON ({str(exc).splitlines()[0]})") \
                from None
    if not isinstance(body, Mapping):
        raise BadRequest("body", f"expected a JSON object with keys {', '.join(contract.names)}, got "
                                 f"{_json_type(body)}")
    out: dict[str, np.ndarray] = {}
    first = contract.fields[0].name
    batch: int | None = None
    for field in contract.fields:
        if field.name not in body:
            raise BadRequest(field.name, f"missing key: expected a nested list of shape {field.describe()} (keys: "
                                         f"{', '.join(contract.names)})")
        out[field.name] = field.parse(body[field.name], batch, first, contract.max_batch)
        batch = out[first].shape[0]
    return out


def build_response(logits: Any, contract: Contract, inputs: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The guide's 200 body from one batch of logits: softmax in float64, top-k by descending probability (ties:
    lower index first). Raises :class:`ServingError` on logits of the wrong shape or non-finite logits."""
    first = inputs[contract.fields[0].name]
    batch = int(first.shape[0])
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] != batch:
        raise ServingError(f"{contract.output}: the model returned shape {list(z.shape)}, expected [{batch}, C]")
    if not np.isfinite(z).all():
        raise ServingError(f"{contract.output}: the model returned non-finite logits")
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    probs = e / e.sum(axis=-1, keepdims=True)
    k = min(contract.top_k, probs.shape[-1])
    top = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
    body: dict[str, Any] = {
        "predictions": z.tolist(),
        "probabilities": probs.tolist(),
        "top_predictions": {"indices": top.tolist(), "probabilities": np.take_along_axis(probs, top, -1).tolist()},
        "batch_size": batch,
    }
    if first.ndim >= 2:
        body["sequence_length"] = int(first.shape[1])
    return body


def _require(ok: np.ndarray, raw: np.ndarray, name: str, expected: str) -> None:
    """Raise :class:`BadRequest` naming the first element where ``ok`` is false, with its JSON spelling."""
    if not ok.all():
        where = np.argwhere(~ok)[0].tolist()
        value = json.dumps(raw[tuple(where)].item())
        raise BadRequest(name, f"{expected}, got {value} at {where}")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "an array"
    return type(value).__name__


def _contains_bool(value: Any) -> bool:
    """Whether a JSON value holds a boolean anywhere in its nested lists (bodies are bounded by the size limit)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, bool):
            return True
        if isinstance(item, list):
            stack.extend(item)
    return False
