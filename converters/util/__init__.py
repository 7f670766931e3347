"""The lowest layer: stdlib-only helpers every other layer may use (atomic writes, CPU identity, installed versions,
short error text). It imports nothing of the harness and no third-party package, so a converter worker in another
interpreter (the legacy onnx-tf venv) imports it too."""
