"""The CLI's harness session: the model (a zoo name or ``--spec module:attr``), its weights, the artifact cache, the
thresholds and the user's calibration data, every bad value turned into one ``UsageError`` line.

Paths resolve as the pytest plugin resolves them against its rootdir, here against the current directory: the
cache is ``--cache``, else ``$HARNESS_CACHE``, else ``.harness-cache/``; the thresholds are the packaged defaults
with ``--thresholds FILE``, else ``baselines/thresholds.toml`` (when it exists), layered over them.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from export_harness.converters.cache import ArtifactCache
from export_harness.converters.checks.thresholds import ThresholdError, Thresholds
from export_harness.converters.cli import UsageError
from export_harness.converters.defaults import WEIGHTS_SOURCES
from export_harness.converters.expectations import FILE_NAME, ExpectationError, Expectations
from export_harness.converters.registry import default_target_registry
from export_harness.converters.session import BadWeights, Session
from export_harness.models.registry import Registry, default_registry
from export_harness.models.spec import ModelSpec

PROJECT_THRESHOLDS = Path("baselines") / "thresholds.toml"
PROJECT_EXPECTATIONS = Path("baselines") / FILE_NAME


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Options every subcommand that runs cells takes: cache, thresholds, retrying cached failures, quiet."""
    group = parser.add_argument_group("harness")
    group.add_argument("--cache", metavar="DIR", default=None,
                       help="artifact cache (default: $HARNESS_CACHE, else .harness-cache/ in the current directory); "
                            "the pytest matrix's cache: a cell it ran is a cache hit here")
    group.add_argument("--thresholds", metavar="FILE", default=None,
                       help="thresholds TOML layered over the packaged defaults (default: baselines/thresholds.toml "
                            "in the current directory when it exists, as pytest's rootdir)")
    group.add_argument("--expectations", metavar="FILE", default=None,
                       help="expected failures and skips of the cells (default: baselines/expectations.toml in the "
                            "current directory when it exists), before the harness's own")
    group.add_argument("--retry-failed", action="store_true",
                       help="re-attempt conversions whose failure is cached")
    group.add_argument("--remeasure", action="store_true",
                       help="compute cached measurements (an accuracy cell's outputs) again instead of serving them")
    group.add_argument("-q", "--quiet", action="store_true", help="no progress display on stderr")


def add_model_arguments(parser: argparse.ArgumentParser, *, positional: bool = True) -> None:
    """The model and its weights: ``MODEL`` (or ``--model`` when ``positional`` is False), ``--spec``,
    ``--weights``, ``--allow-pickle``, ``--weights-source``."""
    group = parser.add_argument_group("model")
    model_help = ("a model of the zoo (models/registry.py: bst_cg_ap, tiny_ladeda, sign_gru, alphazero_chess, "
                  "gcode_fingerprint, ...; installed export_harness.models entry points too), or one of the specs "
                  "--spec gives")
    if positional:
        group.add_argument("model", metavar="MODEL", nargs="?", default=None, help=model_help)
    else:
        group.add_argument("--model", metavar="MODEL", default=None, help=model_help)
    group.add_argument("--spec", metavar="MODULE:ATTR", default=None,
                       help="your own model: an export_harness.models.spec.ModelSpec, a list of them, or a "
                            "callable returning either, "
                            "as MODULE:ATTR (imported from the current directory or sys.path) or FILE.py:ATTR")
    group.add_argument("--weights", metavar="PATH", default=None,
                       help="weights to load (state_dict, checkpoint dict with model_state_dict / state_dict / model, "
                            "or TorchScript), read with torch.load(weights_only=True)")
    group.add_argument("--allow-pickle", action="store_true",
                       help="allow full pickles in the weights file (only for files you trust)")
    group.add_argument("--weights-source", choices=WEIGHTS_SOURCES, default="reference",
                       help="without --weights: 'reference' (default: the trained reference weights the matrix, the "
                            "accuracy gates and the latency suite use) or 'seeded' (the deterministic untrained init)")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def load_user_specs(text: str) -> list[ModelSpec]:
    """The ModelSpecs ``--spec MODULE:ATTR`` (or ``FILE.py:ATTR``) names; UsageError for anything else."""
    module_name, sep, attr = text.rpartition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"--spec {text}: expected MODULE:ATTR (e.g. my_models:specs) or FILE.py:ATTR")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise UsageError(f"--spec {text}: file {module_name} does not exist")
            loader = importlib.util.spec_from_file_location(path.stem, path)
            if loader is None or loader.loader is None:
                raise UsageError(f"--spec {text}: cannot load {module_name} as a Python module")
            module = importlib.util.module_from_spec(loader)
            sys.modules[path.stem] = module
            loader.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except UsageError:
        raise
    except Exception as exc:
        raise UsageError(f"--spec {text}: cannot import {module_name} ({first_line(exc)})") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"--spec {text}: {module_name} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if callable(obj) and not isinstance(obj, ModelSpec):
        try:
            obj = obj(config=ProjectConfig(Path(cwd))) if _takes_config(obj) else obj()
        except Exception as exc:
            raise UsageError(f"--spec {text}: calling {attr}() failed ({first_line(exc)})") from None
    specs = [obj] if isinstance(obj, ModelSpec) else list(obj) if isinstance(obj, (list, tuple)) else None
    if not specs or not all(isinstance(s, ModelSpec) for s in specs):
        raise UsageError(f"--spec {text}: expected a ModelSpec, a non-empty list of them, or a callable returning "
                         f"either; got {type(obj).__name__}")
    return specs


