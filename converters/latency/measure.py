"""Latency measurement of one Runner on prepared inputs: warm-up, raw timings, robust statistics, threads, memory.

No pytest here: a script can time any artifact with these helpers. The pytest suite (``suites/test_latency.py``)
drives them through pytest-benchmark's ``pedantic`` mode; the regression gate (``converters/latency/gate.py``)
consumes the *paired* timings produced here. Design (measured on the shared 2-core box, see the README):

- **Paired, interleaved rounds.** A round alternates artifact and PyTorch eager calls (``t, e, t, e, ...``,
  enough of them to last ``TimingPlan.round_seconds``) and keeps both per-call means. The per-round ratio
  ``target / eager`` cancels what the machine does to both, so the gate compares ratios.
- **A CPU clock where it is valid.** With one intra-op thread and an in-process runtime all the work runs on
  the calling thread, so its CPU time (``time.thread_time``) measures the work and not the neighbours: on the
  loaded box wall-clock medians swung 2x between runs while thread CPU time moved 1-2%. Wall time is still
  recorded for every round (that is the latency a user sees on an idle core); multi-threaded and
  out-of-process runtimes are timed on the wall clock.
- **A pinned allocator.** glibc mmaps large blocks afresh on every call (page faults paid each time, varying by
  process) and moves its mmap threshold after the first large free, so the same eager model ran 2-4x faster or
  slower depending on what ran before; :func:`pinned_allocator` keeps freed memory in the heap while timing.
- **Inputs prepared outside the timed region**; only the runner call is timed (its own dtype/contiguity
  normalisation included, as a user would pay it).
- **Threads fixed and recorded**: ``torch.set_num_threads`` for eager and TorchScript, ONNX Runtime's
  ``intra_op_num_threads``; a runner may implement ``set_threads(n)`` (or its target's ``load`` may accept
  ``threads=``) to take part; anything else is recorded as "runtime default".
- **Peak RSS measured honestly**: the kernel's high-water mark (``VmHWM``) is reset through
  ``/proc/<pid>/clear_refs`` before loading the artifact, so the peak is the peak *of this load and run*, not of
  the whole session. Where the reset is not permitted the number is labelled a lower bound.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import math
import platform
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from export_harness.converters.defaults import check_numbers
from export_harness.converters.util.cpu import cpu_model, usable_cpus

Timer = Callable[[], float]
Inputs = Mapping[str, np.ndarray]


# --------------------------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class LatencyStats:
    """Robust summary of raw per-call timings, in milliseconds (percentiles by linear interpolation)."""

    rounds: int
    min_ms: float
    q1_ms: float
    median_ms: float
    q3_ms: float
    iqr_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    stdev_ms: float

    @classmethod
    def from_seconds(cls, timings: Sequence[float]) -> LatencyStats:
        if not len(timings):
            raise ValueError("no timings to summarise")
        ms = np.asarray(timings, dtype=np.float64) * 1e3
        q1, med, q3, p90, p95, p99 = np.percentile(ms, [25, 50, 75, 90, 95, 99])
        return cls(
            rounds=int(ms.size), min_ms=float(ms.min()), q1_ms=float(q1), median_ms=float(med), q3_ms=float(q3),
            iqr_ms=float(q3 - q1), p90_ms=float(p90), p95_ms=float(p95), p99_ms=float(p99), max_ms=float(ms.max()),
            mean_ms=float(ms.mean()), stdev_ms=float(ms.std(ddof=1)) if ms.size > 1 else 0.0,
        )

    def throughput(self, batch: int) -> float:
        """Samples per second at the median latency."""
        return batch / (self.median_ms / 1e3) if self.median_ms > 0 else math.inf

    @property
    def rel_iqr(self) -> float:
        return self.iqr_ms / self.median_ms if self.median_ms > 0 else math.inf

    def to_dict(self, digits: int = 4) -> dict[str, float | int]:
        return {k: (_sig(v, digits) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass
class PairedTimings:
    """Per-round seconds per call of the artifact and of the eager reference timed right after it.

    ``target``/``reference`` are on the benchmark's clock (the gated numbers); ``wall_target``/``wall_reference``
    hold the same rounds on the wall clock when the benchmark clock is a CPU clock (for reporting latency).
    """

    target: list[float] = field(default_factory=list)
    reference: list[float] = field(default_factory=list)
    wall_target: list[float] = field(default_factory=list)
    wall_reference: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.target) != len(self.reference):
            raise ValueError(f"paired timings differ in length: {len(self.target)} vs {len(self.reference)}")

    @property
    def ratios(self) -> np.ndarray:
        """Per-round ``target / reference``: above 1 the artifact is slower than PyTorch eager."""
        return np.asarray(self.target, dtype=np.float64) / np.asarray(self.reference, dtype=np.float64)

    @property
    def ratio(self) -> float:
        """Median per-round ratio to eager (the gated quantity)."""
        return float(np.median(self.ratios))

    @property
    def speedup(self) -> float:
        """How many times faster than PyTorch eager (``1 / ratio``), as guide 004's "Speedup" column."""
        return 1.0 / self.ratio

    @property
    def contention(self) -> float | None:
        """Wall time over CPU time of the measured calls (1.0 on an idle core; 2.0 = the thread got half a
        core). Only meaningful when the benchmark clock is a CPU clock."""
        if not self.wall_target:
            return None
        cpu = sum(self.target) + sum(self.reference)
        return (sum(self.wall_target) + sum(self.wall_reference)) / cpu if cpu > 0 else None

    def to_dict(self, digits: int = 4, wall: bool = False) -> dict[str, list[float]]:
        """Raw timings in milliseconds, rounded to ``digits`` significant digits (for benchmark JSON; the wall
        clock arrays only with ``wall=True``: their summary is stored anyway and they double the file)."""
        out = {"target_ms": [_sig(t * 1e3, digits) for t in self.target],
               "eager_ms": [_sig(t * 1e3, digits) for t in self.reference]}
        if wall and self.wall_target:
            out["wall_target_ms"] = [_sig(t * 1e3, digits) for t in self.wall_target]
            out["wall_eager_ms"] = [_sig(t * 1e3, digits) for t in self.wall_reference]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Sequence[float]]) -> PairedTimings:
        def sec(key: str) -> list[float]:
            return [t / 1e3 for t in data.get(key, [])]

        return cls(sec("target_ms"), sec("eager_ms"), sec("wall_target_ms"), sec("wall_eager_ms"))


