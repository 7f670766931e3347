"""Fault injection on real artifacts: the harness under damage (issue "trustworthy under damage").

Each test damages something a real run depends on (a cached ONNX file, its metadata, a conversion worker, the
process that owns the workers) and asserts the new behaviour: detected, healed or refused with a named error,
never a silently wrong verdict or a failure cached forever. The unit-level cases (every kind of entry damage,
every transient failure, stale work dirs) are in ``suites/test_cache.py``; config damage in
``suites/test_config_validation.py``; baseline damage in ``suites/test_latency_gate_selftest.py`` and
``suites/test_accuracy_selftest.py``; out-of-process timing in ``suites/test_latency_out_of_process.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from torch import nn

from export_harness.converters.cache import ArtifactCache, CacheCorruptionWarning
from export_harness.converters.checks.thresholds import Thresholds
from export_harness.converters.conformance import CellFailure, ModelIdentities, export_artifact, run_cell
from export_harness.converters.registry import default_target_registry
from export_harness.converters.target import StageError
from export_harness.converters.tf.isolation import Worker, WorkerCrash
from export_harness.models.spec import InputSpec, ModelSpec, OutputSpec

pytestmark = pytest.mark.xdist_group("fault-injection")


class Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))

    def forward(self, x):
        return self.body(x)


def _features(rng: np.random.Generator, batch: int) -> np.ndarray:
    return rng.normal(size=(batch, 16)).astype(np.float32)


SPEC = ModelSpec(name="fault_mlp", family="user", factory=Mlp,
                 inputs=(InputSpec("x", ("B", 16), "float32", "NC", _features),),
                 outputs=(OutputSpec("y", ("B", 4), kind="logits"),))


@pytest.fixture(scope="module")
def setting():
    return default_target_registry(), Thresholds.load(), SPEC.build()


def _cell(cache: ArtifactCache, target: str, setting) -> object:
    targets, thresholds, model = setting
    return run_cell(SPEC, targets.get(target), model, cache=cache, thresholds=thresholds, targets=targets,
                    identities=ModelIdentities(), localise=False)


def _fp32_file(cache: ArtifactCache, setting) -> Path:
    targets, _, model = setting
    return export_artifact(targets.get("onnx:fp32"), SPEC, model, cache, targets, ModelIdentities()).path


def _scale_first_initializer(path: Path, factor: float) -> None:
    proto = onnx.load(path)
    init = proto.graph.initializer[0]
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(factor), init.name))
    onnx.save(proto, path)


def test_a_tampered_source_is_rebuilt_and_no_derived_artifact_is_built_from_it(tmp_path: Path, setting) -> None:
    clean = _cell(ArtifactCache(tmp_path / "clean"), "onnx:fp16", setting)
    root = tmp_path / "cache"
    _scale_first_initializer(_fp32_file(ArtifactCache(root), setting), 1.01)  # scaled by 1.01 in the cache
    cache = ArtifactCache(root)  # the next session
    with pytest.warns(CacheCorruptionWarning, match=r"onnx:fp32 entry .* evicted and rebuilt: content sha256"):
        fp16 = _cell(cache, "onnx:fp16", setting)
    assert fp16.status == "passed", fp16.message
    assert fp16.worst()["max_abs"] == pytest.approx(clean.worst()["max_abs"], rel=1e-6)  # built from clean fp32
    fp32 = _cell(cache, "onnx:fp32", setting)
    assert fp32.status == "passed" and fp32.cache == "hit"


@pytest.mark.parametrize("damage", ["flip-a-byte", "truncate", "truncate-meta"])
def test_a_corrupt_cached_model_is_evicted_and_rebuilt_not_failed_forever(tmp_path: Path, setting,
                                                                         damage: str) -> None:
    path = _fp32_file(ArtifactCache(tmp_path), setting)
    data = bytearray(path.read_bytes())
    if damage == "flip-a-byte":
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    elif damage == "truncate":
        path.write_bytes(bytes(data[: len(data) // 3]))
    else:
        meta = path.parent / "meta.json"
        meta.write_text(meta.read_text()[:40])
    with pytest.warns(CacheCorruptionWarning, match="evicted and rebuilt"):
        result = _cell(ArtifactCache(tmp_path), "onnx:fp32", setting)
    assert result.status == "passed", result.message
    assert result.cache.startswith("rebuilt (the cached entry was evicted: "), result.cache


def test_a_conversion_worker_killed_from_outside_is_not_cached(tmp_path: Path, setting, monkeypatch) -> None:
    targets, _, model = setting
    target = targets.get("tflite:fp32[litert-torch]")
    if target.backend_spec.python() is None:
        pytest.skip(target.backend_spec.unavailable_reason())
    killed: list[int] = []
    armed: set[int] = set()
    call, read_line = Worker.call, Worker._read_line

    def arm_on_the_conversion_request(worker: Worker, op: str, *args, **kwargs):
        if op == "litert_torch_convert" and not killed:  # the warm worker may carry another name (pool key)
            armed.add(id(worker))
        return call(worker, op, *args, **kwargs)

    def kill_once_the_request_is_sent(worker: Worker, timeout: float) -> str | None:
        """SIGKILL the converter right after the conversion request was written to it (a warm worker converts a
        small model in under a second, so a timer could miss it)."""
        if id(worker) in armed:
            armed.discard(id(worker))
            killed.append(worker.pid)
            os.kill(worker.pid, signal.SIGKILL)
        return read_line(worker, timeout)

    monkeypatch.setattr(Worker, "call", arm_on_the_conversion_request)
    monkeypatch.setattr(Worker, "_read_line", kill_once_the_request_is_sent)
    with pytest.raises(StageError, match="killed by signal SIGKILL") as crash:
        export_artifact(target, SPEC, model, ArtifactCache(tmp_path), targets, ModelIdentities())
    assert killed and isinstance(crash.value.__cause__, WorkerCrash) and crash.value.__cause__.transient
    again = export_artifact(target, SPEC, model, ArtifactCache(tmp_path), targets, ModelIdentities())
    assert again.converted_now and again.path.stat().st_size > 0  # converted again, not a replayed failure


PARENT = textwrap.dedent('''
    import sys, time
    from pathlib import Path
    from export_harness.converters.tf.isolation import Worker
    worker = Worker(sys.executable, sys.argv[1], name="sleeper")
    worker.start()
    print(worker.pid, flush=True)
    worker.call("sleep", timeout=600, seconds=120)
''')

SLEEPER = textwrap.dedent('''
    import time
    from export_harness.converters.tf.worker_loop import serve
    serve({"sleep": lambda seconds: time.sleep(seconds) or {}})
''')


def test_workers_die_with_their_parent(tmp_path: Path) -> None:
    (tmp_path / "sleeper.py").write_text(SLEEPER)
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(tmp_path / "sleeper.py")], stdout=subprocess.PIPE,
                              text=True, cwd=Path(__file__).resolve().parents[1])
    worker_pid = int(parent.stdout.readline())
    time.sleep(1.0)
    assert _running(worker_pid)
    parent.send_signal(signal.SIGKILL)  # pytest killed mid-conversion
    parent.wait()
    deadline = time.monotonic() + 10
    while _running(worker_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running(worker_pid), f"worker {worker_pid} outlived its killed parent"


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


class Encoder(nn.Module):
    """A user's encoder whose output is named like one of its submodules."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(100, 8)
        self.head = nn.Linear(8, 8)

    def forward(self, tokens):
        return self.head(self.embedding(tokens))


