"""Quantization maths: the guide's int8 quantizer and its reference arithmetic."""
