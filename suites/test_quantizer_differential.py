"""Differential checks of ``export_harness.converters.quantization.maths`` against ONNX Runtime and PyTorch (issue 3,
item 4).

Summary of what is asserted (for the same scale / zero point):

* **ONNX Runtime** ``QuantizeLinear`` / ``DequantizeLinear`` (opset 21, one-node graphs built with onnx.helper):
  bit-for-bit equal codes and dequantized values, per-tensor and per-axis (any axis, negative too), for int8,
  uint8, int16, uint16, and through the round trip for int4 / uint4; exact ``.5`` ties round half to even;
  out-of-range values saturate identically.
* **PyTorch** ``torch.quantize_per_tensor`` / ``torch.quantize_per_channel`` (quint8 = [0, 255], qint8 =
  [-128, 127]): ``dequantize`` is bit-for-bit equal. ``quantize`` differs *by design* in three ways, documented
  and tested precisely below: torch (1) multiplies by the float32 reciprocal ``1/scale`` instead of dividing,
  (2) adds the zero point *before* rounding, so ties round to even in the stored-code domain (with an odd zero
  point every exact tie lands on the other neighbour) and the float32 addition can round near-ties, and (3) its
  per-tensor kernel uses a fused multiply-add (``x * inv + zp`` rounded once) while the per-channel kernel
  rounds the product and the sum separately. Consequently: bit-for-bit equality when the zero point is 0 and
  the scale a power of two; otherwise codes differ by at most 1, only for values within float32 rounding of a
  ``.5`` tie (or exactly on one, with an odd zero point); and torch equals an exact emulation of its arithmetic.
* **torch.ao observers** (MinMaxObserver): same asymmetric scale / zero point up to float32 rounding; the
  symmetric scale differs by design (torch ``max|x| / 127.5``, ours ``max|x| / 127`` so +max|x| is on the grid).
"""

from __future__ import annotations

import warnings
from functools import cache

import numpy as np
import pytest
from hypothesis import event, given, note
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from export_harness.converters.quantization.maths import (
    QuantParams,
    compute_qparams,
    dequantize,
    fake_quantize,
    integer_range,
    make_qparams,
    quantize,
)

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
from onnx import TensorProto, helper  # noqa: E402

OPSET = 21
_ONNX_QTYPE = {(8, True): TensorProto.INT8, (8, False): TensorProto.UINT8,
               (16, True): TensorProto.INT16, (16, False): TensorProto.UINT16}
_TORCH_QTYPE = {True: torch.qint8, False: torch.quint8}

# ------------------------------------------------------------------------------------------------------------
# strategies

scales_any = st.floats(2.0**-20, 2.0**10, width=32)
scales_pow2 = st.integers(-20, 10).map(lambda e: 2.0**e)


