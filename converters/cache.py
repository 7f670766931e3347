"""Content-addressed artifact cache with atomic publication, safe for parallel pytest workers.

An entry is a directory ``<root>/<key[:2]>/<key>/`` holding the artifact files and ``meta.json``. It is built
in a private temporary directory and published with one ``os.rename``, under a per-key file lock, so a
worker never sees a half-written artifact and two workers never convert the same thing twice.
Deterministic conversion failures are cached too (``failure.json``), so an unsupported cell is not
re-attempted on every run; ``retry_failed=True`` ignores them. Transient failures never are: a worker killed by
an outside signal or a timeout, an interrupt (Ctrl-C) during the conversion, a cache directory deleted under it.

Integrity: ``meta.json`` records the sha256 of the entry's files at publication, and every hit verifies it
(once per process while the files' size and mtime stay the same). A corrupt entry (content changed, a file
missing, an unreadable ``meta.json``) is evicted and rebuilt, with a :class:`CacheCorruptionWarning` saying so.
A derived artifact (``onnx:fp16`` of ``onnx:fp32``) also records the content hashes of the artifacts it was
built from (``sources``): built from other content, it is stale and rebuilt.

Entries never share inodes: a target may hard-link a file of another entry into its work directory (the TFLite
files taken from their SavedModel bundle do), so every file with more than one link is replaced by its own copy
(a reflink where the filesystem can, else a plain copy) before the entry's content is hashed and published, and an
entry served with shared inodes (one published before this rule) is separated the same way, atomically. Damage to
one entry then never reaches another.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from export_harness.converters.util.files import write_json_atomic
from export_harness.converters.util.processes import pid_alive


@dataclass
class Artifact:
    """A converted file or directory plus its metadata (target, source hash, versions, size, signature)."""

    target: str
    key: str
    directory: Path
    meta: dict[str, Any]
    converted_now: bool = False
    healed: str = ""
    """Why a corrupt or stale entry for this key was evicted before this artifact was rebuilt ("" if none was)."""

    @property
    def path(self) -> Path:
        """The main file (or directory) of the artifact."""
        return self.directory / self.meta["main"]


class CacheError(Exception):
    """The cache directory cannot be used (a file in its place, no permission, a read-only disk): one line."""


class DiskFull(OSError):
    """Too little free space on the cache's disk to convert: raised before the exporter runs (some abort the
    interpreter on a full disk), never recorded as the cell's failure."""


class CachedFailure(Exception):
    """A conversion that failed before with the same inputs; the message is the original error."""


class CacheCorruptionWarning(UserWarning):
    """A cache entry failed verification and was evicted (it is rebuilt from its inputs)."""


@dataclass
class CacheStats:
    conversions: int = 0
    hits: int = 0
    failures_replayed: int = 0
    evicted: int = 0
    verified_bytes: int = 0
    keys: dict[str, set[str]] = field(default_factory=lambda: {k: set() for k in ACCOUNT})
    """Entry keys by what happened to them in this process (:data:`ACCOUNT`), for the session's account."""

    def account(self) -> dict[str, list[str]]:
        """The keys by event, JSON-ready (pytest-xdist workers send it to the controller)."""
        return {k: sorted(v) for k, v in self.keys.items()}


ACCOUNT = ("converted", "failed", "rebuilt", "hit", "replayed", "measured", "measurement-hit")
"""What happened to an entry in a session: converted (produced now), failed (its conversion raised), rebuilt (it
was damaged or stale and was produced again), hit (served from the cache), replayed (a recorded failure); and to a
measurement (``export_harness.converters.measurements``): measured (computed now) or measurement-hit (served)."""


