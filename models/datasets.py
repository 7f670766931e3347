"""Real labelled data that ships inside PyPI artifacts (never a hub download), read without heavy imports.

- ``japanese_vowels()``: UEA JapaneseVowels (9 speakers, 12 LPC channels, 7-29 frames; 270 train / 370 test),
  parsed from the ``.ts`` files bundled in the sktime wheel, located with ``importlib.util.find_spec`` so that
  sktime/pandas are never imported.
- ``photos()``: real RGB photos bundled in the scikit-image and scikit-learn wheels (read with Pillow).
- ``chess_data_dir()``: the ``data/`` folder of the ``chess`` 1.11.2 **sdist** (syzygy tables, polyglot book).
  pip does not install it, so it is fetched once with ``pip download --no-binary :all: --no-deps chess==1.11.2``
  (the package registry, not a hub) and unpacked atomically into the data cache. ``HARNESS_CHESS_SDIST`` may
  point to an already downloaded ``chess-1.11.2.tar.gz`` (offline machines).

The data cache is ``$HARNESS_CACHE/data`` (``set_data_dir`` overrides it; the pytest plugin sets it from
``--harness-cache``). Everything here is deterministic and importable without pytest.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CHESS_SDIST = "chess==1.11.2"
_DATA_DIR: Path | None = None


class DatasetError(RuntimeError):
    """A bundled dataset is missing (its package is not installed) or could not be prepared."""


def set_data_dir(path: str | Path) -> None:
    """Where prepared data (the unpacked chess sdist) is cached."""
    global _DATA_DIR
    _DATA_DIR = Path(path).resolve()


def data_dir() -> Path:
    root = _DATA_DIR or Path(os.environ.get("HARNESS_CACHE", ".harness-cache")).resolve() / "data"
    root.mkdir(parents=True, exist_ok=True)
    return root


def package_file(package: str, relpath: str, extra: str = "accuracy") -> Path:
    """Path of a data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(f"package {package!r} is not installed; install the '{extra}' extra "
                           f"(pip install -e .[{extra}])")
    path = Path(next(iter(spec.submodule_search_locations))) / relpath
    if not path.is_file():
        raise DatasetError(f"{package} is installed but has no bundled file {relpath!r}")
    return path


def file_sha256(*paths: Path) -> str:
    digest = hashlib.sha256()
    for p in paths:
        digest.update(p.read_bytes())
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------ UEA .ts series


@dataclass(frozen=True)
class SeriesSplit:
    """Variable-length multichannel series: ``series[i]`` is [channels, length_i]; ``labels`` are 0-based ints."""

    series: tuple[np.ndarray, ...]
    labels: np.ndarray
    class_names: tuple[str, ...]


def parse_ts(path: Path) -> SeriesSplit:
    """Parse a sktime/UEA ``.ts`` file: header lines, then ``ch1_v1,ch1_v2,...:ch2_...:label`` per series."""
    class_names: tuple[str, ...] = ()
    series, labels = [], []
    in_data = False
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            low = line.lower()
            if low.startswith("@classlabel"):
                class_names = tuple(line.split()[2:])
            elif low.startswith("@data"):
                in_data = True
            continue
        *channels, label = line.split(":")
        arr = np.array([[float(v) for v in ch.split(",")] for ch in channels], dtype=np.float32)
        series.append(arr)
        labels.append(class_names.index(label) if class_names else int(label))
    if not series:
        raise DatasetError(f"{path}: no series found")
    return SeriesSplit(tuple(series), np.array(labels, dtype=np.int64), class_names)


def japanese_vowels() -> tuple[SeriesSplit, SeriesSplit, str]:
    """(train, test, sha256 of both files): 270 / 370 series of 12 channels, 9 classes (speakers)."""
    train = package_file("sktime", "datasets/data/JapaneseVowels/JapaneseVowels_TRAIN.ts")
    test = package_file("sktime", "datasets/data/JapaneseVowels/JapaneseVowels_TEST.ts")
    return parse_ts(train), parse_ts(test), file_sha256(train, test)


# ------------------------------------------------------------------------------------------------- photos

PHOTO_FILES = (
    ("skimage", "data/astronaut.png"), ("skimage", "data/chelsea.png"), ("skimage", "data/coffee.png"),
    ("skimage", "data/rocket.jpg"), ("skimage", "data/motorcycle_left.png"), ("skimage", "data/hubble_deep_field.jpg"),
    ("skimage", "data/retina.jpg"), ("skimage", "data/ihc.png"), ("skimage", "data/color.png"),
    ("skimage", "data/grass.png"), ("skimage", "data/gravel.png"), ("skimage", "data/brick.png"),
    ("skimage", "data/motorcycle_right.png"), ("sklearn", "datasets/images/china.jpg"),
    ("sklearn", "datasets/images/flower.jpg"),
)
"""Real photos bundled in the scikit-image / scikit-learn wheels (skimage's pooch-fetched files are not used)."""


def photos() -> tuple[list[tuple[str, np.ndarray]], str]:
    """([(name, HxWx3 uint8 RGB)], sha256 of the files). Grey images are stacked to RGB."""
    from PIL import Image

    out, paths = [], []
    for package, rel in PHOTO_FILES:
        path = package_file(package, rel)
        paths.append(path)
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
        out.append((Path(rel).stem, arr))
    return out, file_sha256(*paths)


# -------------------------------------------------------------------------------------------- chess sdist


def chess_data_dir() -> Path:
    """The chess 1.11.2 sdist's ``data/`` directory, downloaded (pip) and unpacked once, atomically."""
    root = data_dir()
    final = root / "chess-1.11.2-data"
    if (final / ".complete").is_file():
        return final
    with open(root / "chess-sdist.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / ".complete").is_file():
            return final
        tmp = Path(tempfile.mkdtemp(prefix="chess-sdist-", dir=root))
        try:
            sdist = os.environ.get("HARNESS_CHESS_SDIST")
            if not sdist:
                cmd = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", "-q",
                       "-d", str(tmp), CHESS_SDIST]
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
                found = sorted(tmp.glob("chess-*.tar.gz"))
                if proc.returncode != 0 or not found:
                    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
                    raise DatasetError(f"could not fetch the chess sdist ({' '.join(cmd[2:])}): {tail[0]}; "
                                       "set HARNESS_CHESS_SDIST=/path/to/chess-1.11.2.tar.gz on offline machines")
                sdist = str(found[0])
            with tarfile.open(sdist) as tar:
                members = [m for m in tar.getmembers() if "/data/" in m.name and (m.isfile() or m.isdir())]
                tar.extractall(tmp / "x", members=members, filter="data")
            data = next((tmp / "x").glob("chess-*/data"))
            (data / ".complete").write_text(sdist + "\n")
            if final.exists():
                shutil.rmtree(final)
            os.rename(data, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final
