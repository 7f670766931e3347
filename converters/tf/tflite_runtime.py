"""Parent-side runners for .tflite (ai-edge-litert) and SavedModel (TensorFlow) artifacts, executed in a worker.

The runner takes and returns the spec's named numpy arrays in the PyTorch layout and dtype. It hides:

- **signature names**: each spec input/output is mapped to a signature tensor by name (signature key or tensor
  name), else by the backend's positional convention (litert-torch: ``args_<i>`` / ``output_<i>``), else by
  order; the method is recorded;
- **layout**: the permutation from the PyTorch shape to the artifact's shape is *found from the signature*:
  identity if the shapes agree, else the unique permutation that matches (channels-last first when a square
  image makes two match); a mismatch is a load error, never a guess from the rank;
- **quantized I/O**: int8/uint8 inputs are quantized and outputs dequantized with each tensor's own scale and
  zero point;
- **fixed batch**: if the artifact's batch axis is fixed, a larger batch runs sample by sample (recorded as
  ``batch_mode``); a dynamic batch axis is resized.

For int8 artifacts the runner also runs the reference kernels (default delegates disabled) on every call and
raises a ``run``-stage :class:`RuntimeDefect` when they disagree with the default (XNNPACK) path: a runtime
defect, not a conversion defect.
"""

from __future__ import annotations

import atexit
import functools
import itertools
import os
import re
import shutil
import sys
import tempfile
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from export_harness.converters.cache import reap_dead_work_dirs
from export_harness.converters.checks.compare import cosine_similarity
from export_harness.converters.target import StageError
from export_harness.converters.tf.isolation import pool
from export_harness.models.spec import BATCH, ModelSpec

WORKER_MODULE = "export_harness.converters.tf.tf_worker"
RUN_TIMEOUT = 300.0
LOAD_THREADS = 2
"""Interpreter threads of a freshly loaded .tflite (the matrix); latency sets its own count (``set_threads``)."""
DELEGATE_MAX_LSB = 16
"""int8 outputs: default-delegate and reference-kernel results of the same file may differ by rounding. Measured:
at most 3 output quantization steps (alphazero_chess int8-full, 6 residual blocks); more than 16 (1/16 of the int8
range) is a runtime defect."""
DELEGATE_MAX_REL_ERROR = 0.1
"""Float outputs: ||default - reference|| / ||reference|| above this is a runtime defect. Rounding measured
<= 0.035 (tiny_ladeda_patch); the known XNNPACK int8 defect (STACK.md: cosine 0.768) is ~0.7."""


class LoadError(StageError):
    stage = "load"


class RuntimeDefect(StageError):
    """The runtime's default (delegated) path disagrees with its own reference kernels on the same file."""

    stage = "run"


def find_permutation(torch_shape: Sequence[int], artifact_shape: Sequence[int], batch_axis: int | None,
                     prefer_channels_last: bool = False) -> tuple[int, ...]:
    """The permutation ``p`` with ``torch_array.transpose(p).shape`` matching ``artifact_shape``.

    ``-1`` in ``artifact_shape`` matches any size. The batch axis must stay first. Identity wins when it
    matches, unless ``prefer_channels_last`` (the converter declared it transposes this tensor) and the
    channels-last permutation matches too. Raises LoadError when nothing, or more than one non-preferred
    candidate, matches.
    """
    rank = len(torch_shape)
    if len(artifact_shape) != rank:
        raise LoadError(f"rank mismatch: PyTorch shape {list(torch_shape)} vs artifact shape {list(artifact_shape)}")

    def fits(perm: tuple[int, ...]) -> bool:
        return all(a in (-1, torch_shape[p]) or (p == batch_axis) for p, a in zip(perm, artifact_shape, strict=True))

    identity = tuple(range(rank))
    channels_last = (0, *range(2, rank), 1) if rank >= 3 else identity
    ordered = [channels_last, identity] if prefer_channels_last else [identity, channels_last]
    for perm in ordered:
        if fits(perm):
            return perm
    fixed_first = [p for p in itertools.permutations(range(rank)) if (batch_axis is None or p[0] == batch_axis)]
    matches = [p for p in fixed_first if fits(p)]
    if len(matches) == 1:
        return matches[0]
    raise LoadError(f"cannot map PyTorch shape {list(torch_shape)} to artifact shape {list(artifact_shape)}: "
                    f"{len(matches)} candidate permutations")