def account_line(accounts: Iterable[Mapping[str, Iterable[str]]]) -> str:
    """The session's conversion account over every process's :meth:`CacheStats.account`: each artifact counted once,
    whichever item (matrix, accuracy, latency) or xdist worker touched it, and an artifact converted in this session
    is not also counted as served."""
    keys: dict[str, set[str]] = {k: set() for k in ACCOUNT}
    for account in accounts:
        for k in ACCOUNT:
            keys[k] |= set(account.get(k, ()))
    made = keys["converted"] | keys["failed"]
    served = keys["hit"] - made
    rebuilt = f", {len(keys['rebuilt'])} of them rebuilt after damage" if keys["rebuilt"] else ""
    measured = keys["measured"]
    measurements = (f"; measurements: {len(measured)} computed, {len(keys['measurement-hit'] - measured)} served"
                    if measured or keys["measurement-hit"] else "")
    return (f"conversions performed this run: {len(made)} ({len(keys['failed'])} failed{rebuilt}); served from "
            f"cache: {len(served)} artifacts, {len(keys['replayed'] - made)} known failures{measurements}")


CONTENT = "content_sha256"
"""meta.json key: sha256 of the entry's files (names included), everything but meta.json and the sidecar."""
SIDECAR = "artifact.json"
"""The metadata sidecar beside an entry's artifact (``export_harness.converters.sidecar``): derived from
meta.json and the
spec, rewritten when stale, so, like meta.json, not part of the content hash."""
NOT_CONTENT = ("meta.json", SIDECAR)


GITIGNORE = "# Created by the export conformance harness: its artifact cache never belongs in git.\n*\n"


def ignore_in_git(root: Path) -> None:
    """Write ``root/.gitignore`` ignoring everything in the cache (as ``.pytest_cache`` does), unless one is there."""
    path = root / ".gitignore"
    if not path.exists():
        with contextlib.suppress(OSError):  # a read-only cache still serves artifacts
            tmp = path.with_name(f".gitignore.{os.getpid()}.tmp")
            tmp.write_text(GITIGNORE)
            os.replace(tmp, path)


