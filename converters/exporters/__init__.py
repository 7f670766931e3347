"""Exporters: PyTorch -> ONNX (TorchScript-based and dynamo) and TorchScript (trace / script)."""
