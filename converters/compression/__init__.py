"""Compression methods as targets: ONNX Runtime quantization and FP16, torch dynamic int8 and pruning, the guide's
quantizer."""
