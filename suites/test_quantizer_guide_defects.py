"""The guide's quantizer pseudocode, falsified by Hypothesis; the harness quantizer, verified on the same property.

Each defect test runs ``hypothesis.find`` (deterministic, database-free) against the transcription in
``converters/quantization/guide_quantizer.py`` and asserts that a counterexample is found; the docstring shows the
minimal counterexample Hypothesis shrinks to (hypothesis 6.170.15) and what goes wrong on it. The matching ``fixed``
test checks the same property on ``export_harness.converters.quantization.maths`` with ``@given``, plus the documented
example.

The property throughout: every value of the tensor round-trips with error <= scale / 2 (+ a float64 slack of
eps * (|x| + scale), see ``_within_half_step``), or, for zero, round-trips exactly.
"""

from __future__ import annotations

import random

import numpy as np
from hypothesis import find, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from export_harness.converters.quantization.guide_quantizer import (
    guide_compute_quant_params,
    guide_dequantize_tensor,
    guide_dynamic_range_fake_quantize,
    guide_dynamic_range_params,
    guide_fake_quantize,
    guide_improved_quant_params,
    guide_quantize_tensor,
)
from export_harness.converters.quantization.maths import compute_qparams, fake_quantize

INT8 = (-128, 127)
UINT8 = (0, 255)

_ELEMENTS = st.floats(-1e6, 1e6, allow_nan=False, allow_subnormal=False)
#: 1-D float64 tensors of up to 6 values (kept small so the shrunk counterexamples are readable).
vectors = hnp.arrays(np.float64, st.integers(1, 6), elements=_ELEMENTS)
#: Constant tensors of any small shape.
constants = st.floats(-1e6, 1e6, allow_nan=False, allow_subnormal=False).flatmap(
    lambda v: hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=2, max_side=4), elements=st.just(v)))


def _within_half_step(x: np.ndarray, x_hat: np.ndarray, scale: float) -> bool:
    """|x_hat - x| <= scale/2 + eps64 * (|x| + scale): one rounding in x/scale, one in k*scale (float64)."""
    eps = float(np.finfo(np.float64).eps)
    return bool(np.all(np.abs(x_hat - x) <= scale / 2 + eps * (np.abs(x) + scale)))


def _find(strategy: st.SearchStrategy, condition) -> np.ndarray:
    """Minimal example satisfying ``condition`` (raises hypothesis.errors.NoSuchExample if there is none)."""
    return find(strategy, condition, settings=settings(max_examples=5000, database=None, deadline=None),
                random=random.Random(0))


def _fixed_int8(x: np.ndarray, **kw) -> tuple[np.ndarray, float]:
    p = compute_qparams(x, bits=8, signed=True, **kw)
    return fake_quantize(x, p), float(p.scale)


# ------------------------------------------------------------------------------------------------------------
# defect 1: the "Dynamic Range Quantization" formula mixes an unsigned zero point with a signed int8 clip


def _includes_zero(x: np.ndarray) -> bool:
    return bool(x.min() <= 0.0 <= x.max() and x.min() < x.max())


def _guide_dynamic_range_ok(x: np.ndarray) -> bool:
    x_hat, scale, _ = guide_dynamic_range_fake_quantize(x)
    return _within_half_step(x, x_hat, float(scale))


def test_guide_defect_unsigned_zero_point_with_signed_clip():
    """Minimal counterexample: ``x = [0.0, 1.0]``.

    scale = (1 - 0) / 255, zero_point = round(0 - 0 / scale) = 0 (the unsigned formula), then
    ``clip(round(1.0 / scale) + 0, -128, 127) = clip(255) = 127`` and ``X_recovered = 127/255 = 0.498``:
    error 0.502 = 128 steps, not <= half a step. The formula maps [min, max] onto [0, 255] but clips to
    [-128, 127], so the upper half of every channel saturates (even though the data contains zero, so neither
    the missing zero widening nor zero-point clipping is to blame).
    """
    x = _find(vectors, lambda v: _includes_zero(v) and not _guide_dynamic_range_ok(v))
    assert _includes_zero(x) and not _guide_dynamic_range_ok(x)
    assert x.size <= 2, f"expected a tiny shrunk counterexample, got {x.tolist()}"
    x_hat, _, _ = guide_dynamic_range_fake_quantize(np.array([0.0, 1.0]))
    assert abs(x_hat[1] - 127 / 255) < 1e-12


