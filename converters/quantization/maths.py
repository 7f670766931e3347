"""Affine (scale / zero-point) integer quantization, done carefully.

This is the harness's sound version of the quantizer described in deployment guide 001 (see
``converters/quantization/guide_quantizer.py`` for the guide's pseudocode verbatim, kept only to demonstrate its
defects).

Conventions (identical to ONNX ``QuantizeLinear`` / ``DequantizeLinear``)::

    q = clip(round_half_to_even(x / scale) + zero_point, qmin, qmax)
    x_hat = (q - zero_point) * scale

* ``scale`` is stored as float32 (what ONNX and PyTorch consume) and is always finite and > 0;
  ``x / scale`` is evaluated in float32 for float16/float32 input (bit-for-bit what ONNX Runtime does) and in
  float64 for float64 input.
* The fitted range is always widened to include 0, so 0.0 is exactly representable (it maps to the zero point)
  and the zero point never needs clipping.
* After rounding the scale to float32 it is nudged up by one ulp when needed, so the fitted range
  ``[range_min, range_max]`` is covered: every value inside it round-trips with error <= scale / 2 (up to float
  rounding, see the property suite).
* Symmetric mode uses the midpoint zero point (0 for signed, ``2**(bits-1)`` for unsigned) and
  ``scale = max|x| / (2**(bits-1) - 1)``, so both ``+max|x|`` and ``-max|x|`` are on the grid.
* Scales are floored at the smallest normal float32 (``1.18e-38``): an all-zero or subnormal-only tensor gets a
  finite, positive scale whose reciprocal is finite too.
* Non-finite input, empty input, bit widths outside 2..16, bad axes and bad percentiles raise ``ValueError``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch
    from torch import nn

__all__ = [
    "MAX_BITS",
    "MIN_BITS",
    "MIN_SCALE",
    "LayerQuantReport",
    "QuantParams",
    "clipped_mask",
    "compute_qparams",
    "dequantize",
    "fake_quantize",
    "fake_quantize_tensor",
    "integer_range",
    "layer_report",
    "make_qparams",
    "quantization_report",
    "quantize",
    "quantize_model",
]

MIN_BITS = 2
MAX_BITS = 16
#: Smallest scale ever produced: the smallest *normal* float32, so ``1 / scale`` is finite in float32 too.
MIN_SCALE = float(np.finfo(np.float32).tiny)
_F32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True, eq=False)
class QuantParams:
    """Quantization parameters for one tensor (per-tensor: 0-d arrays; per-channel: 1-d arrays along ``axis``).

    ``range_min`` / ``range_max`` are the (clipped, zero-widened) real range the parameters were fitted to, or
    ``None`` when the parameters were given explicitly (:func:`make_qparams`).
    """

    scale: np.ndarray  # float32, > 0, finite
    zero_point: np.ndarray  # int64, within [qmin, qmax]
    qmin: int
    qmax: int
    axis: int | None  # normalised (non-negative) channel axis, None for per-tensor
    bits: int
    signed: bool
    symmetric: bool
    range_min: np.ndarray | None = None  # float64
    range_max: np.ndarray | None = None  # float64

    @property
    def per_channel(self) -> bool:
        """True when there is one scale / zero point per slice along ``axis``."""
        return self.axis is not None

    @property
    def int_dtype(self) -> np.dtype:
        """Smallest numpy integer dtype holding ``[qmin, qmax]``."""
        return _int_dtype(self.bits, self.signed)

    def representable_range(self) -> tuple[np.ndarray, np.ndarray]:
        """``(scale * (qmin - zp), scale * (qmax - zp))`` in float64: the reals reachable by dequantization."""
        s = self.scale.astype(np.float64)
        zp = self.zero_point.astype(np.float64)
        return s * (self.qmin - zp), s * (self.qmax - zp)

    def broadcast(self, ndim: int) -> tuple[np.ndarray, np.ndarray]:
        """Scale and zero point reshaped to broadcast against an ``ndim``-dimensional tensor."""
        if self.axis is None:
            return self.scale, self.zero_point
        shape = [1] * ndim
        shape[self.axis] = -1
        return self.scale.reshape(shape), self.zero_point.reshape(shape)


# ----------------------------------------------------------------------------------------------------------------
# validation helpers


def integer_range(bits: int, signed: bool) -> tuple[int, int]:
    """``(qmin, qmax)`` of a ``bits``-wide two's-complement (signed) or unsigned integer."""
    _check_bits(bits)
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _check_bits(bits: Any) -> None:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise ValueError(f"bits must be an integer in [{MIN_BITS}, {MAX_BITS}], got {bits!r}")
    if not MIN_BITS <= int(bits) <= MAX_BITS:
        raise ValueError(f"bits must be in [{MIN_BITS}, {MAX_BITS}], got {bits}")


