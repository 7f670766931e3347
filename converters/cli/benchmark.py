"""``export-harness benchmark``: latency, throughput and peak memory of a model's artifacts per batch size.

Each target's conformance cell runs first (a failing cell is not timed, as in the latency suite); then, per batch
size, the artifact is loaded on its runtime with fixed intra-op threads and its peak RSS measured over the load and
first run (``export_harness.converters.latency.session``, shared with the latency suite: the runtime's own process for
out-of-process runtimes), ``--warmup`` calls, and ``--runs`` timed rounds exactly as the latency suite times them: a
round is as many back-to-back calls as last 10 ms (in an out-of-process runtime they run there, on one exchange of
the inputs), interleaved with PyTorch eager's calls, read on the thread-CPU clock where it is valid (one thread, the
work on the timing thread or the runtime process's own clock) and always on the wall clock. The table names the clock
and gives p50 / p95 / p99 / mean ms per call over the rounds on it, the wall p50 beside it, and samples per second at
the median. PyTorch eager (``torch:eager``) alone is the reference of the speedup column. No regression gate here:
that is the latency suite's (``pytest -m latency``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from export_harness.converters.cli import EXIT_FAILED, EXIT_OK, UsageError
from export_harness.converters.cli.cells import (
    DEFAULT_FORMATS,
    cached_artifact,
    check_opset,
    run_matrix_cell,
    select_targets,
)
from export_harness.converters.cli.files import publish
from export_harness.converters.cli.progress import Progress
from export_harness.converters.cli.session import first_line, load_model, open_session, weights_label
from export_harness.converters.latency import machine
from export_harness.converters.latency import process_control as pc
from export_harness.converters.latency import session as ls
from export_harness.converters.latency.stats import LatencyStats
from export_harness.converters.latency.timing import TimingPlan, timed_call
from export_harness.converters.report.matrix_report import fmt_optional
from export_harness.converters.session import Session
from export_harness.converters.target import Target
from export_harness.converters.util.files import write_json_atomic
from export_harness.models.spec import ModelSpec

EAGER = ls.EAGER
DEFAULT_BATCHES = (1,)
DEFAULT_RUNS = 50
DEFAULT_WARMUP = 5


def _int_at_least(minimum: int, expected: str, maximum: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value

    return parse


MAX_BATCH = 65536
positive_int = _int_at_least(1, "a positive integer")
"""argparse type: an integer >= 1 (runs)."""
batch_size = _int_at_least(1, f"a batch size from 1 to {MAX_BATCH}", MAX_BATCH)
"""argparse type: a batch size (its inputs must also fit in memory: :func:`check_batch_memory`)."""
count_int = _int_at_least(0, "an integer >= 0")
"""argparse type: an integer >= 0 (warm-up calls)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--formats", nargs="+", metavar="PATTERN", default=None,
                        help="targets to time (patterns as in export); default: " + " ".join(DEFAULT_FORMATS))
    parser.add_argument("--opset", type=int, metavar="N", default=None, help="the ONNX chain at this opset")
    parser.add_argument("--batch-sizes", nargs="+", type=batch_size, metavar="N", default=list(DEFAULT_BATCHES),
                        help="batch sizes (default: 1; guide 004: 1 2 4 8 16)")
    parser.add_argument("--runs", type=positive_int, default=DEFAULT_RUNS, metavar="N",
                        help=f"timed calls per target and batch (default {DEFAULT_RUNS})")
    parser.add_argument("--warmup", type=count_int, default=DEFAULT_WARMUP, metavar="N",
                        help=f"untimed calls before them (default {DEFAULT_WARMUP})")
    parser.add_argument("--threads", type=count_int, default=1, metavar="N",
                        help="intra-op threads of PyTorch, TorchScript and ONNX Runtime (default 1, as the latency "
                             "suite; 0 = each runtime's default)")
    parser.add_argument("--no-eager", action="store_true", help="do not time PyTorch eager (no speedup column)")
    parser.add_argument("--json", metavar="PATH", default=None, help="also write the rows as JSON to PATH")


