"""TensorFlow / TFLite backends (onnx2tf, litert-torch, onnx-tf), their isolated worker processes and runners."""