def _int_dtype(bits: int, signed: bool) -> np.dtype:
    if bits <= 8:
        return np.dtype(np.int8 if signed else np.uint8)
    return np.dtype(np.int16 if signed else np.uint16)


def _normalise_axis(axis: Any, ndim: int, what: str = "axis") -> int | None:
    if axis is None:
        return None
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise ValueError(f"{what} must be an integer or None, got {axis!r}")
    axis = int(axis)
    if not -ndim <= axis < ndim:
        raise ValueError(f"{what} {axis} is out of range for a tensor with {ndim} dimension(s)")
    return axis % ndim


def _as_real_array(x: Any, where: str) -> np.ndarray:
    """Validate ``x``: non-empty, real, finite. Returns a floating array (float16/32/64 kept, ints -> float64)."""
    arr = np.asarray(x)
    if arr.dtype.kind in "iub":
        arr = arr.astype(np.float64)
    elif arr.dtype.kind != "f":
        raise ValueError(f"{where}: expected a real floating-point tensor, got dtype {arr.dtype}")
    if arr.size == 0:
        raise ValueError(f"{where}: cannot quantize an empty tensor (shape {arr.shape})")
    finite = np.isfinite(arr)
    if not finite.all():
        n_nan = int(np.isnan(arr).sum())
        n_inf = int(arr.size - finite.sum()) - n_nan
        first = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise ValueError(
            f"{where}: input contains non-finite values ({n_nan} NaN, {n_inf} inf; first at index {first}); "
            "quantization of NaN/inf is undefined - fix the data or the model producing it"
        )
    return arr


def _compute_dtype(arr: np.ndarray) -> np.dtype:
    """float64 for float64 input, float32 otherwise (what ONNX Runtime uses for float/half input)."""
    return np.dtype(np.float64) if arr.dtype == np.float64 else np.dtype(np.float32)


# ----------------------------------------------------------------------------------------------------------------
# parameters


def _scale_to_float32(raw: np.ndarray, steps: int, needed: np.ndarray) -> np.ndarray:
    """Round ``raw`` (float64) to float32 such that ``scale * steps >= needed`` and ``scale >= MIN_SCALE``."""
    with np.errstate(over="ignore"):
        scale = raw.astype(np.float32)
    if not np.isfinite(scale).all():
        raise ValueError(
            "compute_qparams: the value range exceeds what a float32 scale can represent "
            f"(range about {float(np.max(needed)):.3g}); rescale the tensor"
        )
    # float32 rounding may have lost a little: bump by one ulp where the range would no longer be covered.
    # scale (24 significant bits) * steps (<= 17 bits) is exact in float64, so this comparison is exact.
    short = scale.astype(np.float64) * steps < needed
    scale = np.where(short, np.nextafter(scale, np.float32(np.inf)), scale)
    return np.maximum(scale, np.float32(MIN_SCALE)).astype(np.float32)