@given(vectors.filter(_includes_zero))
def test_fixed_signed_int8_round_trip_within_half_step(x):
    """Same property, harness quantizer (signed int8, asymmetric, zero point computed for the signed range)."""
    for example in (x, np.array([0.0, 1.0])):
        x_hat, scale = _fixed_int8(example)
        assert _within_half_step(example, x_hat, scale)


# ------------------------------------------------------------------------------------------------------------
# defect 2: a constant tensor gets scale = 1e-8


def _guide_core_ok(x: np.ndarray, qrange: tuple[int, int] = INT8) -> bool:
    x_hat, scale, _ = guide_fake_quantize(x, *qrange)
    return _within_half_step(x, x_hat, scale)


def test_guide_defect_constant_tensor_scale_1e_8():
    """Minimal counterexample: ``x = [1.0]`` (any constant tensor with |value| > ~2.6e-6).

    ComputeQuantParams sets scale = 1e-8; zero_point = clip(round(-128 - 1.0 / 1e-8)) = -128, then
    ``clip(round(1.0 / 1e-8) - 128, -128, 127) = 127`` (saturated) and ``X_recovered = 1e-8 * 255 = 2.55e-6``:
    the constant is replaced by ~0 (error ~1.0, i.e. 1e8 steps of the guide's scale).
    """
    x = _find(constants, lambda v: not _guide_core_ok(v))
    assert np.all(x == x.flat[0]) and not _guide_core_ok(x)
    x_hat, scale, zero_point = guide_fake_quantize(np.array([1.0]), *INT8)
    assert scale == 1e-8 and zero_point == -128 and abs(x_hat[0] - 2.55e-6) < 1e-12


@given(constants, st.booleans())
def test_fixed_constant_tensor_round_trip_within_half_step(x, symmetric):
    """Same property, harness quantizer: the range [min(c, 0), max(c, 0)] gives a real scale |c| / steps."""
    for example in (x, np.array([1.0])):
        x_hat, scale = _fixed_int8(example, symmetric=symmetric)
        assert _within_half_step(example, x_hat, scale)


# ------------------------------------------------------------------------------------------------------------
# defect 3: the range is not widened to include zero, so 0.0 is not exactly representable


def _single_sign(x: np.ndarray) -> bool:
    return bool(x.min() < x.max() and (x.min() > 0.0 or x.max() < 0.0))


def _guide_dynamic_range_zero_exact(x: np.ndarray) -> bool:
    scale, zero_point = guide_dynamic_range_params(x)
    x_q = np.clip(np.round(0.0 / scale) + zero_point, -128, 127)
    return bool(scale * (x_q - zero_point) == 0.0)


def test_guide_defect_zero_not_representable():
    """Minimal counterexample: ``x = [1.0, 2.0]``.

    The range [1, 2] excludes zero; scale = 1/255 and zero_point = round(0 - 1/scale) = -255, outside the code
    range, so 0.0 quantizes to clip(-255) = -128 and comes back as (-128 + 255) / 255 = 0.498: no code at all
    dequantizes to 0.0 (zero padding, ReLU zeros and pruned weights all shift).

    In the guide's *core* ComputeQuantParams the zero point is clipped and then used consistently, so 0.0 does
    round-trip there (``test_guide_core_keeps_zero_exact``) - at the price of defect 4.
    """
    x = _find(vectors, lambda v: _single_sign(v) and not _guide_dynamic_range_zero_exact(v))
    assert _single_sign(x) and not _guide_dynamic_range_zero_exact(x)
    assert x.size <= 2, f"expected a tiny shrunk counterexample, got {x.tolist()}"
    assert not _guide_dynamic_range_zero_exact(np.array([1.0, 2.0]))


@given(vectors)
def test_guide_core_keeps_zero_exact(x):
    """The guide's core pseudocode (clipped zero point, used by both Quantize and Dequantize) keeps 0.0 exact."""
    for qrange in (INT8, UINT8):
        scale, zero_point = guide_compute_quant_params(x, *qrange)
        x_q = guide_quantize_tensor(np.zeros(1), scale, zero_point, *qrange)
        assert guide_dequantize_tensor(x_q, scale, zero_point)[0] == 0.0


