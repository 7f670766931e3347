"""All conversion code, in layers (lower ones never import higher ones; no pytest imports anywhere here).

- ``target``, ``registry``, ``cache``, ``conformance``, ``defaults``: a cell's plumbing (the Target interface, the
  target registry, the verified content-addressed artifact cache, ``run_cell``, packaged default settings);
- ``exporters``: PyTorch -> ONNX and TorchScript; ``compression``: quantization/pruning methods as targets;
  ``quantization``: quantizer maths; ``tf``: TF/TFLite backends, their worker processes and runners;
- ``checks``: parity comparison, thresholds, layer localisation, accuracy gates;
- ``latency``: measurement, regression gate, history; ``report``: tables, JSON, merge, generated docs.
"""