def _sig(value: float, digits: int) -> float:
    if value == 0 or not math.isfinite(value):
        return float(value)
    return float(f"{value:.{digits}g}")


# ------------------------------------------------------------------------------------------------ timing


@dataclass(frozen=True)
class TimingPlan:
    """Warm-up, round length and round count. Both derive from warm-up timings and are then fixed."""

    warmup_rounds: int = 2
    warmup_seconds: float = 0.2
    round_seconds: float = 0.01
    """Minimum duration of the artifact's share of a round: faster calls are repeated ``iterations`` times per
    round (interleaved with the reference), so one disturbance cannot decide a round."""
    seconds: float = 2.0
    """Time budget per benchmark, eager reference included; converted once into a fixed round count."""
    rounds_min: int = 8
    rounds_max: int = 60

    def iterations_for(self, target_call_seconds: float) -> int:
        if target_call_seconds <= 0:
            return 1
        return max(1, math.ceil(self.round_seconds / target_call_seconds))

    def rounds_for(self, seconds_per_round: float) -> int:
        """Fixed round count for a benchmark whose rounds take ``seconds_per_round`` each."""
        if seconds_per_round <= 0:
            return self.rounds_max
        return int(min(self.rounds_max, max(self.rounds_min, math.ceil(self.seconds / seconds_per_round))))

    def schedule(self, call_seconds: Sequence[float]) -> tuple[int, int]:
        """``(rounds, iterations)`` from per-call warm-up medians: ``[target]`` or ``[target, reference]``."""
        iterations = self.iterations_for(call_seconds[0])
        return self.rounds_for(iterations * sum(call_seconds)), iterations