def time_runner(runner: Any, inputs: dict[str, Any], runs: int, warmup: int, threads: int,
                reference: Callable[[], Any] | None = None) -> tuple[LatencyStats, LatencyStats, str]:
    """``runs`` rounds after ``warmup`` untimed calls, as the latency suite times an artifact (its calls interleaved
    with ``reference``'s, PyTorch eager, when given): (per-call stats on the chosen clock, the same rounds on the
    wall clock, the clock's name)."""
    call = timed_call(runner, inputs)
    for _ in range(warmup):
        call()
    timed = ls.bench(call, reference, runner, TimingPlan(), threads,
                     run=lambda schedule: schedule.runner.run(runs))  # --runs rounds, not the suite's time budget
    rounds = timed.rounds_timings
    name = timed.clock if pc.runtime_pid(runner) == "self" else f"{timed.clock} (runtime process)"
    return LatencyStats.from_seconds(rounds.target), LatencyStats.from_seconds(rounds.wall_target), name


def load_for_timing(session: Session, spec: ModelSpec, target: Target | None, inputs: dict[str, Any],
                    threads: int) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """(runner, threads record, peak RSS of the load and first run) of one target (None: PyTorch eager)."""
    model = session.model(spec)
    if target is None:
        runner = ls.EagerRunner(spec, model)
        threads_record, memory = ls.load_eager(runner, inputs, threads)
        return runner, threads_record, memory | {"covers": "first run"}
    return ls.load_target(target, cached_artifact(session, spec, target), spec, inputs, threads)


def bench_one(session: Session, spec: ModelSpec, target: Target | None, batch: int, runs: int, warmup: int,
              threads: int) -> dict[str, Any]:
    """One row: latency percentiles, throughput and peak RSS of ``target`` at ``batch``."""
    inputs = spec.example_inputs(batch, seed=0)
    with pc.torch_threads(threads), pc.pinned_allocator() as allocator:
        runner, threads_record, memory = load_for_timing(session, spec, target, inputs, threads)
        eager = None if target is None else ls.EagerRunner(spec, session.model(spec))
        reference = None if eager is None else (lambda: eager(inputs))
        stats, wall, clock = time_runner(runner, inputs, runs, warmup, threads, reference)
    info = getattr(runner, "info", {}) or {}
    return {"model": spec.name, "target": EAGER if target is None else target.name, "batch": batch,
            "status": "timed", "p50_ms": stats.median_ms, "p95_ms": stats.p95_ms, "p99_ms": stats.p99_ms,
            "mean_ms": stats.mean_ms, "min_ms": stats.min_ms, "max_ms": stats.max_ms, "stdev_ms": stats.stdev_ms,
            "wall_p50_ms": wall.median_ms,
            "throughput_per_s": round(stats.throughput(batch), 2), "peak_rss_mb": memory.get("peak_mb"),
            "peak_rss_delta_mb": memory.get("peak_delta_mb"), "memory": memory, "runs": runs, "warmup": warmup,
            "clock": clock, "threads": threads_record, "allocator": allocator,
            "runtime": {k: str(v) for k, v in info.items() if k in ("runtime", "version", "delegate", "batch_mode")}}


def skipped_row(spec: ModelSpec, target: Target, batch: int, reason: str, outcome: str | None = None) -> dict[str, Any]:
    """A target not timed at ``batch``; ``outcome``: its conformance cell's (FAILED fails the command)."""
    return {"model": spec.name, "target": target.name, "batch": batch, "status": "skipped", "reason": reason,
            "conformance": outcome}


def benchmark_targets(session: Session, spec: ModelSpec, targets: Sequence[Target], batches: Sequence[int], *,
                      runs: int, warmup: int, threads: int, quiet: bool, eager: bool = True,
                      conformance: bool = True) -> list[dict[str, Any]]:
    """Rows for PyTorch eager (with ``eager``) and each target at each batch; a target whose conformance cell does
    not pass (checked first unless ``conformance`` is False) gets a ``skipped`` row naming the stage."""
    plan: list[Target | None] = ([None] if eager else []) + list(targets)
    progress = Progress(len(plan) * len(batches), enabled=not quiet)
    rows: list[dict[str, Any]] = []
    for target in plan:
        reason = outcome = None
        if target is not None and conformance:
            record, _ = run_matrix_cell(session, spec, target, localise=False)
            if record["status"] != "passed":
                first = (record.get("message") or "").strip().splitlines()
                stage = f"stage {record['stage']}" if record.get("stage") else "skipped"
                reason = f"conformance {record['outcome']} ({stage}): {first[0][:200] if first else ''}"
                outcome = record["outcome"]
        for batch in batches:
            label = f"{spec.name}-{EAGER if target is None else target.name} b{batch}"
            with progress.step(label) as step:
                if reason is not None:
                    rows.append(skipped_row(spec, target, batch, reason, outcome))  # type: ignore[arg-type]
                else:
                    try:
                        rows.append(bench_one(session, spec, target, batch, runs, warmup, threads))
                    except Exception as exc:  # a runtime that cannot run this batch: reported, not fatal
                        rows.append(skipped_row(spec, target, batch, f"run failed: {first_line(exc)[:200]}"))  # type: ignore[arg-type]
                step.status = rows[-1]["status"]
    eager_p50 = {r["batch"]: r["p50_ms"] for r in rows if r["target"] == EAGER and r["status"] == "timed"}
    for row in rows:
        if row["status"] == "timed" and row["batch"] in eager_p50:
            row["speedup_vs_eager"] = round(eager_p50[row["batch"]] / row["p50_ms"], 3) if row["p50_ms"] else None
    return rows