def compute_qparams(
    x: Any,
    bits: int = 8,
    signed: bool = True,
    symmetric: bool = False,
    axis: int | None = None,
    percentile: float | None = None,
) -> QuantParams:
    """Fit scale / zero point to ``x`` (per-tensor, or per slice along ``axis``).

    ``percentile`` (in (50, 100]) clips the fitted range two-sidedly to ``[P(100 - p), P(p)]`` of the values
    (per channel when ``axis`` is given) before it is widened to include zero; ``None`` or 100 uses min / max.
    """
    _check_bits(bits)
    arr = _as_real_array(x, "compute_qparams")
    ax = _normalise_axis(axis, arr.ndim)
    if percentile is not None:
        if isinstance(percentile, bool) or not isinstance(percentile, (int, float, np.floating, np.integer)):
            raise ValueError(f"percentile must be a number in (50, 100] or None, got {percentile!r}")
        if not (50.0 < float(percentile) <= 100.0):
            raise ValueError(f"percentile must be in (50, 100] (two-sided clipping), got {percentile}")
    qmin, qmax = integer_range(int(bits), bool(signed))
    bits = int(bits)
    a64 = arr.astype(np.float64)
    reduce_axes = None if ax is None else tuple(i for i in range(arr.ndim) if i != ax)
    if percentile is None or float(percentile) == 100.0:
        lo = np.min(a64, axis=reduce_axes)
        hi = np.max(a64, axis=reduce_axes)
    else:
        p = float(percentile)
        lo = np.percentile(a64, 100.0 - p, axis=reduce_axes)
        hi = np.percentile(a64, p, axis=reduce_axes)
    lo = np.minimum(np.asarray(lo, dtype=np.float64), 0.0)  # widen to include zero
    hi = np.maximum(np.asarray(hi, dtype=np.float64), 0.0)

    if symmetric:
        half = (1 << (bits - 1)) - 1  # codes available on the short side of the midpoint
        amax = np.maximum(-lo, hi)
        scale = _scale_to_float32(amax / half, half, amax)
        zp = np.full(scale.shape, 0 if signed else 1 << (bits - 1), dtype=np.int64)
        lo, hi = -amax, amax
    else:
        steps = qmax - qmin
        span = hi - lo
        scale = _scale_to_float32(span / steps, steps, span)
        # lo <= 0 and scale * steps >= span, so -lo / scale is in [0, steps]: zero point lands in [qmin, qmax].
        zp = qmin - np.rint(lo / scale.astype(np.float64))
        zp = np.clip(zp, qmin, qmax).astype(np.int64)

    s64 = scale.astype(np.float64)
    extreme = s64 * np.maximum(np.abs(qmin - zp), np.abs(qmax - zp))
    if np.any(extreme > _F32_MAX):
        raise ValueError(
            "compute_qparams: the value range is too close to the float32 limit: dequantized codes would "
            f"overflow to inf (max |x| is about {float(np.max(np.maximum(-lo, hi))):.3g}); rescale the tensor"
        )
    return QuantParams(
        scale=np.asarray(scale, dtype=np.float32),
        zero_point=np.asarray(zp, dtype=np.int64),
        qmin=qmin,
        qmax=qmax,
        axis=ax,
        bits=bits,
        signed=bool(signed),
        symmetric=bool(symmetric),
        range_min=np.asarray(lo, dtype=np.float64),
        range_max=np.asarray(hi, dtype=np.float64),
    )


