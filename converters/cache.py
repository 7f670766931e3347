"""Content-addressed artifact cache with atomic publication, safe for parallel pytest workers.

An entry is a directory ``<root>/<key[:2]>/<key>/`` holding the artifact files and ``meta.json``. It is built
in a private temporary directory and published with one ``os.rename``, under a per-key file lock, so a
worker never sees a half-written artifact and two workers never convert the same thing twice.
Deterministic conversion failures are cached too (``failure.json``), so an unsupported cell is not
re-attempted on every run; ``retry_failed=True`` ignores them.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.atomic import write_json_atomic


@dataclass
class Artifact:
    """A converted file or directory plus its metadata (target, source hash, versions, size, signature)."""

    target: str
    key: str
    directory: Path
    meta: dict[str, Any]
    converted_now: bool = False

    @property
    def path(self) -> Path:
        """The main file (or directory) of the artifact."""
        return self.directory / self.meta["main"]


class CachedFailure(Exception):
    """A conversion that failed before with the same inputs; the message is the original error."""


@dataclass
class CacheStats:
    conversions: int = 0
    hits: int = 0
    failures_replayed: int = 0


class ArtifactCache:
    """Content-addressed store of artifacts under ``root``."""

    def __init__(self, root: str | Path, retry_failed: bool = False) -> None:
        self.root = Path(root).resolve()
        self.retry_failed = retry_failed
        self.stats = CacheStats()
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        (self.root / "locks").mkdir(parents=True, exist_ok=True)

    def entry_dir(self, key: str) -> Path:
        return self.root / key[:2] / key

    def lookup(self, key: str, target: str) -> Artifact | None:
        """The published artifact for ``key``, or None. Raises CachedFailure for a recorded failure."""
        entry = self.entry_dir(key)
        meta_file = entry / "meta.json"
        if meta_file.is_file():
            artifact = Artifact(target=target, key=key, directory=entry, meta=json.loads(meta_file.read_text()))
            with contextlib.suppress(OSError):
                os.utime(meta_file)  # last use, for ``prune`` (a cache kept across CI runs must not grow forever)
            return artifact
        failure = entry.with_name(key + ".failure.json")
        if failure.is_file() and not self.retry_failed:
            record = json.loads(failure.read_text())
            with contextlib.suppress(OSError):
                os.utime(failure)
            self.stats.failures_replayed += 1
            raise CachedFailure(record["message"])
        return None

    def get_or_create(self, key: str, target: str, produce: Callable[[Path], dict[str, Any]],
                      cacheable_error: Callable[[BaseException], bool] = lambda exc: False) -> Artifact:
        """Return the artifact for ``key``, running ``produce(tmpdir) -> meta`` once if it is missing."""
        found = self.lookup(key, target)
        if found is not None:
            self.stats.hits += 1
            return found
        with self._lock(key):
            found = self.lookup(key, target)  # another worker may have published it meanwhile
            if found is not None:
                self.stats.hits += 1
                return found
            tmp = Path(tempfile.mkdtemp(prefix=key[:16] + "-", dir=self.root / "tmp"))
            start = time.perf_counter()
            try:
                self.stats.conversions += 1
                meta = produce(tmp)
            except BaseException as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                if isinstance(exc, Exception) and cacheable_error(exc):
                    self._record_failure(key, target, exc)
                raise
            meta = {**meta, "key": key, "target": target, "convert_seconds": round(time.perf_counter() - start, 3),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            meta["size_bytes"] = _tree_size(tmp / meta["main"])
            write_json_atomic(tmp / "meta.json", meta, indent=2, sort_keys=True)
            entry = self.entry_dir(key)
            entry.parent.mkdir(parents=True, exist_ok=True)
            if entry.exists():  # a stale, unpublished leftover (no meta.json): replace it
                shutil.rmtree(entry)
            os.rename(tmp, entry)
            failure = entry.with_name(key + ".failure.json")
            failure.unlink(missing_ok=True)
        return Artifact(target=target, key=key, directory=entry, meta=meta, converted_now=True)

    def _record_failure(self, key: str, target: str, exc: BaseException) -> None:
        path = self.entry_dir(key).with_name(key + ".failure.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, {"target": target, "message": str(exc), "type": type(exc).__name__},
                          indent=2, sort_keys=True)

    @contextmanager
    def _lock(self, key: str) -> Iterator[None]:
        with open(self.root / "locks" / f"{key}.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def _tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def artifact_sha256(path: str | Path) -> str:
    """Content hash of an artifact file, or of every file under an artifact directory (names included)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as fh:
            for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def prune(root: str | Path, unused_days: float, now: float | None = None) -> dict[str, int]:
    """Remove entries not used for ``unused_days`` (published artifacts by their last hit, recorded failures by their
    date), and work directories of conversions that ended more than a day ago (a killed process leaves them behind).
    Trained weights and data (``weights/``, ``data/``) stay. Returns counts of what was removed."""
    root, now = Path(root), time.time() if now is None else now
    cutoff, removed = now - unused_days * 86400, {"artifacts": 0, "failures": 0, "tmp": 0, "bytes": 0}
    for meta in root.glob("??/*/meta.json"):
        if meta.stat().st_mtime < cutoff:
            removed["bytes"] += _tree_size(meta.parent)
            shutil.rmtree(meta.parent, ignore_errors=True)
            removed["artifacts"] += 1
    for failure in root.glob("??/*.failure.json"):
        if failure.stat().st_mtime < cutoff:
            failure.unlink(missing_ok=True)
            removed["failures"] += 1
    for work in (root / "tmp").glob("*"):
        if work.stat().st_mtime < now - 86400:
            removed["bytes"] += _tree_size(work)
            shutil.rmtree(work, ignore_errors=True)
            removed["tmp"] += 1
    return removed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m converters.cache", description="artifact cache maintenance")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prune", help="remove entries unused for N days and leftover work directories")
    p.add_argument("root", help="the cache directory (--harness-cache / $HARNESS_CACHE)")
    p.add_argument("--unused-days", type=float, default=14.0)
    args = parser.parse_args(argv)
    if not Path(args.root).is_dir():
        print(f"error: {args.root}: no such cache directory", file=sys.stderr)
        return 2
    removed = prune(args.root, args.unused_days)
    print(f"pruned {args.root}: {removed['artifacts']} artifacts, {removed['failures']} failure records, "
          f"{removed['tmp']} work dirs ({removed['bytes'] / 2**20:.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
