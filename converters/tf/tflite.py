"""TensorFlow SavedModel and TFLite targets: shared machinery for the three backends.

Targets are named ``tf:savedmodel[BACKEND]`` and ``tflite:PRECISION[BACKEND]`` with PRECISION in
:data:`PRECISIONS` and BACKEND one of ``onnx2tf``, ``litert-torch``, ``onnx-tf`` (see ``tf_onnx2tf.py``,
``tf_litert_torch.py``, ``tf_onnx_tf.py``). Everything TensorFlow-side (conversion, structure inspection,
execution) runs in a worker subprocess (:mod:`export_harness.converters.tf.isolation`,
:mod:`export_harness.converters.tf.tf_worker`), so this
module imports neither TensorFlow nor pytest and a crash never reaches the caller.

A backend that is not installed still registers its targets; ``unavailable_reason()`` then returns a one-line
reason naming the tox environment that provides it, and the matrix skips those cells.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from export_harness.converters.cache import Artifact
from export_harness.converters.checks.tflite_structure import check_tflite_structure
from export_harness.converters.target import ExportError, StageError, StructureError, Target
from export_harness.converters.tf.isolation import WorkerTimeout, pool, python_has_modules
from export_harness.converters.tf.tflite_runtime import WORKER_MODULE, SavedModelRunner, TFLiteRunner
from export_harness.converters.util.versions import package_versions
from export_harness.models.spec import ModelSpec

PRECISIONS = ("fp32", "fp16", "int8-dynamic", "int8-full")
CALIBRATION_SAMPLES = 128
"""Representative samples for full-integer calibration (the issue asks for >= 100), from spec.example_inputs."""
CALIBRATION_SEED = 7919
"""Seed of the calibration data: distinct from the export (1234) and parity (0) seeds."""
CONVERT_TIMEOUT = float(os.environ.get("HARNESS_TF_CONVERT_TIMEOUT", "1800"))
IMAGE_LAYOUTS = ("NCW", "NCHW", "NCDHW")
"""Spec layouts that TF converters turn channels-last; every other rank>=3 input keeps its layout."""


def _worker_code_hash() -> str:
    digest = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for name in ("tf_worker.py", "worker_loop.py"):
        digest.update((here / name).read_bytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Backend:
    """A converter backend: the interpreter its worker runs on, what it must import, and who provides it."""

    name: str
    modules: tuple[str, ...]
    tox_env: str
    packages: tuple[str, ...]
    python_env_var: str | None = None
    """Environment variable naming another interpreter (the legacy onnx-tf venv); None: this interpreter."""
    install_hint: str = ""
    """What a user runs to make the backend available (the skip reason says it)."""
    default_python: Path | None = None
    """The interpreter used when ``python_env_var`` is unset, if it exists (``export-harness setup`` builds it)."""

    def python(self) -> str | None:
        if self.python_env_var is None:
            return sys.executable
        given = os.environ.get(self.python_env_var)
        if given:
            return given
        return str(self.default_python) if self.default_python and self.default_python.exists() else None

    def worker_env(self) -> dict[str, str]:
        return {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONFAULTHANDLER": "1", "CUDA_VISIBLE_DEVICES": "-1",
                "TF_ENABLE_ONEDNN_OPTS": "0"}

    def unavailable_reason(self) -> str | None:
        return _unavailable_reason(self)

    def versions(self) -> dict[str, str]:
        return _backend_versions(self)

    def call(self, op: str, *, fresh: bool = False, timeout: float = CONVERT_TIMEOUT, stage: str = "export",
             name: str | None = None, **args: Any) -> dict[str, Any]:
        python = self.python()
        if python is None:
            raise StageError(self.unavailable_reason() or f"{self.name}: no interpreter")
        return pool().call(python, WORKER_MODULE, op, env=self.worker_env(), name=name or self.name, fresh=fresh,
                           timeout=timeout, stage=stage, **args)


@functools.cache
def _unavailable_reason(backend: Backend) -> str | None:
    python = backend.python()
    where = backend.install_hint or f"run `tox -e {backend.tox_env}`"
    if python is None:
        return (f"{backend.name} backend not available: ${backend.python_env_var} is not set and "
                f"{backend.default_python} does not exist; {where}")
    missing = python_has_modules(python, backend.modules)
    if missing:
        return f"{backend.name} backend not available ({missing}); {where}"
    return None


@functools.cache
def _backend_versions(backend: Backend) -> dict[str, str]:
    python = backend.python()
    if python in (None, sys.executable):
        return package_versions(*backend.packages)
    import json
    import subprocess

    code = (f"import json, importlib.metadata as m\nout = {{}}\nfor n in {backend.packages!r}:\n"
            "    try: out[n] = m.version(n)\n    except m.PackageNotFoundError: out[n] = 'not-installed'\n"
            "print(json.dumps(out))")
    try:
        return json.loads(subprocess.run([python, "-c", code], capture_output=True, text=True, check=True,
                                         timeout=60).stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return {n: "unknown" for n in backend.packages}


def calibration_data(spec: ModelSpec, samples: int = CALIBRATION_SAMPLES) -> dict[str, np.ndarray]:
    """Calibration inputs per input name (PyTorch layout): the split attached as ``spec.extra['calibration']``
    (the accuracy suite's proxy-task calibration split, disjoint from its eval split), else ``samples`` realistic
    inputs from the spec's own generators."""
    if "calibration" in spec.extra:
        return {name: np.asarray(spec.extra["calibration"][name]) for name in spec.input_names}
    return spec.example_inputs(samples, seed=CALIBRATION_SEED)


def image_inputs(spec: ModelSpec) -> list[str]:
    """Inputs a TF converter makes channels-last (declared NCHW-like layouts)."""
    return [i.name for i in spec.inputs if i.layout in IMAGE_LAYOUTS]


def channels_last(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(x, 1, -1))


class TFTarget(Target):
    """Base of the TF/TFLite targets: backend, availability, failure policy, structure facts for the report."""

    backend_spec: Backend

    def __init__(self) -> None:
        self._facts: dict[str, dict[str, Any]] = {}

    @property
    def backend(self) -> str:  # type: ignore[override]
        return self.backend_spec.name

    @property
    def packages(self) -> tuple[str, ...]:  # type: ignore[override]
        return self.backend_spec.packages

    def versions(self) -> dict[str, str]:
        return self.backend_spec.versions()

    def unavailable_reason(self) -> str | None:
        """None when the backend can run here, else a one-line skip reason naming the tox env to use."""
        return self.backend_spec.unavailable_reason()

    def config(self) -> dict[str, Any]:
        return {"worker_code": _worker_code_hash(), "calibration": [CALIBRATION_SAMPLES, CALIBRATION_SEED]}

    calibrated = False
    """True when ``convert`` reads :func:`calibration_data`: an attached calibration split is then part of the key."""

    def cache_key(self, spec: ModelSpec, model_identity: str, deps: Mapping[str, Artifact]) -> str:
        key = super().cache_key(spec, model_identity, deps)
        if self.calibrated and "calibration_id" in spec.extra:
            key = hashlib.sha256(f"{key}|calibration:{spec.extra['calibration_id']}".encode()).hexdigest()
        return key

    def is_deterministic_failure(self, exc: BaseException) -> bool:
        """Converter errors and crashes recur with the same inputs; a timeout may not, so it is never cached."""
        return isinstance(exc, StageError) and not isinstance(exc, WorkerTimeout)

    def runner_info(self, artifact: Artifact) -> dict[str, Any]:
        return {"artifact_file": str(artifact.path), "size_bytes": artifact.meta.get("size_bytes"),
                "structure": self._facts.get(artifact.key, {}), "converter": self.backend,
                "converter_versions": artifact.meta.get("versions", {})}


class SavedModelTarget(TFTarget):
    """``tf:savedmodel[BACKEND]``: the backend's bundle (SavedModel plus every .tflite of one conversion run)."""

    format = "tf"
    precision = "savedmodel"
    tier = "fp32"

    def load(self, artifact: Artifact, spec: ModelSpec) -> SavedModelRunner:
        python = self.backend_spec.python() or sys.executable
        return SavedModelRunner(artifact.path, spec, python=python, env=self.backend_spec.worker_env(),
                                worker_name=f"{self.backend}-run", channels_last=artifact.meta.get("channels_last", []),
                                extra_info=self.runner_info(artifact))

    def check_structure(self, artifact: Artifact, spec: ModelSpec) -> dict[str, Any]:
        path = artifact.path
        if not (path / "saved_model.pb").is_file():
            raise StructureError(f"{path} has no saved_model.pb")
        facts = {"size_bytes": artifact.meta.get("size_bytes"), "tflite_files": artifact.meta.get("tflite", {})}
        self._facts[artifact.key] = facts
        return facts


class TFLiteTarget(TFTarget):
    """``tflite:PRECISION[BACKEND]``: one .tflite file run on ai-edge-litert in the backend's warm worker."""

    format = "tflite"
    positional_names: tuple[str, str] | None = None
    """Signature naming convention when names are not the spec's (litert-torch: args_{i} / output_{i})."""

    def __init__(self, precision: str) -> None:
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.precision = precision
        self.tier = precision

    def load(self, artifact: Artifact, spec: ModelSpec) -> TFLiteRunner:
        python = self.backend_spec.python() or sys.executable
        return TFLiteRunner(artifact.path, spec, python=python, env=self.backend_spec.worker_env(),
                            worker_name=f"{self.backend}-run", positional=self.positional_names,
                            channels_last=artifact.meta.get("channels_last", []),
                            check_delegates=self.precision.startswith("int8"), extra_info=self.runner_info(artifact))

    def check_structure(self, artifact: Artifact, spec: ModelSpec) -> dict[str, Any]:
        facts = self.backend_spec.call("tflite_inspect", name=f"{self.backend}-run", stage="structure",
                                       timeout=120, path=str(artifact.path))
        facts.pop("versions", None)
        facts["fp32_size_bytes"] = artifact.meta.get("fp32_size_bytes")
        if facts["fp32_size_bytes"]:
            facts["size_ratio_vs_fp32"] = round(facts["size_bytes"] / facts["fp32_size_bytes"], 4)
        self._facts[artifact.key] = facts
        check_tflite_structure(self.precision, facts, spec)
        return facts


def link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


class BundleFileTarget(TFLiteTarget):
    """A .tflite taken from its backend's bundle artifact (one converter run produced every precision)."""

    bundle: str

    @property
    def depends_on(self) -> tuple[str, ...]:  # type: ignore[override]
        return (self.bundle,)

    def convert(self, spec: ModelSpec, model: Any, workdir: Path, deps: Mapping[str, Artifact]) -> dict[str, Any]:
        bundle = deps[self.bundle]
        name = bundle.meta.get("tflite", {}).get(self.precision)
        if not name:
            reason = bundle.meta.get("errors", {}).get(self.precision, "the converter produced no file")
            raise ExportError(f"{self.backend} produced no {self.precision} .tflite: {reason}")
        link_or_copy(bundle.directory / name, workdir / "model.tflite")
        fp32 = bundle.meta.get("tflite", {}).get("fp32")
        return {"main": "model.tflite", "bundle": bundle.key, "versions": bundle.meta.get("versions", {}),
                "channels_last": bundle.meta.get("channels_last", []),
                "fp32_size_bytes": (bundle.directory / fp32).stat().st_size if fp32 else None,
                "convert_seconds_bundle": bundle.meta.get("convert_seconds")}
