"""The JSON sidecar beside every exported artifact: what it is, what it takes and returns, and what made it.

Written next to the artifact in its cache entry (``artifact.json``) and by the CLI's ``export`` next to each file it
writes: model and variant, target, opset, I/O names / shapes / dtypes, dynamic axes, sha256 and stack versions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from export_harness.converters.cache import CONTENT, SIDECAR, Artifact
from export_harness.converters.target import Target
from export_harness.converters.util.files import write_text_atomic
from export_harness.models.spec import ModelSpec

SCHEMA = "export-conformance-harness/artifact-sidecar/1"


def sidecar_record(spec: ModelSpec, target: Target, artifact: Artifact) -> dict[str, Any]:
    """The sidecar of one artifact (plain JSON values)."""
    meta = artifact.meta
    return {
        "schema": SCHEMA,
        "model": spec.name,
        "family": spec.family,
        "target": target.name,
        "format": target.format,
        "precision": target.precision,
        "backend": target.backend,
        "opset": meta.get("opset_produced") or target.opset_variant,
        "file": meta["main"],
        "sha256": meta.get(CONTENT),
        "size_bytes": meta.get("size_bytes"),
        "inputs": [{"name": i.name, "shape": list(i.shape), "dtype": i.dtype, "layout": i.layout}
                   for i in spec.inputs],
        "outputs": [{"name": o.name, "shape": list(o.shape), "kind": o.kind} for o in spec.outputs],
        "dynamic_axes": {name: {str(axis): symbol for axis, symbol in axes.items()}
                         for name, axes in spec.onnx_dynamic_axes().items()},
        "axis_lengths": {symbol: list(lengths) for symbol, lengths in spec.axis_lengths.items()},
        "versions": meta.get("versions", {}),
        "cache_key": artifact.key,
        "created": meta.get("created"),
    }


def write_sidecar(path: Path, record: dict[str, Any]) -> Path:
    """Write ``record`` to ``path`` atomically unless the file already says exactly that."""
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    try:
        if path.read_text() == text:
            return path
    except OSError:
        pass
    write_text_atomic(path, text)
    return path


def ensure_entry_sidecar(spec: ModelSpec, target: Target, artifact: Artifact) -> Path:
    """The sidecar of a cache entry, (re)written when missing or stale."""
    return write_sidecar(artifact.directory / SIDECAR, sidecar_record(spec, target, artifact))