def test_an_output_name_colliding_with_a_submodule_gets_a_hint(tmp_path: Path, setting) -> None:
    targets, thresholds, _ = setting
    spec = ModelSpec(name="collide", family="user", factory=Encoder,
                     inputs=(InputSpec("tokens", ("B", 6), "int64", "NT",
                                       lambda rng, b: rng.integers(0, 100, size=(b, 6))),),
                     outputs=(OutputSpec("embedding", ("B", 6, 8)),))
    with pytest.raises(CellFailure) as failed:
        run_cell(spec, targets.get("onnx:fp32[dynamo]"), spec.build(), cache=ArtifactCache(tmp_path),
                 thresholds=thresholds, targets=targets, localise=False)
    message = failed.value.result.message
    if "used as output name" not in message:
        pytest.skip(f"this exporter no longer rejects the collision: {message[:200]}")
    assert "hint: the output name 'embedding' collides with an internal value" in message, message


@pytest.mark.parametrize("content", [b"\x00garbage, not a checkpoint", b""], ids=["garbage", "empty"])
def test_a_bad_weights_file_is_one_line_per_cell_and_the_summary_is_printed(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(content)
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly", "-q",
                          f"--harness-weights=tiny_ladeda={bad}", "suites/test_matrix.py", "-k",
                          "tiny_ladeda-onnx:fp32 or tiny_ladeda-onnx:fp16"],
                         cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=900)
    out = run.stdout + run.stderr
    assert run.returncode == pytest.ExitCode.TESTS_FAILED, out[-3000:]
    for cell in ("tiny_ladeda-onnx:fp16", "tiny_ladeda-onnx:fp32"):  # each failure is one line
        body = out.split(f" test_cell[{cell}] ", 1)[1].split("\n", 1)[1].split("\n")
        assert body[0].startswith(f"[weights] {cell}: --harness-weights tiny_ladeda: {bad}: "), out[-3000:]
        assert body[1].startswith(("_", "=")), out[-3000:]
    assert "Traceback" not in out and "INTERNALERROR" not in out, out[-3000:]
    assert "export conformance matrix" in out, out[-3000:]  # the summary table is still printed