class ProjectConfig:
    """What a project's ``pytest_harness_models(config)`` hook gets from the CLI in place of pytest's config: the
    project's directory (``rootpath``) and every option and ini value at its default."""

    def __init__(self, rootpath: Path) -> None:
        self.rootpath = rootpath

    def getoption(self, name: str, default: Any = None, skip: bool = False) -> Any:
        return default

    def getini(self, name: str) -> Any:
        return ""


def _takes_config(fn: Any) -> bool:
    try:
        return "config" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


PROJECT_HOOK = "conftest.py:pytest_harness_models"
"""Where the CLI finds a project's models without ``--spec``, as pytest does: the hook in ./conftest.py."""


def model_registry(spec_arg: str | None) -> tuple[Registry, list[ModelSpec]]:
    """The zoo (with entry-point models) plus the project's models: ``--spec``, else the ``pytest_harness_models``
    hook of ``./conftest.py`` when there is one; the latter are returned too."""
    models = default_registry()
    if spec_arg is None and _has_project_hook(Path("conftest.py")):
        spec_arg = PROJECT_HOOK
    user = load_user_specs(spec_arg) if spec_arg else []
    for spec in user:
        if spec.name in models:
            raise UsageError(f"--spec {spec_arg}: model name {spec.name!r} is already taken by the zoo; rename it")
        models.register(spec)
    return models, user


def _has_project_hook(conftest: Path) -> bool:
    try:
        return conftest.is_file() and "def pytest_harness_models" in conftest.read_text(errors="replace")
    except OSError:
        return False


def choose_model(models: Registry, user: list[ModelSpec], name: str | None, option: str) -> ModelSpec:
    """The model ``name`` names, or the only ``--spec`` model when no name is given."""
    if name is None:
        if len(user) == 1:
            return user[0]
        if user:
            raise UsageError(f"{option}: --spec gives {len(user)} models ({', '.join(s.name for s in user)}); "
                             "name one")
        raise UsageError(f"{option}: a model is required: a zoo name ({', '.join(models.names())}) or --spec "
                         "MODULE:ATTR")
    if name not in models:
        raise UsageError(f"{option} {name}: unknown model; known: {', '.join(models.names())}")
    return models.get(name)


def cache_root(value: str | None) -> Path:
    return Path(value or os.environ.get("HARNESS_CACHE") or ".harness-cache")


def open_cache(value: str | None, retry_failed: bool, remeasure: bool = False) -> ArtifactCache:
    root = cache_root(value)
    try:
        cache = ArtifactCache(root, retry_failed=retry_failed, remeasure=remeasure)
    except OSError as exc:
        raise UsageError(f"--cache {root}: not a writable directory ({first_line(exc)})") from None
    from export_harness.models import datasets

    datasets.set_data_dir(cache.root / "data")  # trained weights and task data, as the pytest plugin keeps them
    return cache


def _project_file(option: str, value: str | None, default: Path, load: Callable[[Path | None], Any],
                  error: type[Exception]) -> Any:
    """``load`` of the file ``option`` names, else of ``default`` when it exists, else of the packaged defaults alone;
    a missing or malformed file is one usage line naming the option and the file."""
    if value is not None and not Path(value).is_file():
        raise UsageError(f"{option} {value}: file does not exist")
    path = Path(value) if value else default if default.is_file() else None
    try:
        return load(path)
    except error as exc:
        raise UsageError(f"{option} {path}: {exc}") from None


