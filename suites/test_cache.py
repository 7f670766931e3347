"""Self-tests of the content-addressed artifact cache: atomic, single conversion under concurrency, keyed right."""

from __future__ import annotations

import gc
import json
import multiprocessing as mp
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback
import weakref
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from export_harness.converters.cache import CONTENT, ArtifactCache, CacheCorruptionWarning, CachedFailure
from export_harness.converters.registry import builtin_targets
from export_harness.converters.target import ExportError
from export_harness.converters.tf.isolation import WorkerCrash, WorkerTimeout
from export_harness.models import tiny_ladeda
from export_harness.models.weights import state_dict_hash


def _produce_slowly(workdir: Path) -> dict:
    (workdir / "model.bin").write_bytes(b"x" * 1000)
    time.sleep(0.3)
    with open(workdir.parent.parent / "conversions.log", "a") as fh:
        fh.write("converted\n")
    return {"main": "model.bin"}


def _worker(root: str, queue: mp.Queue) -> None:
    art = ArtifactCache(root).get_or_create("ab" * 32, "t", _produce_slowly)
    queue.put((str(art.directory), (art.directory / "model.bin").stat().st_size))


def test_parallel_workers_convert_once_and_never_see_partial_files(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(str(tmp_path), queue)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    results = [queue.get(timeout=5) for _ in procs]
    assert all(p.exitcode == 0 for p in procs)
    assert len({r[0] for r in results}) == 1 and {r[1] for r in results} == {1000}
    assert (tmp_path / "conversions.log").read_text().count("converted") == 1
    assert list((tmp_path / "tmp").iterdir()) == []


def test_second_lookup_is_a_hit_with_metadata(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)
    first = cache.get_or_create("cd" * 32, "t", lambda d: (d / "a.txt").write_text("hi") and {"main": "a.txt"})
    second = cache.get_or_create("cd" * 32, "t", lambda d: pytest.fail("converted twice"))
    assert first.converted_now and not second.converted_now
    assert second.meta["size_bytes"] == 2 and second.meta["target"] == "t" and "convert_seconds" in second.meta
    assert (cache.stats.conversions, cache.stats.hits) == (1, 1)


def test_failed_conversion_leaves_nothing_and_deterministic_failures_are_replayed(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)

    def broken(workdir: Path) -> dict:
        (workdir / "half.onnx").write_bytes(b"partial")
        raise ExportError("Unsqueeze version 13 is not implemented")

    with pytest.raises(ExportError):
        cache.get_or_create("ef" * 32, "t", broken, cacheable_error=lambda e: isinstance(e, ExportError))
    assert not cache.entry_dir("ef" * 32).exists() and list((tmp_path / "tmp").iterdir()) == []
    with pytest.raises(CachedFailure, match="Unsqueeze version 13"):
        cache.get_or_create("ef" * 32, "t", broken)
    retry = ArtifactCache(tmp_path, retry_failed=True)
    art = retry.get_or_create("ef" * 32, "t", lambda d: (d / "ok").write_text("1") and {"main": "ok"})
    assert art.converted_now
    assert ArtifactCache(tmp_path).lookup("ef" * 32, "t") is not None  # success replaces the failure record


def test_unexpected_errors_are_not_cached(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)
    with pytest.raises(MemoryError):
        cache.get_or_create("12" * 32, "t", lambda d: (_ for _ in ()).throw(MemoryError()))
    assert cache.lookup("12" * 32, "t") is None


class _Activations:
    """Stands in for what a calibrator collects (sign_transformer's: 3.3 GB)."""


def test_a_failed_conversion_does_not_keep_its_locals_alive(tmp_path: Path) -> None:
    """The raised error still formats with its cause, but the failed frames' locals are gone: pytest keeps the last
    failure, so a worker converting failing cells otherwise held every calibration it had collected (OOM at 11 GB)."""
    held: list[weakref.ref] = []

    def calibrate(activations: _Activations) -> None:
        raise ValueError("Too many bins for data range")

    def quantize(workdir: Path) -> dict:
        activations = _Activations()
        held.append(weakref.ref(activations))
        try:
            calibrate(activations)
        except ValueError as exc:
            raise ExportError("onnx:int8-static failed") from exc
        return {}

    with pytest.raises(ExportError) as info:
        ArtifactCache(tmp_path).get_or_create("aa" * 32, "t", quantize,
                                              cacheable_error=lambda e: isinstance(e, ExportError))
    gc.collect()
    assert held[0]() is None
    text = "".join(traceback.format_exception(info.value))
    assert "Too many bins for data range" in text and "in calibrate" in text


def test_cache_key_tracks_weights_target_and_versions() -> None:
    spec = next(s for s in tiny_ladeda.specs() if s.name == "tiny_ladeda")
    model = spec.build()
    by_name = {t.name: t for t in builtin_targets()}
    trace, script, onnx_legacy, onnx_dynamo = (
        by_name[n] for n in ("torchscript:trace", "torchscript:script", "onnx:fp32", "onnx:fp32[dynamo]")
    )
    h = state_dict_hash(model)
    keys = {t.cache_key(spec, h, {}) for t in (trace, script, onnx_legacy, onnx_dynamo)}
    assert len(keys) == 4
    assert trace.cache_key(spec, h, {}) == trace.cache_key(spec, h, {})
    with torch.no_grad():
        model.fc.bias.add_(1e-3)
    assert trace.cache_key(spec, state_dict_hash(model), {}) != trace.cache_key(spec, h, {})
    onnx_legacy.opset = 16
    try:
        assert onnx_legacy.cache_key(spec, h, {}) not in keys
    finally:
        onnx_legacy.opset = 17


def test_prune_removes_unused_entries_and_leftover_work_dirs(tmp_path: Path) -> None:
    import os

    from export_harness.converters.cache import prune

    def produce(workdir: Path) -> dict:
        (workdir / "m.bin").write_bytes(b"1")
        return {"main": "m.bin"}

    cache = ArtifactCache(tmp_path)
    old = cache.get_or_create("aa" * 32, "t", produce)
    cache.get_or_create("bb" * 32, "t", produce)
    leftover = tmp_path / "tmp" / "killed-conversion"
    leftover.mkdir()
    month_ago = time.time() - 30 * 86400
    os.utime(old.directory / "meta.json", (month_ago, month_ago))
    os.utime(leftover, (month_ago, month_ago))
    assert ArtifactCache(tmp_path).lookup("bb" * 32, "t") is not None  # a hit marks the entry as used
    removed = prune(tmp_path, unused_days=14)
    assert removed["artifacts"] == 1 and removed["tmp"] == 1
    assert not old.directory.exists() and not leftover.exists()
    assert ArtifactCache(tmp_path).lookup("bb" * 32, "t") is not None


def test_prune_ages_out_divergence_results_and_reproducer_venvs(tmp_path: Path) -> None:
    """A reproducer venv of the TF stack is 2.3 GB and every finder code change keys new results: both age out."""
    import os

    from export_harness.converters.cache import prune

    month_ago = time.time() - 30 * 86400
    divergence = tmp_path / "divergence"
    for name in ("old", "new"):
        (divergence / name / "reproducer").mkdir(parents=True)
        (divergence / name / "result.json").write_text("{}")
        (divergence / "venvs" / f"{name}-venv" / "bin").mkdir(parents=True)
        (divergence / "venvs" / f"{name}-venv" / ".complete").write_text("pins")
    (divergence / "venvs" / "killed-build").mkdir()  # no marker: a build that stopped
    os.utime(divergence / "old" / "result.json", (month_ago, month_ago))
    os.utime(divergence / "venvs" / "old-venv" / ".complete", (month_ago, month_ago))
    os.utime(divergence / "venvs" / "killed-build", (time.time() - 2 * 86400,) * 2)
    removed = prune(tmp_path, unused_days=14)
    assert removed["divergence"] == 1 and removed["venvs"] == 2
    assert sorted(p.name for p in divergence.iterdir()) == ["new", "venvs"]
    assert sorted(p.name for p in (divergence / "venvs").iterdir()) == ["new-venv"]


# ------------------------------------------------------------------ integrity: damage is detected and healed

KEY = "c0" * 32


def _produce(text: str = "weights") -> Callable[[Path], dict]:
    def produce(workdir: Path) -> dict:
        (workdir / "model.bin").write_text(text)
        (workdir / "extra.json").write_text("{}")
        return {"main": "model.bin"}
    return produce


@pytest.mark.parametrize(("damage", "reason"), [
    (lambda e: (e / "model.bin").write_text("weightz"), "content sha256 .* differs from the .* recorded"),
    (lambda e: (e / "model.bin").write_text("weigh"), "content sha256 .* differs"),
    (lambda e: (e / "extra.json").unlink(), "content sha256 .* differs"),
    (lambda e: (e / "model.bin").unlink(), "model.bin: missing"),
    (lambda e: (e / "meta.json").write_text('{"main": "model.b'), "unreadable meta.json"),
    (lambda e: (e / "meta.json").write_text("[]"), "not an artifact record"),
])
def test_a_damaged_entry_is_evicted_rebuilt_and_reported(tmp_path: Path, damage, reason: str) -> None:
    first = ArtifactCache(tmp_path).get_or_create(KEY, "t", _produce())
    damage(first.directory)
    cache = ArtifactCache(tmp_path)  # a later session
    with pytest.warns(CacheCorruptionWarning, match=f"t entry {KEY[:12]} evicted and rebuilt: .*{reason}"):
        again = cache.get_or_create(KEY, "t", _produce())
    assert again.converted_now and re.search(reason, again.healed)
    assert (again.path.read_text(), cache.stats.evicted) == ("weights", 1)
    assert ArtifactCache(tmp_path).get_or_create(KEY, "t", lambda d: pytest.fail("healed entry rebuilt")).meta


def test_a_sidecar_being_written_by_another_worker_is_not_damage(tmp_path: Path) -> None:
    """Between a worker's temporary write of a hit's sidecar (or meta.json) and its rename, another worker verifies
    the entry: the temporary is no content change. (CI saw the entry evicted under the writer, whose rename failed.)"""
    entry = ArtifactCache(tmp_path).get_or_create(KEY, "t", _produce()).directory
    (entry / ".artifact.json.1pe39q9v.json").write_text("{half")
    (entry / ".meta.json.x2y3z4w5.json").write_text("{half")
    hit = ArtifactCache(tmp_path).lookup(KEY, "t")  # a later session: verifies the content hash
    assert hit is not None and hit.directory == entry and not hit.healed
    (entry / ".model.bin.q1w2e3r4.bin").write_text("x")  # a content file's name is no excuse
    with pytest.warns(CacheCorruptionWarning, match="content sha256"):
        assert ArtifactCache(tmp_path).get_or_create(KEY, "t", _produce()).converted_now


def test_verification_runs_once_per_process_while_the_files_are_unchanged(tmp_path: Path) -> None:
    ArtifactCache(tmp_path).get_or_create(KEY, "t", _produce())
    cache = ArtifactCache(tmp_path)
    for _ in range(3):
        cache.lookup(KEY, "t")
    assert cache.stats.verified_bytes == len("weights") + len("{}")


@pytest.mark.parametrize("field", [CONTENT, "sources"])
def test_an_entry_without_its_recorded_hashes_is_never_adopted(tmp_path: Path, field: str) -> None:
    """A meta.json without the content hash (or a derived entry without its sources' hashes) cannot be verified:
    its content, perhaps tampered with, is rebuilt, never adopted (a tampered onnx:fp32 once was, and four derived
    artifacts were built from it)."""
    sources = {"src": "a" * 64}
    art = ArtifactCache(tmp_path).get_or_create(KEY, "t", _produce(), sources=sources)
    meta = json.loads((art.directory / "meta.json").read_text())
    del meta[field]
    (art.directory / "meta.json").write_text(json.dumps(meta))
    if field == CONTENT:
        art.path.write_text("tampered")
    with pytest.warns(CacheCorruptionWarning, match="no (content sha256|source content) recorded"):
        again = ArtifactCache(tmp_path).get_or_create(KEY, "t", _produce(), sources=sources)
    assert again.path.read_text() == "weights" and again.meta[CONTENT]


@pytest.mark.parametrize("error", [
    ExportError("torch.onnx.export failed: OSError: [Errno 28] No space left on device"),  # as a worker reports it
    OSError(28, "No space left on device"),
    OSError(30, "Read-only file system"),
    OSError(13, "Permission denied"),
    MemoryError(),
])
def test_a_full_disk_or_memory_is_never_a_cached_failure(tmp_path: Path, error: BaseException) -> None:
    cache = ArtifactCache(tmp_path)

    def full(_: Path) -> dict[str, str]:
        try:
            raise error
        except OSError as exc:  # exporters wrap the OS error in their own
            raise ExportError("export failed") from exc

    produce = full if isinstance(error, OSError) else (lambda _: (_ for _ in ()).throw(error))
    with pytest.raises((ExportError, MemoryError)):
        cache.get_or_create(KEY, "t", produce, cacheable_error=lambda exc: True)
    assert not list(tmp_path.glob("??/*.failure.json"))
    assert cache.get_or_create(KEY, "t", _produce(), cacheable_error=lambda exc: True).path.read_text() == "weights"


def test_a_recorded_full_disk_failure_is_not_replayed(tmp_path: Path) -> None:
    """A record written before full disks were known transient heals: the next run converts."""
    cache = ArtifactCache(tmp_path)
    record = cache.entry_dir(KEY).with_name(KEY + ".failure.json")
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"target": "t", "message": "OSError: [Errno 28] No space left on device"}))
    assert cache.get_or_create(KEY, "t", _produce()).path.read_text() == "weights"