def quantize(x: np.ndarray, dtype: np.dtype, scale: float, zero_point: int) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return ((q.astype(np.float64) - zero_point) * scale).astype(np.float32)


class _Binding:
    """How one spec tensor maps to one artifact tensor: key, permutation, dtype and quantization."""

    def __init__(self, spec_name: str, key: str, details: Mapping[str, Any], perm: tuple[int, ...]) -> None:
        self.spec_name = spec_name
        self.key = key
        self.perm = perm
        self.dtype = np.dtype(details["dtype"])
        scales, zps = details.get("scales") or [], details.get("zero_points") or []
        self.quant = (float(scales[0]), int(zps[0])) if scales and self.dtype.kind in "iu" and len(scales) == 1 \
            and self.dtype.itemsize == 1 else None
        shape = details.get("shape_signature") or details["shape"]
        self.batch_fixed = bool(shape) and shape[0] != -1
        self.batch_size = shape[0] if shape else None

    def describe(self) -> dict[str, Any]:
        return {"tensor": self.key, "dtype": self.dtype.name, "permutation": list(self.perm),
                "quantization": None if self.quant is None else {"scale": self.quant[0], "zero_point": self.quant[1]}}

    def to_artifact(self, x: np.ndarray) -> np.ndarray:
        x = np.transpose(x, self.perm) if self.perm != tuple(range(x.ndim)) else x
        if self.quant is not None:
            return quantize(x.astype(np.float64), self.dtype, *self.quant)
        if self.dtype.kind in "iu" and x.dtype != self.dtype:
            info = np.iinfo(self.dtype)
            if x.size and (x.min() < info.min or x.max() > info.max):
                raise StageError(f"input {self.spec_name!r} does not fit the artifact's {self.dtype.name}")
        return np.ascontiguousarray(x.astype(self.dtype, copy=False))

    def from_artifact(self, y: np.ndarray) -> np.ndarray:
        if self.quant is not None:
            y = dequantize(y, *self.quant)
        inverse = tuple(np.argsort(self.perm))
        return np.transpose(y, inverse) if self.perm != tuple(range(y.ndim)) else y


def _shape_for(dims: Sequence[int | str], lengths: Mapping[str, int], batch: int = 1) -> tuple[int, ...]:
    """A spec shape made concrete: ``batch``, each dynamic length axis at ``lengths``."""
    return tuple(batch if d == BATCH else int(lengths[d]) if isinstance(d, str) else int(d) for d in dims)


def _norm(name: str) -> str:
    """Comparable form of a tensor name: no ``:0``, no TF's ``serving_default_`` prefix, no case or punctuation."""
    return re.sub(r"[^a-z0-9]", "", name.split(":")[0].lower().removeprefix("serving_default_"))


def _resolve_names(kind: str, wanted: Sequence[str], available: Mapping[str, Mapping[str, Any]],
                   positional: str | None) -> tuple[dict[str, str], str]:
    """spec name -> artifact key, and how it was found.

    By name first (signature key or tensor name, ignoring case, punctuation and ``:0``), else by position: the
    backend's convention (``args_{i}``, ``output_{i}``) or, with as many tensors as spec names, their order
    (converters keep the graph's I/O order; a wrong guess fails the shape mapping or parity, never silently).
    """
    keys = list(available)
    by_norm: dict[str, str] = {}
    for key, det in available.items():
        by_norm.setdefault(_norm(key), key)
        by_norm.setdefault(_norm(str(det.get("name", key))), key)
    if all(_norm(n) in by_norm for n in wanted):
        return {n: by_norm[_norm(n)] for n in wanted}, "name"
    if positional and all(positional.format(i=i) in available for i in range(len(wanted))):
        return {n: positional.format(i=i) for i, n in enumerate(wanted)}, f"position ({positional})"
    if len(keys) == len(wanted):
        return dict(zip(wanted, keys, strict=True)), "order"
    missing = [n for n in wanted if _norm(n) not in by_norm]
    raise LoadError(f"{kind} {missing[0]!r} not found in the artifact's signature {keys}")