def make_qparams(
    scale: Any,
    zero_point: Any,
    bits: int = 8,
    signed: bool = True,
    axis: int | None = None,
    ndim: int | None = None,
) -> QuantParams:
    """Build :class:`QuantParams` from explicit scale(s) / zero point(s) (e.g. to compare with another runtime).

    Per-channel parameters (``axis`` given) need 1-d ``scale`` / ``zero_point``; a negative ``axis`` needs
    ``ndim``.
    """
    qmin, qmax = integer_range(bits, signed)
    s = np.asarray(scale, dtype=np.float32)
    z = np.asarray(zero_point)
    if z.dtype.kind not in "iu" and not np.array_equal(z, np.round(z)):
        raise ValueError(f"zero_point must be integral, got {zero_point!r}")
    z = z.astype(np.int64)
    if axis is None:
        if s.ndim != 0 or z.ndim != 0:
            raise ValueError("per-tensor parameters need scalar scale and zero_point (pass axis= for per-channel)")
    else:
        if s.ndim != 1 or z.shape != s.shape:
            raise ValueError(f"per-channel parameters need 1-d scale and zero_point of equal length, got "
                             f"{s.shape} and {z.shape}")
        if axis < 0:
            if ndim is None:
                raise ValueError("a negative axis needs ndim")
            axis = _normalise_axis(axis, ndim)
    if not (np.isfinite(s).all() and (s > 0).all()):
        raise ValueError(f"scale must be finite and > 0, got {scale!r}")
    if ((z < qmin) | (z > qmax)).any():
        raise ValueError(f"zero_point must be within [{qmin}, {qmax}], got {zero_point!r}")
    return QuantParams(scale=s, zero_point=z, qmin=qmin, qmax=qmax, axis=axis, bits=bits, signed=signed,
                       symmetric=False)


# ----------------------------------------------------------------------------------------------------------------
# (de)quantization


def _check_layout(arr: np.ndarray, params: QuantParams, where: str) -> None:
    if params.axis is None:
        return
    if arr.ndim <= params.axis:
        raise ValueError(f"{where}: per-channel axis {params.axis} is out of range for shape {arr.shape}")
    if arr.shape[params.axis] != params.scale.shape[0]:
        raise ValueError(f"{where}: tensor has {arr.shape[params.axis]} channels along axis {params.axis}, "
                         f"parameters have {params.scale.shape[0]}")


def quantize(x: Any, params: QuantParams) -> np.ndarray:
    """Quantize ``x`` to integer codes (int8/uint8 up to 8 bits, int16/uint16 above), saturating to [qmin, qmax]."""
    arr = _as_real_array(x, "quantize")
    _check_layout(arr, params, "quantize")
    cdt = _compute_dtype(arr)
    scale, zp = params.broadcast(arr.ndim)
    with np.errstate(over="ignore"):  # x / tiny scale may overflow to inf: saturates below, as in ONNX Runtime
        codes = np.rint(arr.astype(cdt) / scale.astype(cdt)) + zp.astype(cdt)
    return np.clip(codes, params.qmin, params.qmax).astype(params.int_dtype)


def dequantize(q: Any, params: QuantParams, dtype: Any = np.float32) -> np.ndarray:
    """``(q - zero_point) * scale`` in ``dtype`` (float32 by default, bit-for-bit like ONNX Runtime)."""
    arr = np.asarray(q)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"dequantize: expected integer codes, got dtype {arr.dtype}")
    if arr.size and (int(arr.min()) < params.qmin or int(arr.max()) > params.qmax):
        raise ValueError(f"dequantize: codes outside [{params.qmin}, {params.qmax}]")
    _check_layout(arr, params, "dequantize")
    dt = np.dtype(dtype)
    if dt.kind != "f":
        raise ValueError(f"dequantize: dtype must be floating, got {dt}")
    scale, zp = params.broadcast(arr.ndim)
    # (q - zp) has at most 17 significant bits: exact in float32/float64, so only the product rounds, once.
    return (arr.astype(np.int64) - zp).astype(dt) * scale.astype(dt)


def fake_quantize(x: Any, params: QuantParams) -> np.ndarray:
    """``dequantize(quantize(x))``; float64 output for float64 input, float32 otherwise."""
    arr = _as_real_array(x, "fake_quantize")
    return dequantize(quantize(arr, params), params, dtype=_compute_dtype(arr))


