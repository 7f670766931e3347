"""Out-of-process runtimes (TFLite, SavedModel) are timed where the work runs.

Their runners call a worker process; the parent's thread-CPU clock around such a call sees only the IPC wait (the
encoder's ``tflite:fp32[litert-torch]`` once showed 1.35 ms where the same file costs 8.3 ms CPU in-process). The
latency suite reads the worker's own clocks around each invoke (``runner.work_clock``), and has the worker run a
round's calls back to back on one exchange of the inputs (``timing.timed_call``): an exchange per call evicts the
weights from the CPU caches between two invokes (a 0.35 ms int8 call read 23-53 % slow on AVX-512 VNNI CPUs), and a
worker's round lasts at least ``worker_round_seconds`` (its first calls after waiting idle for the exchange run slower:
the SavedModel read 1.10x in rounds of 10 ms).
Each test here times one cached artifact the way the latency suite does and, in a separate process, through the
runtime's own API with no harness code in the timed loop, at one thread on the same CPU clock, and asserts the
two agree within 20%. The cells span fp32 and int8 files, from about 0.1 ms per call upward. With
``--latency-report`` (or ``$HARNESS_RESULTS_DIR``) each test also stores its row in ``out-of-process-timing.json``
beside it, which ``python -m export_harness.converters.report.docs_results --out-of-process PATH`` renders for
``docs/results/``.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from export_harness.converters.conformance import export_artifact
from export_harness.converters.latency import machine, timing
from export_harness.converters.latency.process_control import load_runner
from export_harness.converters.report import out_of_process

pytestmark = pytest.mark.latency  # timings: the serial step

CELLS = [("gcode_decoder_step", "tflite:fp32[litert-torch]"), ("alphazero_chess", "tflite:int8-full[onnx2tf]"),
         ("alphazero_chess", "tf:savedmodel[onnx2tf]"), ("gcode_decoder_step", "tflite:int8-dynamic[litert-torch]")]
"""fp32 and int8 .tflite files and a SavedModel, from about 3.5 ms down to about 0.2 ms per call. Not here: the
chess net's fp32 .tflite (42 MB of weights streamed from memory on every call): on the 2-core VM its medians in one
worker process spread 4.0-5.8 ms from one measurement to the next, wider than the agreement this test checks, so it
could not tell a timing method from the machine's memory bandwidth."""
CALLS = 40
AGREEMENT = 0.20

DIRECT = textwrap.dedent('''
    """Time the artifact with its runtime's own API: one thread, CPU time around blocks of back-to-back calls (the
    latency suite's rounds x iterations; the calling thread's for a one-thread interpreter, whose kernels all run
    on it, the process's for TensorFlow, whose executor runs ops on its own threads): the median block's mean."""
    import json, sys, time
    import numpy as np
    path, kind, feeds_path = sys.argv[1], sys.argv[2], sys.argv[3]
    rounds, iterations = int(sys.argv[4]), int(sys.argv[5])
    with np.load(feeds_path, allow_pickle=False) as data:
        feeds = {k: data[k] for k in data.files}
    if kind == "tflite":
        from ai_edge_litert.interpreter import Interpreter
        interp = Interpreter(model_path=path, num_threads=1)
        interp.allocate_tensors()
        if any(k.startswith("#") for k in feeds):
            def call():
                for k, v in feeds.items():
                    interp.set_tensor(int(k[1:]), v)
                interp.invoke()
        else:
            signatures = interp.get_signature_list()
            run = interp.get_signature_runner("serving_default" if "serving_default" in signatures
                                              else next(iter(signatures)))
            def call():
                run(**feeds)
    else:
        import tensorflow as tf
        fn = tf.saved_model.load(path).signatures["serving_default"]
        tensors = {k: tf.constant(v) for k, v in feeds.items()}
        def call():
            {k: v.numpy() for k, v in fn(**tensors).items()}
    for _ in range(5):
        call()
    clock = time.thread_time if kind == "tflite" else time.process_time
    blocks, single = [], []
    for _ in range(rounds):
        c0 = clock()
        for _ in range(iterations):
            call()
        blocks.append((clock() - c0) / iterations)
    for _ in range(rounds):
        c0 = clock()
        call()
        single.append(clock() - c0)
    print(json.dumps({"cpu_median": float(np.median(blocks)), "single_median": float(np.median(single))}))
''')


