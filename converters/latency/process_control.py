"""Process control while timing: the allocator, intra-op threads, and which process runs the artifact.

No timing here: these fix the conditions a benchmark runs under and record them (docs/latency.md).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def pinned_allocator(enabled: bool = True) -> Iterator[str]:
    """Within the block, glibc malloc never uses mmap and never trims the heap below 1 GB; afterwards its
    default thresholds (128 kB) are restored. Yields a description for the record.

    Otherwise large tensors are mmap'd fresh on every call and their page faults paid each time, and glibc's dynamic
    mmap threshold changes the cost of later calls after the first large free. Keeping freed blocks in the heap
    gives every call the warmed allocator a serving process would have.
    """
    if not enabled:
        yield "allocator left alone"
        return
    import ctypes
    import ctypes.util

    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        yield "allocator left alone (no glibc mallopt)"
        return
    m_trim_threshold, m_mmap_threshold, m_mmap_max = -1, -3, -4
    ok = mallopt(m_mmap_max, 0) == 1 and mallopt(m_trim_threshold, 1 << 30) == 1
    try:
        yield "glibc malloc pinned: no mmap, heap trimmed only above 1 GB" if ok else \
            "allocator left alone (mallopt refused)"
    finally:
        mallopt(m_mmap_max, 65536)
        mallopt(m_trim_threshold, 128 * 1024)
        mallopt(m_mmap_threshold, 128 * 1024)


def set_torch_threads(threads: int) -> int:
    """Set torch's intra-op threads (0 leaves them alone); returns the previous value."""
    import torch

    previous = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    return previous


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    previous = set_torch_threads(threads)
    try:
        yield
    finally:
        set_torch_threads(previous)


def load_runner(target: Any, artifact: Any, spec: Any, threads: int) -> tuple[Any, dict[str, Any]]:
    """``target.load`` with a fixed intra-op thread count; returns the runner and the effective settings.

    Order of preference: ``target.load(..., threads=n)`` if the target accepts it; then ``runner.set_threads(n)``;
    then known runtimes (ONNX Runtime sessions are rebuilt with ``intra_op_num_threads``; TorchScript follows
    ``torch.set_num_threads``). Anything else keeps its runtime default, and the record says so.
    """
    if threads > 0 and "threads" in inspect.signature(target.load).parameters:
        runner = target.load(artifact, spec, threads=threads)
        _default_path_only(runner)
        return runner, {"requested": threads, "method": "target.load(threads=)", **runner_threads(runner)}
    runner = target.load(artifact, spec)
    _default_path_only(runner)
    return runner, apply_threads(runner, threads)


def _default_path_only(runner: Any) -> None:
    """A runner that cross-checks a second kernel path on every call (TFLite int8: the reference kernels) times
    only its default path: the cross-check would be untimed but would double each round's wall time, and its
    verdict without PyTorch's outputs could not say which path is wrong."""
    stop = getattr(runner, "default_path_only", None)
    if stop is not None:
        stop()


def apply_threads(runner: Any, threads: int) -> dict[str, Any]:
    """Fix an already loaded runner's intra-op threads where the runtime allows it; describe what was done."""
    record: dict[str, Any] = {"requested": threads}
    if threads <= 0:
        return {**record, "method": "runtime defaults", **runner_threads(runner)}
    if hasattr(runner, "set_threads"):
        runner.set_threads(threads)
        return {**record, "method": "runner.set_threads", **runner_threads(runner)}
    session = getattr(runner, "session", None)
    if _is_ort_session(session):
        import onnxruntime as ort

        path = getattr(session, "_model_path", None)
        if path:
            options = session.get_session_options()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            runner.session = ort.InferenceSession(path, options, providers=session.get_providers())
            return {**record, "method": "onnxruntime intra_op_num_threads", **runner_threads(runner)}
    if (getattr(runner, "info", {}) or {}).get("runtime", "").startswith("torch"):
        set_torch_threads(threads)
        return {**record, "method": "torch.set_num_threads", **runner_threads(runner)}
    return {**record, "method": "not controllable by the harness: runtime default", **runner_threads(runner)}


def runner_threads(runner: Any) -> dict[str, Any]:
    """The intra-op thread counts actually in effect for this runner (and for torch in this process)."""
    import torch

    out: dict[str, Any] = {"torch_intra_op": torch.get_num_threads()}
    session = getattr(runner, "session", None)
    if _is_ort_session(session):
        out["onnxruntime_intra_op"] = session.get_session_options().intra_op_num_threads  # 0 = one per core
    reported = (getattr(runner, "info", {}) or {}).get("threads")
    if reported is not None:
        out["runtime_reported"] = reported
    return out


def _is_ort_session(obj: Any) -> bool:
    return type(obj).__name__ == "InferenceSession" and type(obj).__module__.startswith("onnxruntime")


def runtime_pid(runner: Any) -> int | str:
    """The process that runs the artifact: ``runner.pid`` / ``info["pid"]`` for out-of-process runtimes."""
    pid = getattr(runner, "pid", None) or (getattr(runner, "info", {}) or {}).get("pid")
    return int(pid) if pid else "self"