def test_an_unusable_cache_directory_is_one_line(tmp_path: Path) -> None:
    from export_harness.converters.cache import ArtifactCache, CacheError

    occupied = tmp_path / "cache"
    occupied.write_text("a file where the cache should be")
    with pytest.raises(CacheError, match=r"artifact cache .*/cache: cannot be used \(.*\); point --harness-cache"):
        ArtifactCache(occupied)


@pytest.mark.parametrize("name", ["a/b", "../up", "with space", "glob*", "x[1]", "", "-lead",
                                  "x</script><script>alert(1)</script>"])
def test_a_model_name_that_cannot_name_files_and_ids_is_refused(name: str) -> None:
    import dataclasses

    from export_harness.models.registry import Registry, default_registry

    spec = dataclasses.replace(default_registry(zoo=["tiny_ladeda"]).get("tiny_ladeda"), name=name)
    with pytest.raises(ValueError, match=r"model name .*: use letters, digits, '_', '-' and '\.' only"):
        Registry().register(spec)


def test_a_full_disk_while_saving_torchscript_raises_instead_of_aborting(tmp_path: Path, monkeypatch) -> None:
    """torch.jit.save's C++ writer aborts the process on ENOSPC (issue: exit 134, no report); the harness saves into
    memory and writes with Python, whose OSError the cache reports without recording it as the cell's failure."""
    import errno

    import torch

    from export_harness.converters.exporters.torchscript import save_script_module

    module = torch.jit.script(torch.nn.Linear(2, 2))

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(OSError, match="No space left on device"):
        save_script_module(module, tmp_path / "model.pt")


@contextlib.contextmanager
def _no_eviction() -> Iterator[None]:
    """A block in which an eviction (a CacheCorruptionWarning) fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheCorruptionWarning)
        yield


def _bundle_files(work: Path, payload: bytes) -> dict[str, object]:
    """A stand-in for a converter's SavedModel bundle: a SavedModel directory and one .tflite per precision."""
    (work / "saved_model").mkdir()
    (work / "saved_model" / "saved_model.pb").write_bytes(b"graph")
    (work / "model_float16.tflite").write_bytes(payload)
    return {"main": "saved_model", "tflite": {"fp16": "model_float16.tflite"}}


def _flip_in_place(path: Path) -> None:
    """Damage a file without replacing it (same inode), as a disk error or a stray in-place write would."""
    with open(path, "r+b") as fh:
        fh.seek(100)
        byte = fh.read(1)
        fh.seek(100)
        fh.write(bytes([byte[0] ^ 0xFF]))