def test_a_derived_artifact_built_from_other_source_content_is_rebuilt(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)
    cache.get_or_create(KEY, "derived", _produce("from A"), sources={"src": "a" * 64})
    assert cache.get_or_create(KEY, "derived", lambda d: pytest.fail("rebuilt"), sources={"src": "a" * 64})
    with pytest.warns(CacheCorruptionWarning, match="built from other content of src than the cache holds now"):
        art = cache.get_or_create(KEY, "derived", _produce("from B"), sources={"src": "b" * 64})
    assert art.path.read_text() == "from B" and art.meta["sources"] == {"src": "b" * 64}


def test_a_damaged_failure_record_is_no_evidence(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)
    cache.entry_dir(KEY).parent.mkdir(parents=True)
    cache.entry_dir(KEY).with_name(KEY + ".failure.json").write_text('{"mess')
    assert cache.get_or_create(KEY, "t", _produce()).converted_now


# ----------------------------------------------------------------- transient failures are never cached


class Killed(ExportError):
    transient = True


def _raises(exc: BaseException) -> Callable[[Path], dict]:
    def produce(workdir: Path) -> dict:
        (workdir / "half.bin").write_text("partial")
        raise exc
    return produce


@pytest.mark.parametrize("returncode", [-signal.SIGKILL, -signal.SIGTERM, -signal.SIGINT])
def test_a_worker_killed_from_outside_is_transient(returncode: int) -> None:
    assert WorkerCrash("killed", returncode).transient and WorkerTimeout("slow", -signal.SIGKILL).transient