@dataclass(frozen=True)
class BenchSettings:
    """``[bench]`` of ``converters/defaults/latency.toml``: what to time and how (documented in that file)."""

    batches: tuple[int, ...] = (1, 4, 16)
    threads: int = 1
    clock: str = "auto"
    pin_allocator: bool = True
    plan: TimingPlan = field(default_factory=TimingPlan)
    smoke_seconds: float = 1.0
    smoke_targets: tuple[str, ...] = ("onnx:fp32", "torchscript:trace")
    budget_rounds: int = 200
    budget_seconds: float = 10.0

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> BenchSettings:
        data = dict(data)
        plan_keys = {f for f in TimingPlan.__dataclass_fields__}
        own = set(cls.__dataclass_fields__) - {"plan"}
        unknown = sorted(set(data) - plan_keys - own)
        if unknown:
            raise ValueError(f"unknown [bench] keys {unknown}; known: {sorted(plan_keys | own)}")
        plan = TimingPlan(**{k: data.pop(k) for k in list(data) if k in plan_keys})
        if "batches" in data:
            data["batches"] = tuple(int(b) for b in data["batches"])
        if "smoke_targets" in data:
            data["smoke_targets"] = tuple(str(t) for t in data["smoke_targets"])
        settings = cls(plan=plan, **data)
        check_numbers(plan, "[bench]")
        check_numbers(settings, "[bench]")
        if settings.clock not in ("auto", "thread-cpu", "wall"):
            raise ValueError(f"[bench] clock must be auto, thread-cpu or wall, got {settings.clock!r}")
        if not settings.batches or min(settings.batches) < 1:
            raise ValueError(f"[bench] batches must be positive integers, got {settings.batches}")
        return settings