def test_entries_never_share_inodes_so_damage_to_one_stays_in_it(tmp_path: Path, setting) -> None:
    """The onnx2tf / onnx-tf .tflite targets hard-link their file out of the bundle entry (BundleFileTarget.convert);
    the cache gives the published entry its own copy, so damaging the bundle leaves the .tflite entry intact."""
    from export_harness.converters.cache import CONTENT
    from export_harness.converters.tf.tflite import BundleFileTarget

    targets, _, _ = setting
    target = targets.get("tflite:fp16[onnx2tf]")
    assert isinstance(target, BundleFileTarget)
    payload = np.random.default_rng(0).bytes(8192)
    cache = ArtifactCache(tmp_path)
    bundle = cache.get_or_create("b" * 64, target.bundle, lambda work: _bundle_files(work, payload))
    links_in_workdir: list[int] = []

    def convert(work: Path) -> dict[str, object]:
        meta = target.convert(SPEC, None, work, {target.bundle: bundle})
        links_in_workdir.append((work / "model.tflite").stat().st_nlink)
        return meta

    sources = {target.bundle: bundle.meta[CONTENT]}
    derived = cache.get_or_create("d" * 64, target.name, convert, sources=sources)
    bundle_file = bundle.directory / "model_float16.tflite"
    assert links_in_workdir == [2], "the target no longer hard-links: this test no longer exercises the invariant"
    assert derived.path.stat().st_ino != bundle_file.stat().st_ino
    assert derived.path.stat().st_nlink == bundle_file.stat().st_nlink == 1
    assert derived.path.read_bytes() == payload

    _flip_in_place(bundle_file)
    later = ArtifactCache(tmp_path)  # the next session
    with _no_eviction():  # the .tflite entry is not evicted: it verifies
        served = later.get_or_create("d" * 64, target.name, lambda work: pytest.fail("re-converted"), sources=sources)
    assert not served.converted_now and served.path.read_bytes() == payload
    with pytest.warns(CacheCorruptionWarning, match=r"tf:savedmodel\[onnx2tf\] entry .* evicted and rebuilt"):
        rebuilt = later.get_or_create("b" * 64, target.bundle, lambda work: _bundle_files(work, payload))
    assert rebuilt.converted_now and (rebuilt.directory / "model_float16.tflite").read_bytes() == payload


def test_an_entry_found_sharing_an_inode_is_separated_when_served(tmp_path: Path) -> None:
    """An entry published before the rule (its file a hard link to another entry's) is given its own copy, atomically,
    the first time it is served; the copy keeps size and mtime, and no work directory is left."""
    from export_harness.converters.cache import own_copy

    payload = np.random.default_rng(1).bytes(4096)
    cache = ArtifactCache(tmp_path)

    def produce(work: Path) -> dict[str, object]:
        (work / "model.tflite").write_bytes(payload)
        return {"main": "model.tflite"}

    first = cache.get_or_create("a" * 64, "first", produce)
    second = cache.get_or_create("c" * 64, "second", produce)
    os.link(first.path, second.path.with_name("linked"))
    os.replace(second.path.with_name("linked"), second.path)  # as an older harness published it
    assert first.path.stat().st_ino == second.path.stat().st_ino
    mtime = second.path.stat().st_mtime_ns

    served = ArtifactCache(tmp_path).lookup("c" * 64, "second")
    assert served is not None and served.path.read_bytes() == payload
    assert served.path.stat().st_ino != first.path.stat().st_ino
    assert served.path.stat().st_nlink == first.path.stat().st_nlink == 1
    assert served.path.stat().st_mtime_ns == mtime
    assert not list((tmp_path / "tmp").iterdir())
    _flip_in_place(first.path)
    with _no_eviction():
        assert ArtifactCache(tmp_path).lookup("c" * 64, "second") is not None  # still verifies
    assert ArtifactCache(tmp_path).lookup("a" * 64, "first") is None  # the damaged one is not served

    lone = tmp_path / "lone.bin"
    lone.write_bytes(b"x" * 10)
    inode = lone.stat().st_ino
    os.link(lone, tmp_path / "other-name")
    own_copy(lone)
    assert lone.stat().st_ino != inode and lone.read_bytes() == b"x" * 10 and lone.stat().st_nlink == 1



SOAK_CELLS = "tiny_ladeda-onnx:fp32 or tiny_ladeda-onnx:int8-dynamic"
"""Two conversions of the smallest smoke model: enough for a kill to land in one, cheap enough for CI."""