def load_thresholds(value: str | None) -> Thresholds:
    return _project_file("--thresholds", value, PROJECT_THRESHOLDS, Thresholds.load, ThresholdError)


def load_expectations(value: str | None) -> Expectations:
    """The project's declarations. Their names are checked by the pytest session, which registers every model of
    the project; a command registers only the zoo and the models it was given, so a declaration of another project
    model is not a typo here."""
    return _project_file("--expectations", value, PROJECT_EXPECTATIONS, Expectations.load, ExpectationError)


def check_weights_file(path: str) -> str:
    file = Path(path)
    if not file.exists():
        raise UsageError(f"--weights {path}: file does not exist")
    if not file.is_file():
        raise UsageError(f"--weights {path}: expected a weights file, found a directory")
    if not os.access(file, os.R_OK):
        raise UsageError(f"--weights {path}: file is not readable")
    return path


def open_session(args: argparse.Namespace, *, model_option: str = "MODEL") -> tuple[Session, ModelSpec]:
    """The session and the model the arguments name (not built yet: :func:`load_model` loads its weights, after the
    command has checked its other arguments)."""
    models, user = model_registry(args.spec)
    spec = choose_model(models, user, args.model, model_option)
    weights = {spec.name: check_weights_file(args.weights)} if args.weights else {}
    targets = default_target_registry()
    thresholds = load_thresholds(args.thresholds)
    try:
        thresholds.check_names(models, targets)
    except ThresholdError as exc:
        raise UsageError(str(exc)) from None
    session = Session(models=models, targets=targets, cache=open_cache(args.cache, args.retry_failed, args.remeasure),
                      thresholds=thresholds, expectations=load_expectations(args.expectations),
                      weights=weights, allow_pickle=args.allow_pickle,
                      weights_source=args.weights_source, weights_option="--weights")
    return session, spec


def load_model(session: Session, spec: ModelSpec) -> Any:
    """The model every cell of the session runs (the matrix's: reference weights unless ``--weights`` or
    ``--weights-source seeded``); a weights file that does not load is a UsageError naming it."""
    try:
        return session.model(spec)
    except BadWeights as exc:
        raise UsageError(f"--weights {exc.error}") from None


def weights_label(session: Session, spec: ModelSpec) -> str:
    """Which weights the session's model of ``spec`` has (for sidecars and reports)."""
    source = session.weights_records.get(spec.name, {}).get("source")
    if source:
        return str(source)
    return "seeded init" if session.weights_source == "seeded" else "as built"


def load_calibration(path: str, spec: ModelSpec) -> tuple[dict[str, np.ndarray], str]:
    """(arrays per input name, identity) of a ``--calibration-data`` .npz: every input of the model, each with the
    model's dtype and its shape without the batch axis; extra arrays are ignored."""
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"--calibration-data {path}: file does not exist")
    try:
        with np.load(file, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise UsageError(f"--calibration-data {path}: not a readable .npz ({first_line(exc)})") from None
    out: dict[str, np.ndarray] = {}
    samples = None
    for inp in spec.inputs:
        if inp.name not in arrays:
            raise UsageError(f"--calibration-data {path}: no array named {inp.name!r} (the model's inputs: "
                             f"{', '.join(spec.input_names)}; the file has: {', '.join(sorted(arrays)) or 'nothing'})")
        arr = arrays[inp.name]
        want = np.dtype(inp.dtype)
        if arr.dtype != want and not (arr.dtype.kind == want.kind and np.can_cast(arr.dtype, want, "same_kind")):
            raise UsageError(f"--calibration-data {path}: {inp.name!r} is {arr.dtype}, the model takes {want}")
        if arr.ndim != len(inp.shape) or any(isinstance(d, int) and d != n for d, n in zip(inp.shape, arr.shape,
                                                                                          strict=False)):
            raise UsageError(f"--calibration-data {path}: {inp.name!r} has shape {list(arr.shape)}, expected "
                             f"{list(inp.shape)} (B = samples)")
        n = arr.shape[inp.batch_axis] if inp.batch_axis is not None else 1
        if samples is not None and n != samples:
            raise UsageError(f"--calibration-data {path}: {inp.name!r} has {n} samples, the other inputs {samples}")
        samples = n
        out[inp.name] = np.ascontiguousarray(arr, dtype=want)
    if not samples:
        raise UsageError(f"--calibration-data {path}: no samples")
    return out, "user-npz:" + arrays_hash(out)


def arrays_hash(arrays: Mapping[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        arr = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{arr.dtype}|{arr.shape}|".encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()[:16]