@pytest.mark.parametrize("returncode", [-signal.SIGSEGV, -signal.SIGABRT, 1])
def test_a_converter_that_crashes_by_itself_is_deterministic(returncode: int) -> None:
    assert not WorkerCrash("crashed", returncode).transient


def _interrupted_export(workdir: Path) -> dict:
    """What Ctrl-C inside torch's dynamo exporter did: the KeyboardInterrupt surfaced as another error."""
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)
    except KeyboardInterrupt:
        pass
    raise ExportError("AttributeError: module 'torch._dynamo' has no attribute 'exc'")


def _cache_deleted(workdir: Path) -> dict:
    shutil.rmtree(workdir.parent.parent)
    raise ExportError(f"{workdir}/model.onnx: No such file or directory")


def _caused_by_interrupt(workdir: Path) -> dict:
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt as exc:
        raise ExportError("export failed") from exc


@pytest.mark.parametrize("produce", [_raises(Killed("killed by signal SIGKILL")), _interrupted_export,
                                     _cache_deleted, _caused_by_interrupt],
                         ids=["worker-killed", "sigint-during-export", "cache-deleted", "interrupt-in-chain"])
def test_transient_failures_are_not_cached(tmp_path: Path, produce) -> None:
    cache = ArtifactCache(tmp_path / "cache")
    with pytest.raises(ExportError):
        cache.get_or_create(KEY, "t", produce, cacheable_error=lambda e: isinstance(e, ExportError))
    again = ArtifactCache(tmp_path / "cache")
    assert again.get_or_create(KEY, "t", _produce()).converted_now  # converted, not a replayed failure
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []  # the partial work dir is gone


