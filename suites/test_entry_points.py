"""Installed packages extend the registries through entry points, without editing the harness."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from export_harness.converters.registry import default_target_registry
from export_harness.models.registry import default_registry


def test_entry_point_models_and_targets_are_registered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dist = tmp_path / "user_models-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: user-models\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[export_harness.models]\nmine = user_models:specs\n[export_harness.targets]\nmine = user_models:targets\n"
    )
    (tmp_path / "user_models.py").write_text(textwrap.dedent('''
        import numpy as np
        from torch import nn
        from export_harness.converters.exporters.onnx_export import OnnxExportTarget
        from export_harness.models.spec import InputSpec, ModelSpec, OutputSpec

        def specs():
            return [ModelSpec("ep_linear", "user", lambda: nn.Linear(3, 2),
                              (InputSpec("x", ("B", 3), "float32", "NC", lambda r, b: r.random((b, 3), np.float32)),),
                              (OutputSpec("y", ("B", 2)),), reference_params=8)]

        def targets():
            target = OnnxExportTarget("torchscript", opset=15)
            target.backend = "opset15"
            return [target]
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    models = default_registry()
    assert "ep_linear" in models and models.get("ep_linear").family == "user"
    assert default_target_registry().get("onnx:fp32[opset15]").opset == 15


def test_duplicate_names_are_rejected() -> None:
    models = default_registry(include_entry_points=False)
    clash = models.get("bst").__class__(**{**models.get("bst").__dict__, "family": "other"})
    with pytest.raises(ValueError, match="'bst' is already registered"):
        models.register(clash)
    targets = default_target_registry(include_entry_points=False)
    with pytest.raises(ValueError, match="already registered"):
        targets.register(targets.get("onnx:fp32"))