@st.composite
def case(draw: st.DrawFn, bits: tuple[int, ...] = (8, 16), per_channel: bool | None = None,
         scales: st.SearchStrategy = scales_any, zero_point: st.SearchStrategy | None = None,
         max_dims: int = 3) -> tuple[np.ndarray, QuantParams, int | None]:
    """(float32 tensor, explicit or fitted params, axis as given to the runtime - possibly negative).

    Values are placed relative to the grid: uniform over the code range and a little beyond (saturation), exact
    ``.5`` ties, near-ties, exact grid points, zeros, and Hypothesis-generated arbitrary floats.
    """
    b = draw(st.sampled_from(bits))
    signed = draw(st.booleans())
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=max_dims, min_side=1, max_side=6))
    ndim = len(shape)
    if per_channel is None:
        per_channel = draw(st.booleans())
    axis = draw(st.integers(-ndim, ndim - 1)) if per_channel else None
    qmin, qmax = integer_range(b, signed)
    n_ch = shape[axis] if per_channel else 1
    fitted = draw(st.booleans()) and zero_point is None
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if fitted:  # parameters from compute_qparams on a realistic tensor
        x = (rng.normal(draw(st.sampled_from([0.0, 0.5, -2.0])), 1.0, shape)
             * 10.0 ** draw(st.integers(-6, 6))).astype(np.float32)
        params = compute_qparams(x, bits=b, signed=signed, symmetric=draw(st.booleans()), axis=axis,
                                 percentile=draw(st.sampled_from([None, 99.0])))
        scale = np.broadcast_to(params.scale, (n_ch,)).astype(np.float64)
        zp = np.broadcast_to(params.zero_point, (n_ch,))
    else:
        scale = np.array([draw(scales) for _ in range(n_ch)], dtype=np.float32)
        zp_strategy = zero_point if zero_point is not None else st.integers(qmin, qmax)
        zp = np.array([draw(zp_strategy) for _ in range(n_ch)], dtype=np.int64)
        params = make_qparams(scale if per_channel else scale[0], zp if per_channel else zp[0], bits=b,
                              signed=signed, axis=axis, ndim=ndim)
    # codes-domain positions k (x = k * scale), broadcast per channel
    bshape = [1] * ndim
    if per_channel:
        bshape[axis] = -1
    zp_b = zp.reshape(bshape).astype(np.float64)
    s_b = np.asarray(scale, dtype=np.float64).reshape(bshape)
    k = rng.uniform(qmin - 3, qmax + 3, shape) - zp_b
    kind = rng.integers(0, 5, shape)
    k = np.where(kind == 1, np.floor(k) + 0.5, k)  # exact ties (when scale is a power of two)
    k = np.where(kind == 2, np.floor(k) + 0.5 + rng.choice([-1, 1], shape) * 2.0**-12, k)  # near-ties
    k = np.where(kind == 3, np.round(k), k)  # grid points
    x = (k * s_b).astype(np.float32)
    x[rng.random(shape) < 0.05] = 0.0
    if draw(st.booleans()):
        mask = draw(hnp.arrays(np.bool_, shape))
        arbitrary = draw(hnp.arrays(np.float32, shape, elements=st.floats(-1e4, 1e4, width=32)))
        x = np.where(mask, arbitrary, x).astype(np.float32)
    note(f"bits={b} signed={signed} axis={axis} scale={scale} zp={zp}")
    return x, params, axis


# ------------------------------------------------------------------------------------------------------------
# ONNX Runtime