@functools.cache
def _scratch_root() -> Path:
    """One scratch directory per process for the .npz exchange with workers, removed at exit (and by the next
    process, if this one is killed)."""
    reap_dead_work_dirs(Path(tempfile.gettempdir()), "harness-run-*")
    root = Path(tempfile.mkdtemp(prefix=f"harness-run-{os.getpid()}-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root


class _WorkerRunner:
    """Shared plumbing: binding computation, batch handling, npz exchange with the worker."""

    run_op: str
    """The worker's op that runs the artifact (``tflite_run`` / ``savedmodel_run``)."""
    handle: str

    def __init__(self, spec: ModelSpec, python: str, env: Mapping[str, str], worker_name: str) -> None:
        self.spec = spec
        self.python = python
        self.env = dict(env)
        self.worker_name = worker_name
        self._tmp = Path(tempfile.mkdtemp(dir=_scratch_root()))
        # A session loads hundreds of runners: each one's exchange files go when it does, not at exit.
        weakref.finalize(self, shutil.rmtree, self._tmp, ignore_errors=True)
        self.inputs: dict[str, _Binding] = {}
        self.outputs: dict[str, _Binding] = {}
        self.work = {"wall": 0.0, "cpu": 0.0}
        """Seconds the worker spent inside the runtime's invoke, summed over every timed call (its own clocks)."""

    @property
    def pid(self) -> int | None:
        """The worker process that runs the artifact (what latency's memory probe and clock must look at)."""
        return pool().get(self.python, WORKER_MODULE, self.env, self.worker_name).pid

    def work_clock(self, clock: str) -> Callable[[], float]:
        """A clock that advances only while the worker runs this artifact: ``wall`` = the worker's wall time
        around each invoke, ``thread-cpu`` = the worker's CPU time there. Reading it around a call gives the
        runtime's own time, without the IPC, the .npz exchange and the layout transposes of the parent."""
        key = {"wall": "wall", "thread-cpu": "cpu"}[clock]
        return lambda: self.work[key]

    def _call(self, op: str, **args: Any) -> dict[str, Any]:
        return pool().call(self.python, WORKER_MODULE, op, env=self.env, name=self.worker_name,
                           timeout=RUN_TIMEOUT, stage="run" if op.endswith("_run") else "load", **args)

    def _bind(self, sig_inputs: Mapping[str, Mapping[str, Any]], sig_outputs: Mapping[str, Mapping[str, Any]],
              positional: tuple[str, str] | None, channels_last: Sequence[str]) -> None:
        in_map, in_how = _resolve_names("input", self.spec.input_names, sig_inputs, positional and positional[0])
        out_map, out_how = _resolve_names("output", self.spec.output_names, sig_outputs,
                                          positional and positional[1])
        self.name_mapping = {"inputs": in_how, "outputs": out_how}
        lengths = self.spec.default_lengths()
        for ispec in self.spec.inputs:
            det = sig_inputs[in_map[ispec.name]]
            perm = find_permutation(_shape_for(ispec.shape, lengths), det.get("shape_signature") or det["shape"],
                                    ispec.batch_axis, prefer_channels_last=ispec.name in channels_last)
            self.inputs[ispec.name] = _Binding(ispec.name, in_map[ispec.name], det, perm)
        for ospec in self.spec.outputs:
            det = sig_outputs[out_map[ospec.name]]
            perm = find_permutation(_shape_for(ospec.shape, lengths), det.get("shape_signature") or det["shape"],
                                    0 if ospec.shape and ospec.shape[0] == BATCH else None,
                                    prefer_channels_last=bool(channels_last))
            self.outputs[ospec.name] = _Binding(ospec.name, out_map[ospec.name], det, perm)

    @property
    def fixed_batch(self) -> int | None:
        fixed = {b.batch_size for b in self.inputs.values() if b.batch_fixed}
        return fixed.pop() if len(fixed) == 1 else None

    def batch_mode(self) -> str:
        fixed = self.fixed_batch
        return f"fixed batch {fixed}: larger batches run sample by sample" if fixed else "dynamic batch (resized)"

    def repeat(self, inputs: Mapping[str, np.ndarray], calls: int) -> dict[str, np.ndarray]:
        """Run the artifact ``calls`` times back to back in the worker on one exchange of ``inputs`` (how a loop on
        the runtime's own API calls it); each invoke counts on :meth:`work_clock`. The latency suite times
        out-of-process artifacts this way (``export_harness.converters.latency.timing.timed_call``)."""
        return self._run_all(self.run_op, self.handle, inputs, repeat=calls)

    def _invoke(self, op: str, handle: str, feeds: Mapping[str, np.ndarray], timed: bool = True, repeat: int = 1
                ) -> dict[str, np.ndarray]:
        in_path, out_path = self._tmp / "in.npz", self._tmp / "out.npz"
        np.savez(in_path, **dict(feeds))
        done = self._call(op, handle=handle, inputs=str(in_path), outputs=str(out_path), repeat=repeat)
        if timed:
            self.work["wall"] += done["seconds"]
            self.work["cpu"] += done["cpu_seconds"]
        with np.load(out_path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}

    def _run_all(self, op: str, handle: str, inputs: Mapping[str, np.ndarray], timed: bool = True,
                 repeat: int = 1) -> dict[str, np.ndarray]:
        """Run on artifact-layout feeds, chunked to the fixed batch when the artifact has one; ``timed`` calls
        count on :meth:`work_clock`."""
        batch = len(next(iter(inputs.values())))
        chunk = self.fixed_batch or batch
        if batch % chunk:
            raise StageError(f"batch {batch} is not a multiple of the artifact's fixed batch {chunk}")
        parts: list[dict[str, np.ndarray]] = []
        for start in range(0, batch, chunk):
            feeds = {b.key: b.to_artifact(np.asarray(inputs[name])[start:start + chunk])
                     for name, b in self.inputs.items()}
            parts.append(self._invoke(op, handle, feeds, timed, repeat))
        merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return {name: b.from_artifact(merged[b.key]) for name, b in self.outputs.items()}


class TFLiteRunner(_WorkerRunner):
    """A .tflite on ai-edge-litert in the backend's warm worker (see module docstring)."""

    run_op = "tflite_run"

    def __init__(self, path: Path, spec: ModelSpec, *, python: str = sys.executable, env: Mapping[str, str] = (),
                 worker_name: str = "litert", positional: tuple[str, str] | None = None,
                 channels_last: Sequence[str] = (), check_delegates: bool = False,
                 extra_info: Mapping[str, Any] | None = None) -> None:
        super().__init__(spec, python, dict(env), worker_name)
        self.path = Path(path)
        self.threads = LOAD_THREADS
        loaded = self._call("tflite_load", path=str(path), delegates="default", threads=self.threads)
        self.handle = loaded["handle"]
        sig = loaded["signature"]
        if sig:
            sig_in, sig_out = sig["inputs"], sig["outputs"]
        else:  # no signature: address tensors by index, names from the tensor names
            sig_in = {d["name"]: {**d, "key": f"#{d['index']}"} for d in loaded["inputs"]}
            sig_out = {d["name"]: {**d, "key": f"#{d['index']}"} for d in loaded["outputs"]}
        self._bind(sig_in, sig_out, positional, channels_last)
        if not sig:
            for binding in [*self.inputs.values(), *self.outputs.values()]:
                binding.key = (sig_in.get(binding.key) or sig_out[binding.key])["key"]
        self.reference_handle = None
        if check_delegates:
            self.reference_handle = self._call("tflite_load", path=str(path), delegates="none",
                                               threads=self.threads)["handle"]
        self.delegate_check: dict[str, Any] = {"checked": check_delegates, "min_cosine": None, "calls": 0}
        self.info = {
            "runtime": "ai-edge-litert", "version": loaded["runtime_version"], "delegate": "default (XNNPACK)",
            "signature": sig.get("key"), "names_matched_by": self.name_mapping, "batch_mode": self.batch_mode(),
            "inputs": {n: b.describe() for n, b in self.inputs.items()},
            "outputs": {n: b.describe() for n, b in self.outputs.items()},
            "reference_kernels_check": self.delegate_check, "threads": self.threads, **dict(extra_info or {}),
        }

    def set_threads(self, threads: int) -> None:
        """Re-open the file with ``threads`` interpreter threads (the reference-kernel copy too)."""
        self.threads = self.info["threads"] = threads
        self.handle = self._call("tflite_load", path=str(self.path), delegates="default", threads=threads)["handle"]
        if self.reference_handle is not None:
            self.reference_handle = self._call("tflite_load", path=str(self.path), delegates="none",
                                               threads=threads)["handle"]

    def default_path_only(self) -> None:
        """Stop cross-checking the reference kernels (latency runs: who is right is the matrix's and the accuracy
        suite's verdict, where PyTorch's outputs are at hand to blame the farther path)."""
        self.reference_handle = None
        self.delegate_check["checked"] = False

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self._run_all(self.run_op, self.handle, inputs)
        if self.reference_handle is not None:  # the cross-check is not the artifact's latency: untimed
            self._check_delegates(out, self._run_all("tflite_run", self.reference_handle, inputs, timed=False))
        return out

    def run_judged(self, inputs: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray]
                   ) -> dict[str, np.ndarray]:
        """Like a call, with PyTorch's outputs at hand: when the default delegate and the reference kernels
        disagree, the one farther from PyTorch is to blame. Only a delegate farther than the reference kernels is
        a runtime defect; a delegate that is closer (its int8 kernels round better) is recorded, and its outputs
        are judged for parity like any other."""
        out = self._run_all("tflite_run", self.handle, inputs)
        if self.reference_handle is None:
            return out
        ref = self._run_all("tflite_run", self.reference_handle, inputs, timed=False)
        try:
            self._check_delegates(out, ref)
        except RuntimeDefect as exc:
            delegate_farther, versus = blame_delegate(out, ref, expected)
            if delegate_farther:
                raise RuntimeDefect(f"{exc}; the delegate is the farther from PyTorch ({versus})") from None
            self.delegate_check["delegate_closer_to_pytorch"] = versus
        return out

    def intermediates(self, inputs: Mapping[str, np.ndarray]) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
        """Every operator's (dequantized) output tensor on these spec-layout inputs, run sample by sample on the
        reference kernels: (operators in execution order with their output tensor names, name -> stacked array)."""
        feeds = []
        for i in range(len(next(iter(inputs.values())))):
            path = self._tmp / f"sample{i}.npz"
            sample = {b.key: b.to_artifact(np.asarray(inputs[name])[i:i + 1]) for name, b in self.inputs.items()}
            np.savez(path, **sample)
            feeds.append(str(path))
        out = self._tmp / "intermediates.npz"
        result = self._call("tflite_intermediates", path=str(self.path), inputs=feeds, outputs=str(out))
        with np.load(out, allow_pickle=False) as data:
            values = {name: data[f"t{i}"] for i, name in enumerate(result["names"])}
        return result["ops"], values

    def _check_delegates(self, out: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray]) -> None:
        """Flag a runtime defect when the default path and the reference kernels disagree beyond rounding."""
        check = self.delegate_check
        check["calls"] += 1
        for name, binding in self.outputs.items():
            diff = np.abs(out[name].astype(np.float64) - ref[name].astype(np.float64))
            if binding.quant is not None:
                lsb = float(diff.max() / binding.quant[0]) if diff.size else 0.0
                check["max_lsb"] = max(check.get("max_lsb", 0.0), round(lsb, 2))
                bad = lsb > DELEGATE_MAX_LSB
                detail = f"{name}: {lsb:.0f} output quantization steps apart (> {DELEGATE_MAX_LSB})"
            else:
                norm = float(np.linalg.norm(ref[name]))
                rel = float(np.linalg.norm(diff)) / norm if norm else float(diff.max() > 0)
                check["max_rel_error"] = max(check.get("max_rel_error", 0.0), round(rel, 6))
                bad = rel > DELEGATE_MAX_REL_ERROR
                detail = f"{name}: relative difference {rel:.3f} (> {DELEGATE_MAX_REL_ERROR})"
            check["min_cosine"] = min(check.get("min_cosine") or 1.0, cosine_similarity(out[name], ref[name]))
            if bad:
                raise RuntimeDefect(
                    f"runtime defect (not a conversion defect): ai-edge-litert {self.info['version']} with its "
                    f"default delegate (XNNPACK) disagrees with its reference kernels "
                    f"(BUILTIN_WITHOUT_DEFAULT_DELEGATES) on the same file: {detail}")


