"""Clocks and timing loops: warm-up, fixed-round schedules, and rounds that interleave artifact and eager calls.

Only the runner call is timed; inputs are prepared outside the timed region. The clock is the calling thread's CPU
time where that measures all the work (one intra-op thread, in-process runtime, or an out-of-process runtime's own
clock), else the wall clock; wall time is recorded for every round either way (docs/latency.md).
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from export_harness.converters.latency.process_control import runtime_pid
from export_harness.converters.latency.stats import PairedTimings

Timer = Callable[[], float]
Inputs = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class TimingPlan:
    """Warm-up, round length and round count. Both derive from warm-up timings and are then fixed."""

    warmup_rounds: int = 2
    warmup_seconds: float = 0.2
    round_seconds: float = 0.01
    """Minimum duration of the artifact's share of a round: faster calls are repeated ``iterations`` times per
    round (interleaved with the reference), so one disturbance cannot decide a round."""
    worker_round_seconds: float = 0.05
    """The same for a runtime in a worker process (TFLite, SavedModel): the worker waits idle while this process
    does its side of each round, and the first calls after an idle wait run slower (the chess SavedModel, 3.5 ms
    per call: +10% per call in rounds of 3 calls, +1% in rounds of 30; one untimed call first did not help, the
    slowdown grew with the wait), which a loop on the runtime's own API never pays."""
    seconds: float = 2.0
    """Time budget per benchmark, eager reference included; converted once into a fixed round count."""
    rounds_min: int = 8
    rounds_max: int = 60

    def iterations_for(self, target_call_seconds: float, in_worker: bool = False) -> int:
        if target_call_seconds <= 0:
            return 1
        return max(1, math.ceil((self.worker_round_seconds if in_worker else self.round_seconds)
                                / target_call_seconds))

    def rounds_for(self, seconds_per_round: float) -> int:
        """Fixed round count for a benchmark whose rounds take ``seconds_per_round`` each."""
        if seconds_per_round <= 0:
            return self.rounds_max
        return int(min(self.rounds_max, max(self.rounds_min, math.ceil(self.seconds / seconds_per_round))))

    def schedule(self, call_seconds: Sequence[float], in_worker: bool = False) -> tuple[int, int]:
        """``(rounds, iterations)`` from per-call warm-up medians: ``[target]`` or ``[target, reference]``;
        ``in_worker``: the target runs in another process (:attr:`worker_round_seconds`)."""
        iterations = self.iterations_for(call_seconds[0], in_worker)
        return self.rounds_for(iterations * sum(call_seconds)), iterations


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
    from the CPU caches, so the timing would include cache misses a direct caller never pays."""
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

    :meth:`round` is what a benchmark framework times and :meth:`clock` is the timer it reads: a virtual clock
    that advances only while the *target* runs (by its mean seconds per call in the round), so the framework
    records the artifact's per-call time although each round also runs the eager reference. Interleaving call by
    call puts both under the same machine conditions at millisecond scale. Every call is also timed on the wall
    clock (``wall_target`` / ``wall_reference``). ``target_clocks`` (timer, wall) time the target on other clocks
    than the reference: an out-of-process runtime's own (see :func:`clocks_for`). A target with ``block(k)``
    (:func:`timed_call`) runs its round's calls as one block in its process, followed by the reference's calls:
    its own clock does not see the reference, and calls interleaved across two processes would time the cache
    misses of the exchange instead.
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
        """Drop the callables (and with them the runner, its session and the inputs): a caller may keep
        :meth:`clock` alive long after the rounds (pytest-benchmark does, until the end of the session)."""
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
    rounds, iterations = plan.schedule(warm_up(fns, plan, timer, [target_clocks[0], timer][:len(fns)]),
                                       in_worker=runtime_pid(runner) != "self")
    return Schedule(clock, why, rounds, InterleavedRounds(target, reference, iterations, timer,
                                                          target_clocks=target_clocks))


def measure_paired(target: Callable[[], Any], reference: Callable[[], Any], rounds: int, iterations: int = 1,
                   timer: Timer = time.perf_counter, target_clocks: tuple[Timer, Timer] | None = None
                   ) -> PairedTimings:
    """``rounds`` rounds of ``iterations`` interleaved (target, reference) calls; seconds per call per round.
    The same arithmetic as every other path (:class:`InterleavedRounds`)."""
    return InterleavedRounds(target, reference, iterations, timer, target_clocks=target_clocks).run(rounds)


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