@given(vectors.filter(_single_sign), st.booleans(), st.booleans(), st.sampled_from([None, 99.9, 90.0]))
def test_fixed_zero_always_exact(x, signed, symmetric, percentile):
    """Same property, harness quantizer: the fitted range always includes 0, so 0.0 maps to the zero point."""
    for example in (x, np.array([1.0, 2.0])):
        p = compute_qparams(example, bits=8, signed=signed, symmetric=symmetric, percentile=percentile)
        assert fake_quantize(np.zeros(3), p).tolist() == [0.0, 0.0, 0.0]


# ------------------------------------------------------------------------------------------------------------
# defect 4: a positive-only tensor clips its zero point


def _positive_only(x: np.ndarray) -> bool:
    return bool(x.min() > 0.0 and x.min() < x.max())


def test_guide_defect_positive_only_tensor_clips_zero_point():
    """Minimal counterexample: ``x = [1.0, 2.0]`` (signed int8; the same for uint8).

    scale = 1/255, zero_point_real = -128 - 1.0 / scale = -383, clipped to -128. The grid is then
    scale * (q + 128) = [0, 1.0]: it starts at 0, not at x_min, so 2.0 quantizes to clip(510 - 128) = 127 and
    comes back as 1.0 (error 1.0 = 255 steps); every value above x_max - x_min saturates.
    """
    for qrange in (INT8, UINT8):
        x = _find(vectors, lambda v, qr=qrange: _positive_only(v) and not _guide_core_ok(v, qr))
        assert _positive_only(x) and not _guide_core_ok(x, qrange)
        assert x.size <= 2, f"expected a tiny shrunk counterexample, got {x.tolist()}"
        x_hat, _, zero_point = guide_fake_quantize(np.array([1.0, 2.0]), *qrange)
        assert zero_point == qrange[0] and x_hat[1] == 1.0


#: Strictly positive, non-constant vectors, built directly: filtering ``vectors`` kept ~1 draw in 8 and tripped
#: Hypothesis's filter_too_much health check on unlucky seeds.
_POSITIVE = st.floats(1e-3, 1e6, allow_nan=False, allow_subnormal=False)
positive_vectors = hnp.arrays(np.float64, st.integers(2, 6), elements=_POSITIVE).filter(_positive_only)


@given(positive_vectors, st.booleans())
def test_fixed_positive_only_round_trip_within_half_step(x, signed):
    """Same property, harness quantizer: range [0, x_max], zero point qmin, nothing saturates."""
    for example in (x, np.array([1.0, 2.0])):
        p = compute_qparams(example, bits=8, signed=signed)
        assert p.zero_point == p.qmin
        assert _within_half_step(example, fake_quantize(example, p), float(p.scale))


# ------------------------------------------------------------------------------------------------------------
# bonus: the guide's symmetric option hard-codes zero_point = 0, wrong for an unsigned range


def _guide_symmetric_ok(x: np.ndarray, qrange: tuple[int, int]) -> bool:
    scale, zero_point = guide_improved_quant_params(x, *qrange, symmetric=True)
    x_hat = guide_dequantize_tensor(guide_quantize_tensor(x, scale, zero_point, *qrange), scale, zero_point)
    return _within_half_step(x, x_hat, scale)


def test_guide_defect_symmetric_zero_point_zero_with_unsigned_range():
    """Minimal counterexample: ``x = [-1.0]`` with qmin, qmax = 0, 255.

    scale = 2 * 1.0 / 255, zero_point = 0 (as written), so every negative value clips to code 0 and comes back
    as 0.0 (error 1.0). With the signed range the same formula is fine (checked below): its defect is only that
    it hard-codes 0 instead of the midpoint of [qmin, qmax].
    """
    x = _find(vectors, lambda v: not _guide_symmetric_ok(v, UINT8))
    assert not _guide_symmetric_ok(x, UINT8) and x.size == 1
    assert not _guide_symmetric_ok(np.array([-1.0]), UINT8)


@given(vectors)
def test_guide_symmetric_fine_for_signed_and_fixed_fine_for_both(x):
    """Signed range: guide's symmetric formula holds. Harness symmetric mode holds for signed and unsigned."""
    assert _guide_symmetric_ok(x, INT8)
    for signed in (True, False):
        p = compute_qparams(x, bits=8, signed=signed, symmetric=True)
        assert _within_half_step(x, fake_quantize(x, p), float(p.scale))