def test_work_dirs_of_dead_processes_are_reaped(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    (tmp / f"{'ab' * 8}-{dead.pid}-x1").mkdir()
    (tmp / f"{'ab' * 8}-{os.getppid()}-x2").mkdir()  # a live process (pytest's parent): kept
    (tmp / "old-style").mkdir()
    ArtifactCache(tmp_path)
    assert sorted(p.name for p in tmp.iterdir()) == sorted([f"{'ab' * 8}-{os.getppid()}-x2", "old-style"])



def test_import_roots_of_dead_tensorflow_workers_parents_are_reaped(tmp_path: Path, monkeypatch) -> None:
    """A SIGKILLed run never runs its atexit: its ``harness-import-root-<pid>-*`` stays in the temp dir (38 had piled
    up on the development box). The next session opening a cache removes those of dead processes."""
    import tempfile

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    system_tmp = tmp_path / "system-tmp"
    (system_tmp / f"harness-import-root-{dead.pid}-abc" / "export_harness").mkdir(parents=True)
    (system_tmp / f"harness-import-root-{os.getppid()}-def").mkdir()
    (system_tmp / f"unrelated-{dead.pid}-x").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    ArtifactCache(tmp_path / "cache")
    assert sorted(p.name for p in system_tmp.iterdir()) == sorted(
        [f"harness-import-root-{os.getppid()}-def", f"unrelated-{dead.pid}-x"])

def test_the_cache_directory_ignores_itself_in_git(tmp_path: Path) -> None:
    """``git add -A`` in a project never picks up the cache (it once committed 276 MB), as with .pytest_cache."""
    cache = ArtifactCache(tmp_path / "repo" / ".harness-cache")
    assert (cache.root / ".gitignore").read_text().splitlines()[-1] == "*"
    subprocess.run(["git", "init", "-q", str(tmp_path / "repo")], check=True)
    (cache.root / "ab").mkdir()
    (cache.root / "ab" / "artifact.onnx").write_bytes(b"x")
    status = subprocess.run(["git", "-C", str(tmp_path / "repo"), "status", "--porcelain", "--untracked-files=all"],
                            capture_output=True, text=True, check=True).stdout
    assert status == "", status
    (cache.root / ".gitignore").write_text("# the project's own\n*.onnx\n")
    ArtifactCache(cache.root)  # an existing file is the project's choice: left alone
    assert (cache.root / ".gitignore").read_text().startswith("# the project's own")


def test_converter_code_is_part_of_the_key() -> None:
    """The source of the modules defining a target (and its bases) enters its key: an edit re-converts. Checked by
    module name, so the name must follow the package (it once matched nothing after a rename)."""
    import hashlib

    from export_harness.converters.compression.ort_methods import OrtDynamicInt8Target
    from export_harness.converters.target import CONVERTERS_PACKAGE, _source_hash

    assert CONVERTERS_PACKAGE == "export_harness.converters"
    assert _source_hash(OrtDynamicInt8Target) != hashlib.sha256().hexdigest()[:16]


def test_too_little_free_space_stops_before_the_exporter_runs(tmp_path: Path) -> None:
    """An in-process exporter on a full disk can abort the interpreter (torch.jit.save: Fatal Python error), so the
    cache checks the free space a conversion needs first: a clear error, the exporter never called, nothing recorded."""
    from export_harness.converters.cache import DiskFull
    from export_harness.converters.conformance import conversion_reserve

    cache = ArtifactCache(tmp_path)
    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(DiskFull, match=r"MiB free, converting t needs about \d+ MiB; free space and run again"):
        cache.get_or_create(KEY, "t", lambda d: pytest.fail("the exporter ran"), cacheable_error=lambda e: True,
                            reserve_bytes=lambda: free + (1 << 30))
    assert not list(tmp_path.glob("??/*.failure.json"))
    assert cache.get_or_create(KEY, "t", _produce(), reserve_bytes=lambda: 1).path.read_text() == "weights"
    model = torch.nn.Linear(1000, 1000)  # 4 MB of weights
    assert conversion_reserve(model) == 3 * 4 * (1000 * 1000 + 1000) + (64 << 20)