def clipped_mask(x: Any, params: QuantParams) -> np.ndarray:
    """Boolean mask of the elements clipped by saturation: farther than half a step outside the representable
    range, so their error exceeds scale / 2. Values inside the fitted range are never flagged (exact float64
    bounds; a value exactly on a .5 tie at the edge may saturate but keeps error scale / 2)."""
    arr = _as_real_array(x, "clipped_mask")
    _check_layout(arr, params, "clipped_mask")
    scale, zp = params.broadcast(arr.ndim)
    s = scale.astype(np.float64)
    k = zp.astype(np.float64)
    # s has 24 significant bits and (q - zp +- 0.5) at most 19: both products are exact in float64
    lower, upper = s * (params.qmin - k - 0.5), s * (params.qmax - k + 0.5)
    a64 = arr.astype(np.float64)
    return (a64 < lower) | (a64 > upper)


def fake_quantize_tensor(t: torch.Tensor, params: QuantParams) -> torch.Tensor:
    """Torch version of :func:`fake_quantize` (same dtype/device as ``t``; bit-identical for float32/float64).

    Uses ``torch.round`` (half to even) and true division, like the numpy path and ONNX Runtime. Half-precision
    tensors are computed in float32 and the result is cast back (grid values then round to the half dtype).
    """
    import torch

    if not t.is_floating_point():
        raise ValueError(f"fake_quantize_tensor: expected a floating-point tensor, got {t.dtype}")
    if t.numel() == 0:
        raise ValueError("fake_quantize_tensor: cannot quantize an empty tensor")
    if not bool(torch.isfinite(t).all()):
        raise ValueError("fake_quantize_tensor: input contains NaN or inf; quantization is undefined")
    cdt = torch.float64 if t.dtype == torch.float64 else torch.float32
    scale_np, zp_np = params.broadcast(t.dim())
    if params.axis is not None and t.shape[params.axis] != params.scale.shape[0]:
        raise ValueError("fake_quantize_tensor: channel count does not match the parameters")
    scale = torch.as_tensor(np.asarray(scale_np, dtype=np.float32), device=t.device).to(cdt)
    zp = torch.as_tensor(np.asarray(zp_np, dtype=np.int64), device=t.device).to(cdt)
    q = torch.clamp(torch.round(t.to(cdt) / scale) + zp, params.qmin, params.qmax)
    return ((q - zp) * scale).to(t.dtype)


# ----------------------------------------------------------------------------------------------------------------
# model-level