def blame_delegate(delegate: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray],
                   expected: Mapping[str, np.ndarray]) -> tuple[bool, str]:
    """(whether the default delegate is farther from PyTorch than the reference kernels on any output, the cosines
    to PyTorch of both, per output)."""
    cosines = {name: (cosine_similarity(delegate[name], want), cosine_similarity(reference[name], want))
               for name, want in expected.items() if name in delegate and name in reference}
    versus = "; ".join(f"{name}: cosine to PyTorch {d:.6f} with the delegate vs {r:.6f} with the reference kernels"
                       for name, (d, r) in cosines.items())
    return any(d < r for d, r in cosines.values()), versus


class SavedModelRunner(_WorkerRunner):
    """A TF SavedModel's ``serving_default`` signature on TensorFlow in the backend's warm worker."""

    run_op = "savedmodel_run"

    def __init__(self, path: Path, spec: ModelSpec, *, python: str = sys.executable, env: Mapping[str, str] = (),
                 worker_name: str = "tensorflow", channels_last: Sequence[str] = (),
                 extra_info: Mapping[str, Any] | None = None) -> None:
        super().__init__(spec, python, dict(env), worker_name)
        self.path = Path(path)
        loaded = self._call("savedmodel_load", path=str(path))
        self.handle = loaded["handle"]
        self._bind(loaded["inputs"], loaded["outputs"], ("input_{i}", "output_{i}"), channels_last)
        self.info = {"runtime": "tensorflow", "version": loaded["runtime_version"], "signature": "serving_default",
                     "threads": "TensorFlow default (one per core)", "names_matched_by": self.name_mapping,
                     "batch_mode": self.batch_mode(),
                     "inputs": {n: b.describe() for n, b in self.inputs.items()},
                     "outputs": {n: b.describe() for n, b in self.outputs.items()}, **dict(extra_info or {})}

    def set_threads(self, threads: int) -> None:
        """Re-load in a worker whose TensorFlow runs ``threads`` intra-op threads (and one inter-op thread):
        TensorFlow fixes its pools when it starts, so this is another warm worker, keyed by that environment."""
        self.env |= {"TF_NUM_INTRAOP_THREADS": str(threads), "TF_NUM_INTEROP_THREADS": "1"}
        self.worker_name = f"{self.worker_name.split('@')[0]}@{threads}-threads"
        self.handle = self._call("savedmodel_load", path=str(self.path))["handle"]
        self.info["threads"] = threads

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._run_all(self.run_op, self.handle, inputs)