PARAMS = [pytest.param(m, t, id=f"{m}-{t}") for m, t in CELLS]


@pytest.mark.parametrize(("model", "target"), PARAMS)
def test_out_of_process_timing_matches_the_runtime_timed_directly(harness, model: str, target: str,
                                                                  tmp_path: Path, harness_record,
                                                                  pytestconfig: pytest.Config) -> None:
    spec, tgt = harness.models.get(model), harness.targets.get(target)
    artifact = export_artifact(tgt, spec, harness.model(spec), harness.cache, harness.targets, harness.identities)
    runner, threads = load_runner(tgt, artifact, spec, 1)
    assert threads["runtime_reported"] == 1, threads
    inputs = spec.example_inputs(1, seed=0)
    fn = timing.timed_call(runner, inputs)  # what the latency suite times
    clock, why = timing.choose_clock("auto", 1, runner, [fn])
    assert clock == "thread-cpu" and "own CPU clock" in why, (clock, why)
    worker_cpu, _ = timing.clocks_for(clock, runner)
    plan = timing.TimingPlan(warmup_seconds=1.0)
    rounds, iterations = plan.schedule(timing.warm_up([fn], plan, time.perf_counter, [worker_cpu]), in_worker=True)
    feeds = tmp_path / "feeds.npz"
    np.savez(feeds, **{b.key: b.to_artifact(np.asarray(inputs[name])) for name, b in runner.inputs.items()})
    kind = "tflite" if target.startswith("tflite") else "savedmodel"
    env = {**os.environ, **runner.env, "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
           "OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}

    def direct_ms() -> float:
        done = subprocess.run([runner.python, "-c", DIRECT, str(artifact.path), kind, str(feeds), str(rounds),
                               str(iterations)],
                              capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        return 1e3 * json.loads(done.stdout.strip().splitlines()[-1])["cpu_median"]

    # Up to three alternating (harness, direct) pairs: one pair can catch a burst of another process on the box,
    # while a clock that does not see the work (the parent's: 1.29 ms for a 5.0 ms call) misses every time.
    pairs = []
    for _ in range(3):
        pairs.append((1e3 * float(np.median(timing.measure(fn, rounds, iterations, worker_cpu))), direct_ms()))
        if abs(pairs[-1][0] / pairs[-1][1] - 1) <= AGREEMENT:
            break
    harness_ms, direct = pairs[-1]
    # the readings this test guards against: each call on its own exchange (its .npz reads and writes evict the
    # artifact from the caches between two invokes), and the parent's own clock (sees only the IPC wait)
    one_by_one_ms = 1e3 * float(np.median(timing.measure(lambda: runner(inputs), CALLS, 1, worker_cpu)))
    parent_ms = 1e3 * float(np.median(timing.measure(fn, CALLS, 1, time.thread_time)))
    harness_record("timing_ms", {"harness_worker_cpu": round(harness_ms, 3), "direct_cpu": round(direct, 3),
                                  "one_exchange_per_call": round(one_by_one_ms, 3),
                                  "parent_thread_cpu": round(parent_ms, 3), "pairs": pairs,
                                  "rounds": rounds, "iterations": iterations})
    results = out_of_process.results_dir(pytestconfig.getoption("--latency-report"))
    if results is not None:
        out_of_process.record_row(results, {
            "cell": f"{model}-{target}", "harness_worker_cpu_ms": round(harness_ms, 3),
            "direct_cpu_ms": round(direct, 3), "one_exchange_per_call_ms": round(one_by_one_ms, 3),
            "parent_thread_cpu_ms": round(parent_ms, 3),
            "pairs": [[round(h, 3), round(d, 3)] for h, d in pairs], "calls": CALLS, "rounds": rounds,
            "iterations": iterations, "batch": 1, "threads": 1,
            "machine": machine.machine_id(), "measured": time.strftime("%Y-%m-%d", time.gmtime())})
    print(f"{model}-{target}: harness (worker CPU clock) {harness_ms:.3f} ms, runtime timed directly "
          f"{direct:.3f} ms, one exchange per call {one_by_one_ms:.3f} ms, parent thread-CPU clock "
          f"{parent_ms:.3f} ms; pairs {pairs}")
    assert abs(harness_ms / direct - 1) <= AGREEMENT, f"more than {AGREEMENT:.0%} apart in every pair: {pairs}"