def warm_up(fns: Sequence[Callable[[], Any]], plan: TimingPlan, timer: Timer = time.perf_counter,
            timers: Sequence[Timer] | None = None) -> list[float]:
    """Call every fn in turn until both the round and the time minimum are met (on ``timer``); returns each fn's
    median seconds per call over the later half (the first calls allocate and compile), read on ``timers[i]``
    (default ``timer``; an out-of-process runtime's own clock, see :func:`clocks_for`)."""
    start = timer()
    timers = list(timers) if timers else [timer] * len(fns)
    per_fn: list[list[float]] = [[] for _ in fns]
    while len(per_fn[0]) < max(1, plan.warmup_rounds) or timer() - start < plan.warmup_seconds:
        for i, fn in enumerate(fns):
            per_fn[i].append(time_call(fn, timers[i]))
        if len(per_fn[0]) >= 1000:
            break
    return [float(np.median(t[len(t) // 2:])) for t in per_fn]


def timed_call(runner: Callable[[Inputs], Any], inputs: Inputs) -> Callable[[], Any]:
    """The call of ``runner`` on ``inputs`` that the latency suite times. For a runtime in another process that
    repeats calls itself (``runner.repeat(inputs, k)``), the function also carries ``block(k)``: k calls back to back
    in that process on one exchange of the inputs, as a loop on the runtime's own API runs them. Called one by one,
    each call's exchange (IPC, .npz files, layout transposes) would run between two invokes and evict the artifact
    from the CPU caches: a 0.35 ms int8 call read 23-53 % slower than the same file timed directly."""
    def call() -> Any:
        return runner(inputs)

    repeat = getattr(runner, "repeat", None)
    if repeat is not None and runtime_pid(runner) != "self":
        call.block = lambda k: repeat(inputs, k)  # type: ignore[attr-defined]
    return call


def time_call(fn: Callable[[], Any], timer: Timer = time.perf_counter, iterations: int = 1) -> float:
    """Seconds per call of ``fn``, averaged over ``iterations`` back-to-back calls (one ``fn.block(iterations)``
    when ``fn`` has one, see :func:`timed_call`)."""
    block = getattr(fn, "block", None)
    t0 = timer()
    if block is not None:
        block(iterations)
    else:
        for _ in range(iterations):
            fn()
    return (timer() - t0) / iterations


def measure(fn: Callable[[], Any], rounds: int, iterations: int = 1, timer: Timer = time.perf_counter) -> list[float]:
    """``rounds`` timed rounds of ``fn`` (no warm-up: call :func:`warm_up` first); seconds per call."""
    gc.collect()
    return [time_call(fn, timer, iterations) for _ in range(rounds)]


class InterleavedRounds:
    """Rounds of ``iterations`` interleaved calls ``target, reference, target, reference, ...``.

    :meth:`round` is what pytest-benchmark times and :meth:`clock` is the timer it reads: a virtual clock that
    advances only while the *target* runs (by its mean seconds per call in the round), so pytest-benchmark
    records the artifact's per-call time although each round also runs the eager reference. Interleaving call by
    call puts both under the same machine conditions at millisecond scale; on the loaded box it cut the A/A
    spread of the ratio from 4.9% to 1.8% compared with timing a block of target calls then a block of eager.
    Every call is also timed on the wall clock (``wall_target`` / ``wall_reference``). ``target_clocks``
    (timer, wall) time the target on other clocks than the reference: an out-of-process runtime's own (see
    :func:`clocks_for`). A target with ``block(k)`` (:func:`timed_call`) runs its round's calls as one block in its
    process, followed by the reference's calls: its own clock does not see the reference, and calls interleaved
    across two processes would time the cache misses of the exchange instead.
    """

    def __init__(self, target: Callable[[], Any], reference: Callable[[], Any] | None, iterations: int,
                 timer: Timer, wall: Timer = time.perf_counter,
                 target_clocks: tuple[Timer, Timer] | None = None) -> None:
        self.target, self.reference, self.iterations = target, reference, max(1, iterations)
        self.timer, self.wall = timer, wall
        self.target_timer, self.target_wall = target_clocks or (timer, wall)
        self.virtual = 0.0
        self.timings = PairedTimings()
        self.exchange: list[float] = []
        """Per round, seconds per call the harness spent outside the out-of-process runtime's timed invokes (the
        parent's wall time around the block less the runtime process's own): reported apart, never timed."""

    def clock(self) -> float:
        return self.virtual

    def round(self) -> None:
        timer, wall, target, reference = self.timer, self.wall, self.target, self.reference
        t_timer, t_wall = self.target_timer, self.target_wall
        t_sum = r_sum = tw_sum = rw_sum = 0.0
        block = getattr(target, "block", None)
        if block is not None:  # an out-of-process runtime: its calls back to back there, then the reference's
            p0, w0, c0 = wall(), t_wall(), t_timer()
            block(self.iterations)
            c1, w1, p1 = t_timer(), t_wall(), wall()
            t_sum, tw_sum = c1 - c0, w1 - w0
            self.exchange.append(max(0.0, (p1 - p0) - tw_sum) / self.iterations)
        for _ in range(self.iterations):
            if block is None:
                w0, c0 = t_wall(), t_timer()
                target()
                c1, w1 = t_timer(), t_wall()
                t_sum += c1 - c0
                tw_sum += w1 - w0
            if reference is not None:
                w2, c2 = wall(), timer()
                reference()
                c3, w3 = timer(), wall()
                r_sum += c3 - c2
                rw_sum += w3 - w2
        k = self.iterations
        self.virtual += t_sum / k
        self.timings.target.append(t_sum / k)
        self.timings.wall_target.append(tw_sum / k)
        if reference is not None:
            self.timings.reference.append(r_sum / k)
            self.timings.wall_reference.append(rw_sum / k)

    def run(self, rounds: int) -> PairedTimings:
        gc.collect()
        for _ in range(rounds):
            self.round()
        return self.timings

    def release(self) -> None:
        """Drop the callables (and with them the runner, its session and the inputs): pytest-benchmark keeps
        its timer, :meth:`clock`, alive until the end of the session."""
        self.target = self.reference = None  # type: ignore[assignment]
        self.target_timer, self.target_wall = self.timer, self.wall


@dataclass
class Schedule:
    """How one benchmark is timed: its clock (and why), the fixed round count, and the rounds to run."""

    clock: str
    why: str
    rounds: int
    runner: InterleavedRounds


def schedule_rounds(target: Callable[[], Any], reference: Callable[[], Any] | None, runner: Any, plan: TimingPlan,
                    threads: int, clock: str = "auto") -> Schedule:
    """The latency suite's one way to set up a benchmark: pick the clock (:func:`choose_clock`), warm up on it (the
    runtime process's own clocks for an out-of-process runner), and fix rounds and iterations from the warm-up."""
    fns = [target] if reference is None else [target, reference]
    clock, why = choose_clock(clock, threads, runner, fns)
    timer, target_clocks = CLOCKS[clock], clocks_for(clock, runner)
    rounds, iterations = plan.schedule(warm_up(fns, plan, timer, [target_clocks[0], timer][:len(fns)]))
    return Schedule(clock, why, rounds, InterleavedRounds(target, reference, iterations, timer,
                                                          target_clocks=target_clocks))


def measure_paired(target: Callable[[], Any], reference: Callable[[], Any], rounds: int, iterations: int = 1,
                   timer: Timer = time.perf_counter, target_clocks: tuple[Timer, Timer] | None = None
                   ) -> PairedTimings:
    """``rounds`` rounds of ``iterations`` interleaved (target, reference) calls; seconds per call per round.
    The same arithmetic as the pytest-benchmark path (:class:`InterleavedRounds`)."""
    return InterleavedRounds(target, reference, iterations, timer, target_clocks=target_clocks).run(rounds)


# ------------------------------------------------------------------------------------------------ clocks

CLOCKS: dict[str, Timer] = {"thread-cpu": time.thread_time, "wall": time.perf_counter}
"""``thread-cpu``: CPU time of the calling thread (``CLOCK_THREAD_CPUTIME_ID``, ns resolution): time spent
descheduled for other processes does not count, so on a shared box it measures the work, not the neighbours.
Valid only when all the work runs on the calling thread (one intra-op thread, in-process runtime).
``wall``: ``perf_counter``; the only honest clock for multi-threaded or out-of-process runtimes."""


def offloaded_share(fn: Callable[[], Any], calls: int = 10, min_seconds: float = 0.05) -> float:
    """Fraction of ``fn``'s CPU time spent on threads other than the caller (0 = all on the calling thread),
    over at least ``calls`` calls and ``min_seconds`` of process CPU time. CPU that other threads burn anyway
    (an earlier session's thread pool still spinning down) is measured while idle and subtracted."""
    gc.collect()
    w0, p0 = time.perf_counter(), time.process_time()
    time.sleep(0.02)
    background = (time.process_time() - p0) / max(time.perf_counter() - w0, 1e-9)
    w0, p0, t0 = time.perf_counter(), time.process_time(), time.thread_time()
    n = 0
    while n < calls or time.process_time() - p0 < min_seconds:
        fn()
        n += 1
        if n >= 10 * calls:
            break
    process, thread = time.process_time() - p0, time.thread_time() - t0
    others = process - thread - background * (time.perf_counter() - w0)
    return max(0.0, others / process) if process > 0 else 0.0


def choose_clock(setting: str, threads: int, runner: Any, fns: Sequence[Callable[[], Any]],
                 max_offloaded: float = 0.3) -> tuple[str, str]:
    """Pick the clock for one benchmark: ``(name, why)``. ``auto`` takes ``thread-cpu`` when it is valid for
    every fn (one thread, in-process, CPU work on the calling thread), else ``wall``. The check runs after three
    warm-up calls (first calls may compile or allocate on helper threads) and only a large share of work on
    other threads (``max_offloaded``) switches to the wall clock, so the choice is stable from run to run."""
    if setting in ("wall", "thread-cpu"):
        return setting, "configured"
    if setting != "auto":
        raise ValueError(f"clock must be auto, wall or thread-cpu, got {setting!r}")
    if threads != 1:
        return "wall", f"{threads if threads > 0 else 'default'} intra-op threads: CPU time would sum threads"
    if runtime_pid(runner) != "self":
        if getattr(runner, "work_clock", None) is None:
            return "wall", "the runtime runs in another process that reports no clock of its own"
        if (getattr(runner, "info", {}) or {}).get("threads") != 1:
            return "wall", "the runtime runs in another process whose thread count is not 1"
        fns, why = fns[1:], "one thread; the artifact timed by its runtime process's own CPU clock"
    else:
        why = "one intra-op thread, all work on the calling thread"
    for fn in fns:
        for _ in range(3):
            fn()
        share = offloaded_share(fn)
        if share > max_offloaded:
            return "wall", f"{share:.0%} of the CPU time ran on other threads"
    return "thread-cpu", why


def clocks_for(clock: str, runner: Any) -> tuple[Timer, Timer]:
    """``(timer, wall)`` that time ``runner``'s artifact: for an out-of-process runtime that reports its own
    time (``runner.work_clock``) the clocks of the process where the work runs, which leave out the IPC wait
    (the parent's thread-CPU clock would see only that); otherwise this process's ``CLOCKS[clock]`` and wall."""
    work = getattr(runner, "work_clock", None)
    if work is not None and runtime_pid(runner) != "self":
        return work(clock), work("wall")
    return CLOCKS[clock], time.perf_counter


@contextlib.contextmanager
def pinned_allocator(enabled: bool = True) -> Iterator[str]:
    """Within the block, glibc malloc never uses mmap and never trims the heap below 1 GB; afterwards its
    default thresholds (128 kB) are restored. Yields a description for the record.

    Large tensors (PyTorch eager at batch 16: tens of MB) are otherwise mmap'd fresh on every call and their
    page faults are paid again each time: on this box the same eager model took 81 ms with the heap and 187-314
    ms with mmap (tiny_ladeda, batch 16), varying from process to process, and glibc's dynamic threshold made
    batch-1 eager 2-3x faster half-way through a session. Keeping freed blocks in the heap gives every call the
    warmed allocator a serving process would have.
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


# ----------------------------------------------------------------------------------------------- runners


class EagerRunner:
    """PyTorch eager on named numpy inputs, as a Runner (the reference every ratio is taken against)."""

    def __init__(self, spec: Any, model: Any) -> None:
        import torch

        self.spec = spec
        self.model = model
        self.info = {"runtime": "torch", "mode": "eager", "version": torch.__version__}

    def __call__(self, inputs: Inputs) -> dict[str, np.ndarray]:
        from export_harness.models.spec import run_torch

        return run_torch(self.spec, self.model, dict(inputs))


class SlowedRunner:
    """Wraps a runner and spins before each call for ``factor - 1`` times the previous call's duration, so
    every call takes ``factor`` times as long (``factor=1.2`` is a 20% regression).

    Used by the gate's self-tests to inject a known slowdown. Spinning, not sleeping, so the slowdown behaves
    like extra computation on the same core. The spin comes *before* the call so the PyTorch eager reference,
    which follows each artifact call in a round, runs exactly as it does without the wrapper: spinning after the
    call let a memory-heavy neighbour evict the eager model's cache lines meanwhile, which made eager slower and
    hid a quarter of the injected 20% from the ratio (measured +14% under a streaming neighbour).
    """

    def __init__(self, runner: Callable[[Inputs], Any], factor: float, timer: Timer = time.perf_counter) -> None:
        if factor < 1.0:
            raise ValueError(f"slowdown factor must be >= 1, got {factor}")
        self.runner = runner
        self.factor = factor
        self.timer = timer
        self.last = 0.0
        self.info = {**dict(getattr(runner, "info", {}) or {}), "injected_slowdown": factor}

    def __call__(self, inputs: Inputs) -> Any:
        end = self.timer() + self.last * (self.factor - 1.0)
        while self.timer() < end:
            pass
        t0 = self.timer()
        out = self.runner(inputs)
        self.last = self.timer() - t0
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.runner, name)


# ----------------------------------------------------------------------------------------------- threads


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


# ------------------------------------------------------------------------------------------------ memory


def read_rss_kb(pid: int | str = "self") -> dict[str, int]:
    """``VmRSS`` (resident now) and ``VmHWM`` (peak resident) of a process, in kB, from ``/proc``."""
    text = Path(f"/proc/{pid}/status").read_text()
    out = {}
    for key in ("VmRSS", "VmHWM"):
        match = re.search(rf"^{key}:\s+(\d+)\s+kB", text, re.M)
        if match:
            out[key] = int(match.group(1))
    return out


def reset_peak_rss(pid: int | str = "self") -> bool:
    """Reset the process's ``VmHWM`` to its current RSS (Linux >= 4.0, ``clear_refs`` value 5)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class PeakRss:
    """Peak resident memory of a process while a block runs (the process that executes the runtime).

    ``with PeakRss(pid) as probe: load and run`` then ``probe.result()``: ``peak_mb`` (process peak during the
    block), ``peak_delta_mb`` (peak minus resident before: what loading and running this artifact needed on top
    of what the process already held) and ``retained_delta_mb`` (resident after minus before). Allocator reuse
    can hide memory freed by earlier cells, so the delta is what this load *added*, not a standalone footprint.
    """

    def __init__(self, pid: int | str = "self") -> None:
        self.pid = pid
        self.before: dict[str, int] = {}
        self.after: dict[str, int] = {}
        self.reset = False

    def __enter__(self) -> PeakRss:
        try:
            self.reset = reset_peak_rss(self.pid)
            self.before = read_rss_kb(self.pid)
        except OSError:
            self.before = {}
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):
            self.after = read_rss_kb(self.pid)

    def result(self) -> dict[str, Any]:
        if not self.before or not self.after:
            return {"pid": str(self.pid), "method": "unavailable (no /proc)", "peak_mb": None,
                    "peak_delta_mb": None, "retained_delta_mb": None}
        before, peak, now = self.before["VmRSS"], self.after["VmHWM"], self.after["VmRSS"]
        method = "VmHWM reset via /proc/PID/clear_refs" if self.reset else \
            "VmHWM not resettable: process-lifetime peak, delta is a lower bound"
        return {"pid": str(self.pid), "method": method, "rss_before_mb": round(before / 1024, 1),
                "peak_mb": round(peak / 1024, 1), "peak_delta_mb": round(max(0, peak - before) / 1024, 1),
                "retained_delta_mb": round((now - before) / 1024, 1)}


def runtime_pid(runner: Any) -> int | str:
    """The process that runs the artifact: ``runner.pid`` / ``info["pid"]`` for out-of-process runtimes."""
    pid = getattr(runner, "pid", None) or (getattr(runner, "info", {}) or {}).get("pid")
    return int(pid) if pid else "self"


# ----------------------------------------------------------------------------------------- identification


def machine_kind() -> dict[str, Any]:
    """What makes timings comparable: OS, Python, architecture, CPU model and usable CPUs (not clock drift)."""
    return {"system": platform.system(), "python": ".".join(platform.python_version_tuple()[:2]),
            "implementation": platform.python_implementation(), "bits": platform.architecture()[0],
            "machine": platform.machine(), "cpu": cpu_model(), "cpus": usable_cpus()}


def machine_id(kind: Mapping[str, Any] | None = None) -> str:
    """Storage key for baselines: pytest-benchmark's ``Linux-CPython-3.11-64bit`` plus CPU model and count."""
    kind = dict(kind or machine_kind())
    cpu = re.sub(r"[^A-Za-z0-9]+", "_", str(kind["cpu"])).strip("_")[:40] or "cpu"
    return f"{kind['system']}-{kind['implementation']}-{kind['python']}-{kind['bits']}-{cpu}-{kind['cpus']}cpu"