class ArtifactCache:
    """Content-addressed store of artifacts under ``root``."""

    def __init__(self, root: str | Path, retry_failed: bool = False, remeasure: bool = False) -> None:
        self.root = Path(root).resolve()
        self.retry_failed = retry_failed
        self.stats = CacheStats()
        self.remeasure = remeasure
        """Compute every cached measurement again (``--harness-remeasure``)."""
        self._verified: dict[str, tuple[Any, ...]] = {}
        try:
            (self.root / "tmp").mkdir(parents=True, exist_ok=True)
            (self.root / "locks").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CacheError(f"artifact cache {self.root}: cannot be used ({exc.strerror or exc}: "
                             f"{exc.filename or self.root}); point --harness-cache / $HARNESS_CACHE at a writable "
                             "directory") from None
        ignore_in_git(self.root)
        reap_dead_work_dirs(self.root / "tmp")
        # A killed run's TensorFlow workers leave their import roots (tf/isolation.py) in the system temp dir; atexit
        # never ran. Every session and CLI command opens the cache, so this is where they are reaped.
        reap_dead_work_dirs(Path(tempfile.gettempdir()), "harness-import-root-*")

    def entry_dir(self, key: str) -> Path:
        return self.root / key[:2] / key

    def lookup(self, key: str, target: str, sources: Mapping[str, str] | None = None) -> Artifact | None:
        """The published, verified artifact for ``key``, or None. Raises CachedFailure for a recorded failure.
        ``sources``: content hashes of the artifacts this one is built from; an entry built from others is stale."""
        artifact, _ = self._find(key, target, sources)
        return artifact

    def _find(self, key: str, target: str, sources: Mapping[str, str] | None) -> tuple[Artifact | None, str]:
        """(artifact or None, why an existing entry is unusable or "")."""
        entry = self.entry_dir(key)
        meta_file = entry / "meta.json"
        if meta_file.is_file():
            meta, problem, shared = self._verify(entry, sources)
            if problem:
                return None, problem
            if shared:
                self._unshare_published(shared)
            with contextlib.suppress(OSError):
                os.utime(meta_file)  # last use, for ``prune`` (a cache kept across CI runs must not grow forever)
            return Artifact(target=target, key=key, directory=entry, meta=meta), ""
        failure = entry.with_name(key + ".failure.json")
        if failure.is_file() and not self.retry_failed:
            try:
                message = json.loads(failure.read_text())["message"]
            except (OSError, ValueError, KeyError, TypeError):
                failure.unlink(missing_ok=True)  # a damaged record is no evidence: convert again
                return None, ""
            if RESOURCE_TEXT.search(str(message)):  # recorded before full disks were known transient
                failure.unlink(missing_ok=True)
                return None, ""
            with contextlib.suppress(OSError):
                os.utime(failure)
            self.stats.failures_replayed += 1
            self.stats.keys["replayed"].add(key)
            raise CachedFailure(message)
        return None, ""

    def _verify(self, entry: Path, sources: Mapping[str, str] | None) -> tuple[dict[str, Any], str, list[Path]]:
        """(meta, problem, shared): the entry's meta.json read, its content checked against the recorded hash, and
        its files that share their inode with another name (one stat per file, the one the signature needs)."""
        meta_file = entry / "meta.json"
        try:
            meta = json.loads(meta_file.read_text())
        except (OSError, ValueError) as exc:
            return {}, f"{meta_file}: unreadable meta.json ({type(exc).__name__}: {exc})", []
        if not isinstance(meta, dict) or not isinstance(meta.get("main"), str):
            return {}, f"{meta_file}: not an artifact record (no 'main' file name)", []
        if not (entry / meta["main"]).exists():
            return meta, f"{entry / meta['main']}: missing", []
        signature, shared = _scan(entry)
        if self._verified.get(str(entry)) != signature:
            digest = content_sha256(entry)
            self.stats.verified_bytes += sum(s for _, s, _ in signature)
            recorded = meta.get(CONTENT)
            if recorded is None:  # never adopted: the content as it is now may be a tampered one
                return meta, f"{meta_file}: no content sha256 recorded, the content cannot be verified", []
            if recorded != digest:
                return meta, (f"content sha256 {digest[:12]} differs from the {recorded[:12]} recorded at "
                              "publication"), []
            self._verified[str(entry)] = signature
        if sources is not None:
            built_from = meta.get("sources")
            if built_from is None:  # built from unknown content: never adopted either
                return meta, f"{meta_file}: no source content recorded for an artifact derived from others", []
            if built_from != dict(sources):
                changed = sorted(k for k in set(built_from) | set(sources) if built_from.get(k) != sources.get(k))
                return meta, f"built from other content of {', '.join(changed)} than the cache holds now", []
        return meta, "", shared

    def _unshare_published(self, shared: list[Path]) -> None:
        """Give each ``shared`` file of a verified, published entry its own inode (an entry published before entries
        were kept apart), atomically: copied under a work directory of the cache (reaped if this process is killed
        meanwhile), then renamed over the file. The copy keeps size and mtime: the entry's signature is unchanged."""
        try:
            scratch = Path(tempfile.mkdtemp(prefix=f"unshare-{os.getpid()}-", dir=self.root / "tmp"))
        except OSError:
            return  # a read-only cache still serves (the entry verified)
        try:
            for path in shared:
                with contextlib.suppress(OSError):  # evicted meanwhile by another process: nothing to keep apart
                    own_copy(path, scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _evict(self, key: str, target: str, problem: str) -> None:
        """Move a corrupt entry out of the way (atomically) and delete it; say so."""
        entry = self.entry_dir(key)
        if entry.exists():
            graveyard = Path(tempfile.mkdtemp(prefix=f"evicted-{os.getpid()}-", dir=self.root / "tmp"))
            os.rename(entry, graveyard / "entry")
            shutil.rmtree(graveyard, ignore_errors=True)
        self._verified.pop(str(entry), None)
        self.stats.evicted += 1
        warnings.warn(CacheCorruptionWarning(f"artifact cache: {target} entry {key[:12]} evicted and rebuilt: "
                                             f"{problem}"), stacklevel=3)

    def get_or_create(self, key: str, target: str, produce: Callable[[Path], dict[str, Any]],
                      cacheable_error: Callable[[BaseException], bool] = lambda exc: False,
                      sources: Mapping[str, str] | None = None,
                      reserve_bytes: Callable[[], int] | None = None) -> Artifact:
        """Return the artifact for ``key``, running ``produce(tmpdir) -> meta`` once if it is missing (or corrupt,
        or built from other ``sources`` content). A failure is recorded only when ``cacheable_error`` says it is
        deterministic and nothing transient happened (see :func:`transient`). With less than ``reserve_bytes()`` free
        on the cache's disk (asked only when converting), :class:`DiskFull` is raised before ``produce`` runs (and
        nothing is recorded)."""
        found, _ = self._find(key, target, sources)
        if found is not None:
            return self._hit(key, found)
        with self._lock(key):
            found, problem = self._find(key, target, sources)  # another worker may have published it meanwhile
            if found is not None:
                return self._hit(key, found)
            if problem:
                self._evict(key, target, problem)
            self._check_free_space(key, target, reserve_bytes)
            tmp = Path(tempfile.mkdtemp(prefix=f"{key[:16]}-{os.getpid()}-", dir=self.root / "tmp"))
            start = time.perf_counter()
            try:
                self.stats.conversions += 1
                with _watch_interrupts() as interrupted:
                    meta = produce(tmp)
            except BaseException as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                release_frames(exc)
                self.stats.keys["failed"].add(key)
                if isinstance(exc, Exception) and cacheable_error(exc) and not transient(exc, interrupted, tmp):
                    self._record_failure(key, target, exc)
                raise
            meta = {**meta, "key": key, "target": target, "convert_seconds": round(time.perf_counter() - start, 3),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            try:
                unshare_files(tmp)  # a file hard-linked from another entry gets its own copy before it is hashed
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            meta["size_bytes"] = _tree_size(tmp / meta["main"])
            meta[CONTENT] = content_sha256(tmp)
            if sources is not None:
                meta["sources"] = dict(sources)
            write_json_atomic(tmp / "meta.json", meta, indent=2, sort_keys=True)
            entry = self.entry_dir(key)
            entry.parent.mkdir(parents=True, exist_ok=True)
            if entry.exists():  # a stale, unpublished leftover (no meta.json): replace it
                shutil.rmtree(entry)
            os.rename(tmp, entry)
            self._verified[str(entry)] = _signature(entry)
            self.stats.keys["converted"].add(key)
            if problem:
                self.stats.keys["rebuilt"].add(key)
            failure = entry.with_name(key + ".failure.json")
            failure.unlink(missing_ok=True)
        return Artifact(target=target, key=key, directory=entry, meta=meta, converted_now=True, healed=problem)

    def _hit(self, key: str, artifact: Artifact) -> Artifact:
        self.stats.hits += 1
        self.stats.keys["hit"].add(key)
        return artifact

    def _check_free_space(self, key: str, target: str, reserve_bytes: Callable[[], int] | None) -> None:
        if reserve_bytes is None:
            return
        needed = reserve_bytes()
        try:
            free = shutil.disk_usage(self.root / "tmp").free
        except OSError:
            return
        if free < needed:
            self.stats.keys["failed"].add(key)
            raise DiskFull(errno.ENOSPC, f"artifact cache {self.root}: {free >> 20} MiB free, converting {target} "
                                         f"needs about {needed >> 20} MiB; free space and run again (nothing "
                                         "was recorded: the next run converts)")

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


def release_frames(exc: BaseException) -> None:
    """Drop the local variables of the finished frames in ``exc``'s traceback and of the exceptions it chains to.

    A failed conversion's traceback keeps its frames' locals alive: ORT's histogram calibrator holds every
    activation of every calibration batch (3.3 GB for sign_transformer), and pytest keeps the last failure (and
    reports chain it), so a worker that had converted a few failing cells grew to 11 GB and was OOM-killed on a
    cold run. The traceback still formats (files, lines, source); only the locals go."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        traceback.clear_frames(current.__traceback__)  # skips frames still executing (the caller's)
        stack += [current.__cause__, current.__context__]


RESOURCE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.ENOMEM, errno.EROFS, errno.EACCES})
RESOURCE_TEXT = re.compile(r"No space left on device|Disk quota exceeded|Cannot allocate memory|MemoryError|"
                           r"std::bad_alloc|Read-only file system|\[Errno 13\] Permission denied")
"""A converter in a worker process reports such errors as text only."""


def out_of_resources(exc: BaseException) -> bool:
    """The environment, not the inputs: a full disk or quota, exhausted memory, a read-only or forbidden directory.
    Fixing it must let the next run convert, so it is never cached, even when an exporter wrapped it in its own error
    or a worker passed it on as text."""
    return (isinstance(exc, MemoryError) or (isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS)
            or RESOURCE_TEXT.search(str(exc)) is not None)


def transient(exc: BaseException, interrupted: list[int], workdir: Path) -> bool:
    """Whether a failure says nothing about the inputs, so it must not be cached: the exception says so
    (``exc.transient``: a worker killed by an outside signal, a timeout), an interrupt arrived during the
    conversion (``interrupted``; Ctrl-C inside an exporter can surface as any error), a resource ran out
    (:func:`out_of_resources`: a full disk, no memory), or the cache's work
    directory vanished under it (the cache was deleted mid-run)."""
    chain: BaseException | None = exc
    while chain is not None:
        if getattr(chain, "transient", False) or isinstance(chain, (KeyboardInterrupt, SystemExit)):
            return True
        if out_of_resources(chain):
            return True
        chain = chain.__cause__ or chain.__context__
    return bool(interrupted) or not workdir.parent.is_dir()


@contextmanager
def _watch_interrupts() -> Iterator[list[int]]:
    """Record SIGINT/SIGTERM arriving while the body runs (then pass them on to the previous handler)."""
    seen: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield seen
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def note(signum: int, frame: Any) -> None:
        seen.append(signum)
        handler = previous[signum]
        if callable(handler):
            handler(signum, frame)
        elif handler == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    for sig in previous:
        signal.signal(sig, note)
    try:
        yield seen
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def dead_work_dirs(tmp_root: Path, pattern: str = "*-*-*") -> list[Path]:
    """Work directories named with their creator's pid (``<key16>-<pid>-*``, ``evicted-<pid>-*``,
    ``harness-run-<pid>-*``, ``harness-import-root-<pid>-*``) whose process is gone: what a killed run left."""
    dead = []
    for work in tmp_root.glob(pattern):
        pid = next((int(part) for part in work.name.split("-")[1:] if part.isdigit()), None)
        if pid is not None and pid != os.getpid() and not pid_alive(pid):
            dead.append(work)
    return sorted(dead)


def reap_dead_work_dirs(tmp_root: Path, pattern: str = "*-*-*") -> int:
    """Delete :func:`dead_work_dirs`; returns how many."""
    dead = dead_work_dirs(tmp_root, pattern)
    for work in dead:
        shutil.rmtree(work, ignore_errors=True)
    return len(dead)


FICLONE = 0x40049409
"""Linux ioctl: make ``dst`` share ``src``'s extents copy-on-write (btrfs, XFS with reflink, bcachefs...); a reflink
is a separate inode, so it keeps entries apart at no cost in space."""


def own_copy(path: Path, scratch: Path | None = None) -> None:
    """Replace ``path`` by a copy of itself with its own inode, atomically (written under a temporary name in
    ``scratch``, by default ``path``'s directory, on the same filesystem, then ``os.replace``d onto ``path``). A reflink
    where the filesystem supports one, else a plain copy; mode and timestamps kept."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".unshared", dir=scratch or path.parent)
    tmp = Path(tmp_name)
    try:
        with open(path, "rb") as src, os.fdopen(fd, "wb") as dst:
            try:
                fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
            except OSError:  # no reflink on this filesystem (ext4, tmpfs, overlayfs): copy the bytes
                shutil.copyfileobj(src, dst, 1 << 20)
        shutil.copystat(path, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def unshare_files(directory: Path) -> int:
    """Give every regular file under ``directory`` that shares its inode with another name its own copy (see
    :func:`own_copy`); returns how many were copied. Costs one stat per file when nothing is shared."""
    shared = _scan(directory)[1]
    for path in shared:
        own_copy(path)
    return len(shared)


def _signature(entry: Path) -> tuple[tuple[str, int, int], ...]:
    """(relative path, size, mtime_ns) of every file but meta.json: what a re-verification is skipped on."""
    return _scan(entry)[0]


def _scan(entry: Path) -> tuple[tuple[tuple[str, int, int], ...], list[Path]]:
    """One stat per file: the entry's signature (see :func:`_signature`) and its regular files with ``st_nlink > 1``
    (meta.json and the sidecar included: no file of an entry may share an inode with another entry's)."""
    signature, shared = [], []
    for path in sorted(entry.rglob("*")):
        try:
            st = path.stat()
        except OSError:  # removed meanwhile (an atomic write's temporary, an eviction), a dangling link
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        if st.st_nlink > 1:
            shared.append(path)
        if _is_content(path.name, NOT_CONTENT):
            signature.append((str(path.relative_to(entry)), st.st_size, st.st_mtime_ns))
    return tuple(signature), shared


def _is_content(name: str, exclude: tuple[str, ...]) -> bool:
    """Whether a file counts in an entry's content: not one of ``exclude`` (meta.json, the sidecar), nor the temporary
    of an atomic write of one (``.artifact.json.<random>.json``, see export_harness.converters.util.files): another
    worker re-writing a hit's sidecar must not look like tampering (the entry would be evicted under the writer, whose
    rename then fails)."""
    return name not in exclude and not name.startswith(tuple(f".{n}." for n in exclude))


def content_sha256(entry: Path) -> str:
    """sha256 over every file of an entry directory except meta.json and the sidecar, names included."""
    return artifact_sha256(entry, exclude=NOT_CONTENT)


def _tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def artifact_sha256(path: str | Path, exclude: tuple[str, ...] = ()) -> str:
    """Content hash of an artifact file, or of every file under an artifact directory (names included; files named
    in ``exclude`` left out)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob("*") if p.is_file() and _is_content(p.name, exclude))
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as fh:
            for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def prune(root: str | Path, unused_days: float, now: float | None = None) -> dict[str, int]:
    """Remove entries not used for ``unused_days`` (published artifacts by their last hit, recorded failures by their
    date), divergence results and reproducer venvs not used for ``unused_days`` (a venv of a pinned TF stack is
    2.3 GB; both are made again when asked), and work directories of conversions (or venv builds) that ended more
    than a day ago (a killed process leaves them behind). Trained weights and data (``weights/``, ``data/``) stay.
    Returns counts of what was removed."""
    root, now = Path(root), time.time() if now is None else now
    cutoff = now - unused_days * 86400
    removed = {"artifacts": 0, "failures": 0, "tmp": 0, "divergence": 0, "venvs": 0, "bytes": 0}

    def drop(path: Path, kind: str) -> None:
        removed["bytes"] += _tree_size(path)
        shutil.rmtree(path, ignore_errors=True)
        removed[kind] += 1

    divergence = root / "divergence"
    for result in divergence.glob("*/result.json"):
        if result.stat().st_mtime < cutoff:
            drop(result.parent, "divergence")
    for venv in (p for p in (divergence / "venvs").glob("*") if p.is_dir()):
        complete = venv / ".complete"
        if complete.is_file():
            stale = complete.stat().st_mtime < cutoff
        else:  # a build that stopped (killed) more than a day ago; one under way is younger
            stale = venv.stat().st_mtime < now - 86400
        if stale:
            drop(venv, "venvs")
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
    parser = argparse.ArgumentParser(prog="python -m export_harness.converters.cache",
                                     description="artifact cache maintenance")
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
          f"{removed['tmp']} work dirs, {removed['divergence']} divergence results, {removed['venvs']} reproducer "
          f"venvs ({removed['bytes'] / 2**20:.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
