"""REFERENCE ONLY: deployment guide 001's quantizer pseudocode, transcribed exactly as written.

This module exists so the property suite (``suites/test_quantizer_guide_defects.py``) can demonstrate, with
Hypothesis-found counterexamples, where the guide's formulas break. It is never used by a production path;
use :mod:`export_harness.converters.quantization.maths` instead. Do not "fix" anything here: the defects are the point.

What is transcribed (guide ``001_290bc23b4b188e10.txt``):

* ``ComputeQuantParams`` / ``QuantizeTensor`` / ``DequantizeTensor`` ("Core Algorithm"): min/max range that is
  *not* widened to include zero, ``scale = 1e-8`` for a constant tensor, zero point rounded then clipped.
* The "Numerical Stability" safeguard ``if scale < 1e-8: scale = 1e-8`` (applied by the enhanced entry points).
* The symmetric option: ``scale = 2 * abs_max / (qmax - qmin)``, ``zero_point = 0`` whatever qmin/qmax are.
* Percentile outlier clipping (default 99.9): values are clipped to ``[P(100 - p), P(p)]`` before min/max
  (the guide gives no formula; two-sided percentiles reproduce its symmetric example).
* The "Dynamic Range Quantization" formula: ``scale = (max - min) / 255``, the *unsigned* zero point
  ``round(0 - min / scale)`` (never clipped), and the *signed* clip ``[-128, 127]``.

Rounding uses numpy's ``round`` (half to even); arithmetic is float64 so that the defects shown are those of
the formulas, not of float32 rounding.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "GUIDE_MIN_SCALE",
    "guide_compute_quant_params",
    "guide_dequantize_tensor",
    "guide_dynamic_range_fake_quantize",
    "guide_dynamic_range_params",
    "guide_fake_quantize",
    "guide_improved_quant_params",
    "guide_quantize_tensor",
]

GUIDE_MIN_SCALE = 1e-8


def guide_compute_quant_params(x: Any, qmin: int, qmax: int) -> tuple[float, int]:
    """``ComputeQuantParams(X, qmin, qmax)`` verbatim."""
    x = np.asarray(x, dtype=np.float64)
    x_min = float(np.min(x))
    x_max = float(np.max(x))

    if x_max == x_min:
        scale = 1e-8  # avoid div0
    else:
        scale = (x_max - x_min) / (qmax - qmin)

    zero_point_real = qmin - x_min / scale
    zero_point = np.round(zero_point_real)
    zero_point = np.clip(zero_point, qmin, qmax)

    return scale, int(zero_point)


def guide_quantize_tensor(x_fp32: Any, scale: Any, zero_point: Any, qmin: int, qmax: int) -> np.ndarray:
    """``QuantizeTensor(X_fp32, scale, zero_point, qmin, qmax)`` verbatim (broadcasting scale / zero point)."""
    x_scaled = np.asarray(x_fp32, dtype=np.float64) / np.asarray(scale, dtype=np.float64)
    x_rounded = np.round(x_scaled)
    x_q = x_rounded + np.asarray(zero_point, dtype=np.float64)
    x_q = np.clip(x_q, qmin, qmax)
    return x_q.astype(np.int64)


def guide_dequantize_tensor(x_q: Any, scale: Any, zero_point: Any) -> np.ndarray:
    """``DequantizeTensor(X_q, scale, zero_point)`` verbatim."""
    return np.asarray(scale, dtype=np.float64) * (np.asarray(x_q, dtype=np.float64) - np.asarray(zero_point))


def guide_fake_quantize(x: Any, qmin: int, qmax: int) -> tuple[np.ndarray, float, int]:
    """Core pseudocode end to end (per tensor): returns ``(x_recovered, scale, zero_point)``."""
    scale, zero_point = guide_compute_quant_params(x, qmin, qmax)
    x_q = guide_quantize_tensor(x, scale, zero_point, qmin, qmax)
    return guide_dequantize_tensor(x_q, scale, zero_point), scale, zero_point


def guide_improved_quant_params(
    x: Any,
    qmin: int,
    qmax: int,
    symmetric: bool = False,
    clip_percentile: float | None = None,
) -> tuple[float, int]:
    """The guide's "Enhancements" on one tensor / channel: percentile clipping, symmetric option, safeguards."""
    x = np.asarray(x, dtype=np.float64)
    if clip_percentile is not None:
        x = np.clip(x, np.percentile(x, 100.0 - clip_percentile), np.percentile(x, clip_percentile))
    if symmetric:
        abs_max = max(abs(float(np.min(x))), abs(float(np.max(x))))
        scale = (2 * abs_max) / (qmax - qmin)
        zero_point = 0
    else:
        scale, zero_point = guide_compute_quant_params(x, qmin, qmax)
    if scale < 1e-8:
        scale = 1e-8  # Prevent division by zero
    zero_point = int(np.clip(zero_point, qmin, qmax))  # Ensure valid range
    return scale, zero_point


def guide_dynamic_range_params(x: Any, axis: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The "Dynamic Range Quantization" formula's parameters (per channel along ``axis``, or per tensor).

    ``scale_ch = (max_ch - min_ch) / 255`` (with the guide's ``scale < 1e-8`` safeguard) and
    ``zero_point_ch = round(0 - min_ch / scale_ch)``: an unsigned-style zero point, not clipped.
    """
    x = np.asarray(x, dtype=np.float64)
    reduce_axes = None if axis is None else tuple(i for i in range(x.ndim) if i != axis % x.ndim)
    min_ch = np.min(x, axis=reduce_axes)
    max_ch = np.max(x, axis=reduce_axes)
    scale_ch = (max_ch - min_ch) / 255  # for 8-bit
    scale_ch = np.maximum(scale_ch, GUIDE_MIN_SCALE)  # "if scale < 1e-8: scale = 1e-8"
    zero_point_ch = np.round(0 - min_ch / scale_ch)
    return scale_ch, zero_point_ch


def guide_dynamic_range_fake_quantize(x: Any, axis: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The "Dynamic Range Quantization" formula end to end: returns ``(x_recovered, scale, zero_point)``.

    ``X_quantized = clip(round(X / scale_ch) + zero_point_ch, -128, 127)``,
    ``X_recovered = scale_ch * (X_quantized - zero_point_ch)``.
    """
    x = np.asarray(x, dtype=np.float64)
    scale_ch, zero_point_ch = guide_dynamic_range_params(x, axis)
    if axis is not None:
        shape = [1] * x.ndim
        shape[axis % x.ndim] = -1
        scale_b, zp_b = scale_ch.reshape(shape), zero_point_ch.reshape(shape)
    else:
        scale_b, zp_b = scale_ch, zero_point_ch
    x_quantized = np.clip(np.round(x / scale_b) + zp_b, -128, 127)
    x_recovered = scale_b * (x_quantized - zp_b)
    return x_recovered, scale_ch, zero_point_ch