@dataclass(frozen=True)
class LayerQuantReport:
    """What quantizing one layer's weight did to it."""

    name: str
    kind: str  # module class name
    shape: tuple[int, ...]
    bits: int
    signed: bool
    symmetric: bool
    per_channel: bool
    percentile: float | None
    scale_min: float
    scale_max: float
    zero_point_min: int
    zero_point_max: int
    clipped_fraction: float
    max_abs_error: float
    rms_error: float
    sqnr_db: float  # +inf when the quantization error is exactly zero

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (infinite SQNR becomes the string ``"inf"``)."""
        d = asdict(self)
        d["shape"] = list(self.shape)
        if math.isinf(self.sqnr_db):
            d["sqnr_db"] = "inf"
        return d


def _sqnr_db(signal: np.ndarray, error: np.ndarray) -> float:
    noise = float(np.sum(error * error))
    if noise == 0.0:
        return math.inf
    power = float(np.sum(signal * signal))
    if power == 0.0:
        return -math.inf
    return 10.0 * math.log10(power / noise)


def layer_report(name: str, kind: str, w: np.ndarray, params: QuantParams, w_hat: np.ndarray,
                 percentile: float | None) -> LayerQuantReport:
    """Compute the :class:`LayerQuantReport` of one weight ``w`` quantized to ``w_hat`` with ``params``."""
    w64 = np.asarray(w, dtype=np.float64)
    err = np.asarray(w_hat, dtype=np.float64) - w64
    return LayerQuantReport(
        name=name,
        kind=kind,
        shape=tuple(int(d) for d in w64.shape),
        bits=params.bits,
        signed=params.signed,
        symmetric=params.symmetric,
        per_channel=params.per_channel,
        percentile=None if percentile is None else float(percentile),
        scale_min=float(params.scale.min()),
        scale_max=float(params.scale.max()),
        zero_point_min=int(params.zero_point.min()),
        zero_point_max=int(params.zero_point.max()),
        clipped_fraction=float(clipped_mask(w, params).mean()),
        max_abs_error=float(np.max(np.abs(err))),
        rms_error=float(np.sqrt(np.mean(err * err))),
        sqnr_db=_sqnr_db(w64, err),
    )


def quantize_model(
    model: nn.Module,
    bits: int = 8,
    per_channel: bool = True,
    symmetric: bool = True,
    percentile: float | None = None,
    *,
    signed: bool = True,
) -> tuple[nn.Module, dict[str, LayerQuantReport]]:
    """Deep-copy ``model`` and fake-quantize the weights of its Linear / Conv1d / Conv2d / Conv3d layers.

    Weights are replaced by their dequantized values (plain float tensors of the original dtype), so the result
    runs and exports (ONNX, TorchScript) exactly like a float model. Per-channel parameters use the output
    channel axis (0). Biases are left in float. Returns the copy and a report per quantized layer, keyed by the
    module's qualified name; the input model is not modified.
    """
    import torch
    from torch import nn

    _check_bits(bits)
    layer_types = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
    qmodel = copy.deepcopy(model)
    reports: dict[str, LayerQuantReport] = {}
    seen: set[int] = set()
    for name, module in qmodel.named_modules():
        if not isinstance(module, layer_types):
            continue
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor) or id(weight) in seen:  # tied weights: quantize once
            continue
        seen.add(id(weight))
        w_np = weight.detach().cpu().numpy().copy()  # numpy() shares memory with the weight overwritten below
        try:
            params = compute_qparams(w_np, bits=bits, signed=signed, symmetric=symmetric,
                                     axis=0 if per_channel else None, percentile=percentile)
        except ValueError as exc:
            raise ValueError(f"quantize_model: layer {name!r} ({type(module).__name__}): {exc}") from exc
        with torch.no_grad():
            w_hat = fake_quantize_tensor(weight.detach(), params)
            weight.copy_(w_hat)
        reports[name] = layer_report(name, type(module).__name__, w_np, params, w_hat.cpu().numpy(), percentile)
    return qmodel, reports


def quantization_report(reports: dict[str, LayerQuantReport]) -> str:
    """Render per-layer reports as a fixed-width text table."""
    header = ("layer", "kind", "shape", "bits", "scale min..max", "zp min..max", "clipped", "max err", "rms err",
              "SQNR dB")
    rows = []
    for r in reports.values():
        rows.append((
            r.name or "<root>",
            r.kind,
            "x".join(str(d) for d in r.shape),
            f"{r.bits}{'s' if r.signed else 'u'}{' sym' if r.symmetric else ''}{' pc' if r.per_channel else ''}",
            f"{r.scale_min:.3g}..{r.scale_max:.3g}",
            f"{r.zero_point_min}..{r.zero_point_max}",
            f"{100.0 * r.clipped_fraction:.2f}%",
            f"{r.max_abs_error:.3g}",
            f"{r.rms_error:.3g}",
            "inf" if math.isinf(r.sqnr_db) else f"{r.sqnr_db:.1f}",
        ))
    if not rows:
        return "(no Linear/Conv layers quantized)"
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    worst = min(reports.values(), key=lambda r: r.sqnr_db)
    lines.append(f"{len(rows)} layer(s); worst SQNR {worst.sqnr_db:.1f} dB in {worst.name or '<root>'}")
    return "\n".join(lines)
