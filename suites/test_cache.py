"""Self-tests of the content-addressed artifact cache: atomic, single conversion under concurrency, keyed right."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import pytest
import torch

from converters.cache import ArtifactCache, CachedFailure
from converters.registry import builtin_targets
from converters.target import ExportError
from models import tiny_ladeda
from models.weights import state_dict_hash


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

    from converters.cache import prune

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
