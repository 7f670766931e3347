"""Measurements cached like artifacts: the arrays a runtime computed on fixed inputs (an accuracy cell's outputs over
its eval split), keyed on everything that determines them, verified on read. A damaged or stale entry is computed
again, never served; the verdict is always judged afresh from the arrays, so a changed budget or threshold re-judges
without running anything. Latency is never cached."""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from export_harness.converters.util.files import atomic_path, write_json_atomic

DIRECTORY = "measurements"


def measurement_key(**parts: Any) -> str:
    """The content address of a measurement: a hash of every input that determines it."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def code_hash(*objects: Any) -> str:
    """Hash of the source of the modules defining ``objects`` (the measuring code: editing it re-measures)."""
    digest = hashlib.sha256()
    for module in dict.fromkeys(inspect.getmodule(o) for o in objects):
        digest.update(_module_source_hash(module).encode())
    return digest.hexdigest()[:16]


@functools.cache
def _module_source_hash(module: Any) -> str:
    """One module's source hash, read once per process (every cell's key asks for it)."""
    try:
        return hashlib.sha256(inspect.getsource(module).encode()).hexdigest()
    except (OSError, TypeError):
        return str(module)


class MeasurementStore:
    """``<cache>/measurements/<key>.npz`` with ``<key>.json`` (its sha256 and what it measured). ``enabled=False``
    (``--harness-remeasure``) computes everything again and stores the new arrays."""

    def __init__(self, root: str | Path, *, enabled: bool = True, account: dict[str, set[str]] | None = None) -> None:
        self.root = Path(root) / DIRECTORY
        self.enabled = enabled
        self.account = account if account is not None else {"measured": set(), "measurement-hit": set()}

    def get(self, key: str) -> dict[str, np.ndarray] | None:
        """The stored arrays of ``key`` if they are there and intact (counted as served), else None (a damaged entry
        is removed)."""
        data, meta = self.root / f"{key}.npz", self.root / f"{key}.json"
        if not self.enabled or not data.is_file() or not meta.is_file():
            return None
        try:
            recorded = json.loads(meta.read_text())["sha256"]
            if hashlib.sha256(data.read_bytes()).hexdigest() != recorded:
                raise ValueError("content does not match its recorded sha256")
            with np.load(data, allow_pickle=False) as arrays:
                found = {name: arrays[name] for name in arrays.files}
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile):
            for path in (data, meta):
                path.unlink(missing_ok=True)
            return None
        self.account.setdefault("measurement-hit", set()).add(key)
        return found

    def put(self, key: str, arrays: Mapping[str, np.ndarray], what: Mapping[str, Any]) -> None:
        """Store the arrays just measured (counted as computed) atomically; a store that fails (a full disk) only
        means the next run measures again."""
        self.account.setdefault("measured", set()).add(key)
        try:
            with atomic_path(self.root / f"{key}.npz") as tmp:
                np.savez(tmp, **{name: np.asarray(a) for name, a in arrays.items()})
                digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
            write_json_atomic(self.root / f"{key}.json", {"sha256": digest, **what})
        except OSError:
            pass

    def get_or_compute(self, key: str, compute: Callable[[], Mapping[str, np.ndarray]],
                       what: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], bool]:
        """(the arrays, whether they were served from the store)."""
        found = self.get(key)
        if found is not None:
            return found, True
        arrays = {name: np.asarray(a) for name, a in compute().items()}
        self.put(key, arrays, what)
        return arrays, False


RUNNER_MODULES = ("tf/tflite_runtime.py", "tf/tf_worker_runtime.py", "tf/isolation.py", "exporters/onnx_runner.py",
                  "exporters/torchscript.py")
"""Where the runners live (whichever a target loads): their code is part of every output measurement's key."""


def runtime_identity(target: Any) -> dict[str, Any]:
    """What decides how a target's artifact runs: its name and settings, its converter and runtime versions, its
    code and the runners' code."""
    return {"target": target.name, "config": target.config(), "versions": target.versions(),
            "code": code_hash(type(target)), "runners": _runners_hash()}


@functools.cache
def _runners_hash() -> str:
    root = Path(__file__).resolve().parent
    return hashlib.sha256(b"".join((root / m).read_bytes() for m in RUNNER_MODULES)).hexdigest()[:16]


def store_of(cache: Any) -> MeasurementStore | None:
    """The measurement store beside an artifact cache (None for a stand-in cache without a directory); its account
    goes into the cache's, and ``cache.remeasure`` turns serving off."""
    root = getattr(cache, "root", None)
    if root is None:
        return None
    account = getattr(getattr(cache, "stats", None), "keys", None)
    return MeasurementStore(root, enabled=not getattr(cache, "remeasure", False), account=account)


def arrays_digest(arrays: list[Any]) -> str:
    """sha256 over arrays' dtypes, shapes and bytes (the inputs a measurement ran on)."""
    digest = hashlib.sha256()
    for array in arrays:
        a = np.ascontiguousarray(array)
        digest.update(f"{a.dtype.str}{a.shape}".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()