@pytest.mark.slow  # four pytest sessions (xdist on): about a minute
def test_a_killed_run_leaves_no_process_no_work_dir_and_the_next_run_agrees(tmp_path: Path, pytestconfig) -> None:
    """One round of ``python -m suites.soak``: a run SIGKILLed, a run SIGINTed (each 0-1 s after its first conversion
    started, the pytest main process only), then a clean run on the same cache; a reference run never interrupted on
    its own cache. Within 2 s of the SIGKILL, and of the main process's exit after the SIGINT, no process carrying the
    runs' token is left; after the clean run no work directory is; the clean run's verdicts equal the reference's."""
    from export_harness.plugin.project import cache_dir
    from suites import soak

    record = soak.soak(tmp_path / "cache", runs=2, seed=24, reference_cache=tmp_path / "reference", workers=2,
                       select=SOAK_CELLS, kill_window=(0.0, 1.0), on_conversion=True,
                       inputs_from=cache_dir(pytestconfig).resolve(), grace=20.0, timeout=600.0,
                       out_dir=tmp_path / "soak")
    summary = soak.table(record)
    killed, interrupted = record["killed"]
    assert (killed["signal"], interrupted["signal"]) == ("SIGKILL", "SIGINT")
    assert killed["killed_at"] is not None and interrupted["killed_at"] is not None, summary  # neither ended first
    assert record["reference"]["exit_code"] == record["clean"]["exit_code"] == 0, summary
    assert record["verdicts"]["verdicts_equal"], record["verdicts"]["differences"]
    assert record["verdicts"]["cells_clean"] > 0, summary
    assert record["clean"]["work_dirs_left"] == [] and record["clean"]["runtime_dirs_left"] == [], summary
    assert all(not r["force_killed"] for r in (killed, interrupted)), summary  # all gone within the grace
    assert killed["processes_left"]["2.0"] == 0, summary  # SIGKILL: the main process is gone at once
    # SIGINT: the main process writes its summary first (seconds on a loaded box); what it started dies with it
    assert interrupted["outlived_main"] is not None and interrupted["outlived_main"] <= 2.0, \
        f"{summary}\n{json.dumps(interrupted, indent=1)}"


def test_the_soak_compares_messages_of_caches_whose_paths_share_a_prefix() -> None:
    """The full soak's caches are DIR and DIR-reference: a failing cell's "saved to <cache>/failures/..." must read
    the same from both (13 false differences in the first full soak after the SIGINT fix)."""
    from suites import soak

    caches = (Path("/x/cache"), Path("/x/cache-reference"))
    assert soak._normalise("saved to /x/cache-reference/failures/a", caches) == \
        soak._normalise("saved to /x/cache/failures/a", caches) == "saved to <cache>/failures/a"


def test_the_soak_page_is_generated_from_the_committed_soak() -> None:
    """docs/results/soak.md is what ``--render`` makes of docs/results/soak.json (no hand-edited number)."""
    from suites import soak

    root = Path(__file__).resolve().parents[1]
    record = json.loads((root / "docs" / "results" / "soak.json").read_text())
    command = "python -m suites.soak --render docs/results/soak.json --markdown docs/results/soak.md"
    assert (root / "docs" / "results" / "soak.md").read_text() == soak.markdown(record, command)
    assert record["ok"] and all(record["checks"].values())

PATH_ERRORS = {
    "cache-is-a-file": ("--harness-cache={file}", "artifact cache {file}: cannot be used"),
    "weights-of-an-unknown-model": ("--harness-weights=nosuch={file}", "--harness-weights: unknown model 'nosuch'"),
    "weights-file-is-a-directory": ("--harness-weights=tiny_ladeda={dir}", "is a directory"),
    "weights-file-missing": ("--harness-weights=tiny_ladeda={dir}/none.pt", "does not exist"),
}
"""Issue 24 item 10: a path option that cannot be used, and the one line that must say so."""


@pytest.mark.parametrize("case", list(PATH_ERRORS))
def test_a_path_option_that_cannot_be_used_is_one_line(case: str, tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("not a directory, not weights")
    option, expected = (text.format(file=tmp_path / "a_file", dir=tmp_path) for text in PATH_ERRORS[case])
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly", "-q", "--co",
                          option, "suites/test_matrix.py", "-k", "tiny_ladeda-onnx:fp32"],
                         cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300)
    out = run.stdout + run.stderr
    assert run.returncode not in (0, 5), out[-3000:]
    assert expected in out, out[-3000:]
    assert "Traceback" not in out and "_pytest/" not in out and "pluggy" not in out, out[-3000:]


@pytest.mark.parametrize("row", [[True] + [0.5] * 15, [0.5] * 15 + [False]], ids=["first", "last"])
def test_serving_rejects_a_boolean_among_numbers(row: list[object]) -> None:
    """docs/serving.md: booleans are rejected, also one among numbers (issue 24 item 9: [true, 0.5, ...] was read as
    [1.0, 0.5, ...]). An all-boolean list is covered in suites/test_serving.py."""
    import json

    from export_harness.converters.serving.contract import BadRequest, Contract, parse_request

    contract = Contract.from_spec(SPEC)
    assert parse_request(json.dumps({"x": [[0.5] * 16]}), contract)["x"].shape == (1, 16)
    with pytest.raises(BadRequest, match="boolean"):
        parse_request(json.dumps({"x": [row]}), contract)