@cache
def _ort_session(qtype: int, rank: int, axis: int | None) -> ort.InferenceSession:
    """x -> QuantizeLinear -> y and codes -> DequantizeLinear -> d, scale / zero point as graph inputs."""
    dims = [f"d{i}" for i in range(rank)]
    pshape = [] if axis is None else ["c"]
    attrs = {} if axis is None else {"axis": axis}
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], **attrs),
             helper.make_node("DequantizeLinear", ["codes", "s", "z"], ["d"], **attrs)]
    graph = helper.make_graph(
        nodes, "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims),
         helper.make_tensor_value_info("codes", qtype, dims),
         helper.make_tensor_value_info("s", TensorProto.FLOAT, pshape),
         helper.make_tensor_value_info("z", qtype, pshape)],
        [helper.make_tensor_value_info("y", qtype, dims), helper.make_tensor_value_info("d", TensorProto.FLOAT, dims)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _ort_run(x: np.ndarray, codes: np.ndarray, p: QuantParams, axis: int | None) -> tuple[np.ndarray, np.ndarray]:
    sess = _ort_session(_ONNX_QTYPE[(p.bits, p.signed)], x.ndim, axis)
    y, d = sess.run(None, {"x": x, "codes": codes, "s": p.scale.astype(np.float32),
                           "z": p.zero_point.astype(p.int_dtype)})
    return y, d


@given(case())
def test_ort_quantize_dequantize_bit_exact(c):
    """Codes and dequantized values equal ONNX Runtime's, bit for bit (int8/uint8/int16/uint16, any axis)."""
    x, p, axis = c
    codes = quantize(x, p)
    y, d = _ort_run(x, codes, p, axis)
    assert y.dtype == codes.dtype and np.array_equal(y, codes)
    deq = dequantize(codes, p)
    assert d.dtype == deq.dtype == np.float32
    assert np.array_equal(d.view(np.uint32), deq.view(np.uint32))  # bit pattern, -0.0 included


@pytest.mark.parametrize("bits, signed", sorted(_ONNX_QTYPE))
@pytest.mark.parametrize("zp_parity", ["even", "odd"])
def test_ort_ties_round_half_to_even(bits, signed, zp_parity):
    """Exact ties x = (k + 0.5) * scale round to the even k (before adding the zero point), like ORT."""
    qmin, qmax = integer_range(bits, signed)
    zp = (qmin + qmax + 1) // 2 + (0 if zp_parity == "even" else 1)
    scale = 2.0**-3
    k = np.arange(-40, 40)
    x = ((k + 0.5) * scale).astype(np.float32)
    p = make_qparams(scale, zp, bits=bits, signed=signed)
    codes = quantize(x, p)
    assert np.all((codes.astype(np.int64) - zp) % 2 == 0)  # half to even in the x / scale domain
    y, _ = _ort_run(x, codes, p, None)
    assert np.array_equal(y, codes)


@pytest.mark.parametrize("bits, signed", sorted(_ONNX_QTYPE))
def test_ort_saturation(bits, signed):
    """Values beyond the code range (up to float32 max) saturate to qmin / qmax in both."""
    qmin, qmax = integer_range(bits, signed)
    fmax = np.finfo(np.float32).max
    x = np.array([-fmax, -1e30, -1e4, 1e4, 1e30, fmax], dtype=np.float32)
    p = make_qparams(0.01, (qmin + qmax) // 2, bits=bits, signed=signed)
    codes = quantize(x, p)
    assert codes.tolist() == [qmin] * 3 + [qmax] * 3
    y, _ = _ort_run(x, codes, p, None)
    assert np.array_equal(y, codes)


@cache
def _ort_int4_session(signed: bool, zp: int) -> ort.InferenceSession:
    qtype = TensorProto.INT4 if signed else TensorProto.UINT4
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"]),
             helper.make_node("DequantizeLinear", ["y", "s", "z"], ["d"])]
    graph = helper.make_graph(
        nodes, "qdq4",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"]),
         helper.make_tensor_value_info("s", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("d", TensorProto.FLOAT, ["n"])],
        initializer=[helper.make_tensor("z", qtype, [], [zp])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("scale", [0.25, 0.37])
def test_ort_int4_round_trip_bit_exact(signed, scale):
    """4-bit: ORT's int4/uint4 QuantizeLinear -> DequantizeLinear equals fake_quantize(bits=4), every zero point.

    (ORT's Python API cannot return packed 4-bit tensors, so the codes are compared through the round trip.)
    """
    qmin, qmax = integer_range(4, signed)
    x = ((np.arange(-24, 24)[:, None] + np.array([0.0, 0.25, 0.5, 0.75])) * scale).astype(np.float32).ravel()
    for zp in range(qmin, qmax + 1):
        try:
            sess = _ort_int4_session(signed, zp)
        except Exception as exc:  # pragma: no cover - older ORT without 4-bit QDQ
            pytest.skip(f"ONNX Runtime has no int4 QuantizeLinear: {exc}")
        (d,) = sess.run(None, {"x": x, "s": np.array(scale, dtype=np.float32)})
        ours = fake_quantize(x, make_qparams(scale, zp, bits=4, signed=signed))
        assert np.array_equal(d, ours), f"zero point {zp}"


# ------------------------------------------------------------------------------------------------------------
# PyTorch


def _torch_quantize(x: np.ndarray, p: QuantParams) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.quantize_per_* are deprecated in favour of torchao
        t = torch.from_numpy(np.ascontiguousarray(x))
        if p.axis is None:
            qt = torch.quantize_per_tensor(t, float(p.scale), int(p.zero_point), _TORCH_QTYPE[p.signed])
        else:
            qt = torch.quantize_per_channel(t, torch.from_numpy(p.scale.astype(np.float64)),
                                            torch.from_numpy(p.zero_point), p.axis, _TORCH_QTYPE[p.signed])
        return qt.int_repr().numpy(), qt.dequantize().numpy()


def _two_sum(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _round_to_f32(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """Correctly rounded float32 of the exact value hi + lo (hi = fl64(hi + lo)): fixes double rounding."""
    r = hi.astype(np.float32)
    r64 = r.astype(np.float64)
    other = np.where(hi > r64, np.nextafter(r, np.float32(np.inf)), np.nextafter(r, np.float32(-np.inf)))
    halfway = hi == (r64 + other.astype(np.float64)) / 2
    toward_other = np.sign(lo) == np.sign(other.astype(np.float64) - r64)
    return np.where(halfway & (lo != 0) & toward_other, other, r)


def torch_quantize_emulated(x: np.ndarray, p: QuantParams, fused: bool) -> np.ndarray:
    """PyTorch's quantize arithmetic: ``clip(rint(zp + x * fl32(1 / scale)), qmin, qmax)`` in float32.

    ``fused``: ``x * inv + zp`` rounded once (per-tensor FBGEMM kernel); else product and sum rounded separately
    (per-channel kernel). x * inv is exact in float64 (24 + 24 bits); the sum is made exact with TwoSum.
    """
    scale, zp = p.broadcast(x.ndim)
    inv = (np.float32(1.0) / scale.astype(np.float32)).astype(np.float32)
    if fused:
        v = _round_to_f32(*_two_sum(x.astype(np.float64) * inv.astype(np.float64), zp.astype(np.float64)))
    else:
        v = (x * inv).astype(np.float32) + zp.astype(np.float32)
    return np.clip(np.rint(v), p.qmin, p.qmax).astype(np.int64)


def _near_tie(x: np.ndarray, p: QuantParams) -> np.ndarray:
    """Elements whose exact x / scale is within the float32 rounding of torch's arithmetic of a .5 tie."""
    scale, zp = p.broadcast(x.ndim)
    r = x.astype(np.float64) / scale.astype(np.float64)
    tol = 2.0**-23 * (4 * np.abs(r) + np.abs(zp) + 1)  # reciprocal, product and sum roundings, generously
    return np.abs(np.abs(r - np.floor(r)) - 0.5) <= tol


@given(case(bits=(8,)))
def test_torch_dequantize_bit_exact(c):
    """torch's dequantize of torch's codes equals ours, bit for bit (per-tensor and per-channel)."""
    x, p, _ = c
    codes, deq = _torch_quantize(x, p)
    assert np.array_equal(deq.view(np.uint32), dequantize(codes, p).view(np.uint32))


@given(case(bits=(8,), scales=scales_pow2, zero_point=st.just(0)))
def test_torch_quantize_bit_exact_when_conventions_coincide(c):
    """Zero point 0 and a power-of-two scale (exact reciprocal): codes equal torch's bit for bit, ties too."""
    x, p, _ = c
    codes, _ = _torch_quantize(x, p)
    assert np.array_equal(codes.astype(np.int64), quantize(x, p).astype(np.int64))


@given(case(bits=(8,)))
def test_torch_quantize_differs_only_by_design(c):
    """General scale / zero point: torch equals the emulation of its own arithmetic exactly; ours differs from
    it by at most one code, and only on (near-)ties."""
    x, p, _ = c
    codes, _ = _torch_quantize(x, p)
    codes = codes.astype(np.int64)
    if p.axis is None:
        fused, unfused = torch_quantize_emulated(x, p, True), torch_quantize_emulated(x, p, False)
        assert np.array_equal(codes, fused) or np.array_equal(codes, unfused)  # FMA depends on the CPU kernel
    else:
        assert np.array_equal(codes, torch_quantize_emulated(x, p, False))
    ours = quantize(x, p).astype(np.int64)
    diff = ours != codes
    event("torch and ours disagree on some element" if diff.any() else "torch and ours agree")
    assert np.all(np.abs(ours - codes) <= 1)
    assert np.all(_near_tie(x, p)[diff]), f"mismatch away from a tie at {np.argwhere(diff & ~_near_tie(x, p))[:3]}"


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("per_channel", [False, True])
def test_torch_ties_differ_with_odd_zero_point(signed, per_channel):
    """Exact ties with a power-of-two scale: an even zero point agrees everywhere; an odd zero point disagrees on
    every tie, by one code (torch rounds zp + x/s to even, ONNX / ours round x/s to even and then add zp)."""
    k = np.arange(-20, 20)
    x = ((k + 0.5) * 0.125).astype(np.float32)[None, :]
    for zp, expect_equal in ((10 if signed else 128, True), (11 if signed else 129, False)):
        p = make_qparams(np.array([0.125]) if per_channel else 0.125, np.array([zp]) if per_channel else zp,
                         bits=8, signed=signed, axis=0 if per_channel else None)
        ours = quantize(x, p).astype(np.int64)
        theirs = _torch_quantize(x, p)[0].astype(np.int64)
        if expect_equal:
            assert np.array_equal(ours, theirs)
        else:
            assert np.all(np.abs(ours - theirs) == 1)
            assert np.all((ours - zp) % 2 == 0) and np.all(theirs % 2 == 0)


@pytest.mark.parametrize("signed", [True, False])
def test_torch_ranges_and_saturation(signed):
    """quint8 is [0, 255] and qint8 [-128, 127] (full ranges; reduce_range is an observer option, not used):
    both saturate out-of-range values exactly like ours."""
    qmin, qmax = integer_range(8, signed)
    p = make_qparams(0.5, 3 if signed else 130, bits=8, signed=signed)
    x = np.array([-1e30, -1e4, -200.0, 200.0, 1e4, 1e30], dtype=np.float32)
    codes, _ = _torch_quantize(x, p)
    assert codes.tolist() == quantize(x, p).tolist() == [qmin] * 3 + [qmax] * 3


def test_ours_rejects_nan_where_runtimes_do_not():
    """Design difference: NaN input is a ValueError here; torch and ORT return some code without complaint."""
    p = make_qparams(0.1, 0)
    with pytest.raises(ValueError, match="NaN"):
        quantize(np.array([np.nan], dtype=np.float32), p)


@given(hnp.arrays(np.float32, hnp.array_shapes(max_dims=2, max_side=8),
                  elements=st.floats(-1e3, 1e3, width=32)).filter(lambda a: np.ptp(a) > 1e-3),
       st.booleans())
def test_torch_observer_parameters(x, signed):
    """torch.ao MinMaxObserver, per-tensor: same asymmetric scale (to 1 float32 ulp) and zero point (+-1 when
    min/scale is within rounding of a .5 tie); symmetric scale differs by design by exactly 127.5 / 127."""
    from torch.ao.quantization.observer import MinMaxObserver

    dtype = _TORCH_QTYPE[signed]
    t = torch.from_numpy(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        obs = MinMaxObserver(dtype=dtype, qscheme=torch.per_tensor_affine)
        obs(t)
        ts, tz = (v.item() for v in obs.calculate_qparams())
        sym = MinMaxObserver(dtype=dtype, qscheme=torch.per_tensor_symmetric)
        sym(t)
        ss, sz = (v.item() for v in sym.calculate_qparams())
    p = compute_qparams(x, bits=8, signed=signed)
    assert abs(float(p.scale) - ts) <= float(np.spacing(np.float32(ts)))
    assert abs(int(p.zero_point) - tz) <= 1
    ps = compute_qparams(x, bits=8, signed=signed, symmetric=True)
    assert int(ps.zero_point) == sz  # same midpoint: 0 for qint8, 128 for quint8
    assert float(ps.scale) == pytest.approx(ss * 127.5 / 127, rel=2e-7)