def print_table(rows: Sequence[dict[str, Any]]) -> None:
    print(f"{'target':<40} {'batch':>5} {'clock':<10} {'p50_ms':>9} {'p95_ms':>9} {'p99_ms':>9} {'mean_ms':>9} "
          f"{'wall_p50':>9} {'samples/s':>10} {'peak_MB':>8} {'speedup':>7}")
    for r in rows:
        if r["status"] != "timed":
            print(f"{r['target']:<40} {r['batch']:>5} skipped: {r['reason']}")
            continue
        clock = r["clock"].split()[0]
        print(f"{r['target']:<40} {r['batch']:>5} {clock:<10} {r['p50_ms']:>9.3f} {r['p95_ms']:>9.3f} "
              f"{r['p99_ms']:>9.3f} {r['mean_ms']:>9.3f} {r['wall_p50_ms']:>9.3f} {r['throughput_per_s']:>10.1f} "
              f"{fmt_optional(r.get('peak_rss_mb'), '.1f'):>8} "
              f"{fmt_optional(r.get('speedup_vs_eager'), '.2f'):>7}")


def check_batch_memory(spec: ModelSpec, batches: Sequence[int], share: float = 0.25) -> None:
    """Refuse a batch whose inputs alone would take more than ``share`` of the memory available now (its outputs,
    activations and the runtime's copies come on top): one usage line instead of an out-of-memory kill."""
    import numpy as np

    from export_harness.converters.latency.memory import available_bytes

    sample = spec.example_inputs(1, seed=0)
    per_sample = sum(np.asarray(v).nbytes for v in sample.values())
    budget = available_bytes() * share
    for batch in batches:
        if per_sample * batch > budget:
            raise UsageError(f"--batch-sizes {batch}: {spec.name}'s inputs alone would take "
                             f"{per_sample * batch / 2**30:.1f} GiB, more than {share:.0%} of the "
                             f"{budget / share / 2**30:.1f} GiB available")


def run(args: argparse.Namespace) -> int:
    session, spec = open_session(args)
    targets = select_targets(session.targets, args.formats or DEFAULT_FORMATS,
                             check_opset(session.targets, args.opset))
    batches = list(dict.fromkeys(args.batch_sizes))
    if not spec.dynamic_batch and batches != [1]:
        raise UsageError(f"--batch-sizes {' '.join(map(str, batches))}: model {spec.name} has a fixed batch of 1")
    check_batch_memory(spec, batches)
    json_path = Path(args.json) if args.json else None
    if json_path is not None and not json_path.parent.is_dir():
        raise UsageError(f"--json {args.json}: directory {json_path.parent} does not exist")
    load_model(session, spec)
    rows = benchmark_targets(session, spec, targets, batches, runs=args.runs, warmup=args.warmup,
                             threads=args.threads, quiet=args.quiet, eager=not args.no_eager)
    print_table(rows)
    if json_path is not None:
        report = {"model": spec.name, "weights": weights_label(session, spec),
                  "machine_id": machine.machine_id(), "machine_kind": machine.machine_kind(),
                  "settings": {"batch_sizes": batches, "runs": args.runs, "warmup": args.warmup,
                               "threads": args.threads, "clock": "auto (the latency suite's: thread-cpu where "
                                                                  "valid, else wall; each row names its own)"},
                  "rows": rows}
        try:
            publish(write_json_atomic(json_path, json.loads(json.dumps(report, default=str)), indent=1))
        except OSError as exc:
            raise UsageError(f"--json {args.json}: cannot write ({first_line(exc)})") from None
        print(f"benchmark rows written to {json_path}")
    return EXIT_FAILED if any(r.get("conformance") == "FAILED" for r in rows) else EXIT_OK
