"""ONNX Runtime (CPU) runner of ONNX artifacts: named numpy inputs in, named outputs out."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from export_harness.models.spec import ModelSpec


class OnnxRuntimeRunner:
    """ONNX Runtime CPU session on named numpy inputs (cast to the declared dtypes)."""

    def __init__(self, path: Path, spec: ModelSpec, threads: int = 0) -> None:
        import onnxruntime as ort

        self.spec = spec
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.info = {"runtime": "onnxruntime", "version": ort.__version__,
                     "providers": self.session.get_providers()}

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {i.name: np.ascontiguousarray(inputs[i.name], dtype=i.dtype) for i in self.spec.inputs}
        values = self.session.run(self.spec.output_names, feed)
        return dict(zip(self.spec.output_names, values, strict=True))
