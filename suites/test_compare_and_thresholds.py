"""Self-tests of the parity comparator and the thresholds file: they must be able to fail."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from export_harness.converters.checks.compare import compare, compare_output
from export_harness.converters.checks.thresholds import DEFAULT_THRESHOLDS, ThresholdError, Thresholds, Tolerance

TOL = Tolerance(cosine_min=0.999999, atol=1e-4, rtol=1e-4, top1_min=1.0)


def test_identical_outputs_pass() -> None:
    x = np.random.default_rng(0).standard_normal((3, 10)).astype(np.float32)
    out = compare_output("y", x, x.copy(), TOL, classifier=True)
    assert out.passed and out.cosine == pytest.approx(1.0) and out.max_abs == 0 and out.top1_agreement == 1.0


def test_one_element_off_is_located_with_passing_atol() -> None:
    x = np.linspace(-1, 1, 60, dtype=np.float32).reshape(3, 20)
    y = x.copy()
    y[2, 7] += 0.01
    out = compare_output("y", x, y, TOL)
    assert not out.passed
    assert out.worst_index == (2, 7)
    assert out.max_abs == pytest.approx(0.01, rel=1e-3)
    assert out.min_passing_atol == pytest.approx(0.01 - 1e-4 * abs(x[2, 7]), rel=1e-3)
    assert any("exceeds atol" in f for f in out.failures)
    # the reported atol really is the smallest that passes
    looser = Tolerance(0.0, out.min_passing_atol * 1.0001, TOL.rtol, 0.0)
    assert compare_output("y", x, y, looser).passed


def test_the_message_names_the_element_that_violates_not_the_largest_diff() -> None:
    """The user's EfficientNet case: the largest |diff| sits on a large logit that rtol*|ref| covers; the violator is a
    small logit with a smaller |diff|. Both are named, the violator as the one that fails."""
    ref = np.array([[2.63989, -0.039, 1.0]], dtype=np.float64)
    got = ref + np.array([[0.0199, 0.0134, 0.0]])
    tol = Tolerance(0.0, 0.01, 0.01, 0.0)
    out = compare_output("logits", ref, got, tol)
    assert out.worst_index == (0, 0) and out.violator_index == (0, 1)
    assert out.violator_ratio == pytest.approx(0.0134 / (0.01 + 0.01 * 0.039), rel=1e-6)
    (message,) = out.failures
    assert "max_abs 0.0199 at [0, 0] (expected 2.63989, got 2.65979: within its allowed error)" in message
    assert "most at [0, 1]: 0.0134 > 0.0104 allowed (1.29x; expected -0.039, got -0.0256)" in message
    assert re.search(r"max_abs 0\.0\d+ at .* exceeds atol 0\.01", message)  # declarations match this form
    assert message.endswith(f"atol {out.min_passing_atol:.3g} would pass")
    same = compare_output("y", ref, ref + np.array([[0.0, 0.0, 0.5]]), tol).failures[0]
    assert "max_abs 0.5 at [0, 2]; |diff| exceeds atol 0.01 + rtol 0.01*|ref| most at [0, 2]" in same


def test_top1_flip_fails_when_decisive_and_is_a_tie_within_the_tolerance() -> None:
    x = np.array([[1.0, 1.00001, 0.0]], dtype=np.float64)
    y = np.array([[1.00001, 1.0, 0.0]], dtype=np.float64)
    strict = compare_output("y", x, y, Tolerance(0.99, 1e-7, 0.0, 1.0), classifier=True)
    assert strict.top1_agreement == 0.0 and strict.decisive_top1 == 0.0 and not strict.passed
    assert "top-1 agreement 0.000 (0.000 of the rows where it is decisive) < 1.0" in strict.failures[-1]
    # the two leading logits are closer than both their allowed errors: the tolerance cannot order them
    tie = compare_output("y", x, y, Tolerance(0.99, 1e-3, 0.0, 1.0), classifier=True)
    assert tie.top1_agreement == 0.0 and tie.decisive_top1 == 1.0 and tie.passed


def test_decisive_top5_membership_is_judged_on_wide_outputs() -> None:
    ref = np.array([[9.0, 8.0, 7.0, 6.0, 5.0, 1.0, 0.5, 0.0]])
    swapped = ref.copy()
    swapped[0, [4, 5]] = swapped[0, [5, 4]]  # a decisive top-5 member leaves the top 5, top-1 unchanged
    out = compare_output("y", ref, swapped, Tolerance(0.0, 1e-3, 0.0, 1.0, scale_atol=0.0), classifier=True)
    assert out.decisive_top1 == 1.0 and out.decisive_top5 == 0.0
    assert any("top-5 membership held in 0.000 of the rows" in f for f in out.failures)
    assert compare_output("y", ref[:, :5], ref[:, :5], TOL, classifier=True).decisive_top5 is None


FP16_ROUNDOFF, FP16_GROWTH = 2.0 ** -11, 32


def test_the_fp16_tier_is_derived_from_the_number_format() -> None:
    """docs/matrix.md "Tiers from the number format": G*u of the output's scale, cosine 1 - (G*u)^2/2, atol the
    smallest normal; re-derived here so the packaged numbers cannot drift from the derivation."""
    tier = Thresholds.load(None).tier("fp16")
    assert tier.scale_atol == FP16_GROWTH * FP16_ROUNDOFF
    assert tier.cosine_min == 1.0 - (FP16_GROWTH * FP16_ROUNDOFF) ** 2 / 2
    assert tier.atol == 2.0 ** -14 and tier.rtol == 0.0 and tier.top1_min == 1.0
    assert tier.cosine_min >= 0.95  # the guide's floor stays the loosest allowed


@pytest.mark.parametrize("units", [1e-3, 1.0, 1e3])
def test_a_scaled_tier_gives_the_same_verdict_in_any_units(units: float) -> None:
    """The same relative fp16-like error passes, and a miscompile-sized one fails, whatever the output's units."""
    tier = Thresholds.load(None).tier("fp16")
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(3, 1000)) * units
    rounded = ref + rng.normal(size=ref.shape) * 4 * FP16_ROUNDOFF * np.abs(ref).max()
    assert compare_output("y", ref, rounded, tier, classifier=True).passed
    broken = ref.copy()
    broken[:, :100] *= 1.1  # one op 10 % off on a tenth of the output
    out = compare_output("y", ref, broken, tier, classifier=True)
    assert not out.passed and any("max|ref|" in f for f in out.failures)


def test_a_project_tier_that_adds_a_scaled_allowance_needs_a_reason(tmp_path: Path) -> None:
    path = tmp_path / "thresholds.toml"
    path.write_text("[tiers.fp32]\nscale_atol = 0.01\n")
    with pytest.raises(ThresholdError, match=r"loosens the packaged tier \(scale_atol 0\.01 \(packaged 0\.0\)\)"):
        Thresholds.load(path)


def test_the_would_pass_hint_covers_every_batch() -> None:
    from export_harness.converters.conformance import would_pass

    tol = Tolerance(0.9999, 1e-4, 0.0, 0.0)
    ref = np.linspace(1.0, 2.0, 10)
    batch1 = compare(({"y": ref}), {"y": ref + 0.001}, tol, batch=1)
    batch3 = compare(({"y": ref}), {"y": ref + 0.1 * (-1.0) ** np.arange(10)}, tol, batch=3)
    hint = would_pass([batch1, batch3], tol)
    worst = max(o.min_passing_atol for p in (batch1, batch3) for o in p.outputs)
    assert f"over all 2 batches: atol {worst:.3g} and cosine_min" in hint
    assert worst == pytest.approx(0.1, rel=1e-6)  # batch 3's, not batch 1's 0.001


def test_nan_and_shape_mismatch_are_failures() -> None:
    x = np.ones((2, 3), np.float32)
    y = x.copy()
    y[0, 0] = np.nan
    assert not compare_output("y", x, y, TOL).passed
    res = compare({"y": x}, {"y": x[:1]}, TOL, batch=2)
    assert not res.passed and "shape" in res.failure_lines()[0]
    res = compare({"y": x}, {}, TOL, batch=2)
    assert not res.passed and "missing" in res.failure_lines()[0]


def test_nan_is_reported_as_nan_never_as_agreement() -> None:
    x = np.full((2, 3), np.nan, np.float32)
    both = compare_output("y", x, x.copy(), TOL)
    assert not both.passed and np.isnan(both.cosine) and "cosine=nan" in both.describe()
    assert both.failures == ["PyTorch's own output has 6 NaN value(s) of 6: the reference is broken (weights or "
                             "inputs), no parity verdict is possible"]
    ref = np.ones((2, 3), np.float32)
    act = ref.copy()
    act[0, :2] = [np.nan, np.inf]
    one = compare_output("y", ref, act, TOL)
    assert np.isnan(one.cosine) and one.failures[0] == ("2 non-finite value(s) where PyTorch differs (the "
                                                        "artifact's output has 1 NaN, 1 Inf)")
    masked = np.array([[1.0, -np.inf, 2.0]], np.float32)  # equal infinities (masked logits) agree
    assert compare_output("y", masked, masked.copy(), TOL).passed


def test_cosine_catches_scaled_output() -> None:
    x = np.random.default_rng(1).standard_normal(100).astype(np.float32)
    out = compare_output("y", x, -x, Tolerance(0.99, 10.0, 0.0, 0.0))
    assert not out.passed and out.cosine == pytest.approx(-1.0)


def test_shipped_thresholds_load_and_fp32_is_far_tighter_than_the_guides() -> None:
    th = Thresholds.load(DEFAULT_THRESHOLDS)
    fp32 = th.tier("fp32")
    assert fp32.cosine_min >= 0.99999 > th.floors["fp32"]["cosine_min"]
    assert fp32.atol <= 1e-4


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "t.toml"
    path.write_text(text)
    return path


BASE = ("[floors]\nfp32 = { cosine_min = 0.99 }\n[tiers.fp32]\ncosine_min = 0.9999\natol = 1e-4\nrtol = 1e-4\n"
        'reason = "a tier of these tests, looser than the packaged one"\n')


def test_overrides_apply_in_order(tmp_path: Path) -> None:
    th = Thresholds.load(_write(tmp_path, BASE + '[models.m.fp32]\natol = 1e-3\nreason = "fused kernels"\n'
                                '[cells."m-onnx:fp32"]\nrtol = 1e-2\nreason = "Erf approximation"\n'))
    tol = th.resolve("m", "onnx:fp32", "fp32")
    assert (tol.atol, tol.rtol) == (1e-3, 1e-2)
    assert th.resolve("m", "torchscript:trace", "fp32").rtol == 1e-4
    assert th.resolve("other", "onnx:fp32", "fp32").atol == 1e-4


@pytest.mark.parametrize("extra, message", [
    ('[models.m.fp32]\natol = 1e-3\n', "needs a written 'reason'"),
    ('[models.m.fp32]\ncosine_min = 0.9\nreason = "x"\n', "looser than the guides' floor"),
    ('[cells."m-t"]\nbogus = 1\nreason = "x"\n', "unknown keys"),
])
def test_bad_overrides_rejected(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(ThresholdError, match=message):
        Thresholds.load(_write(tmp_path, BASE + extra))


def test_bad_files_rejected(tmp_path: Path) -> None:
    with pytest.raises(ThresholdError, match="does not exist"):
        Thresholds.load(tmp_path / "missing.toml")
    with pytest.raises(ThresholdError, match="not valid TOML"):
        Thresholds.load(_write(tmp_path, "[tiers.fp32\n"))
    with pytest.raises(ThresholdError, match="looser than the guides' floor"):
        Thresholds.load(_write(tmp_path, BASE.replace("0.9999", "0.98")))
    with pytest.raises(ThresholdError, match="no tier 'int8'"):
        Thresholds.load(_write(tmp_path, BASE)).tier("int8")


def test_nan_never_reads_as_agreement_in_any_summary() -> None:
    """One output all NaN beside a healthy one: the cell's worst cosine and top-1 are nan in the result, its JSON, the
    matrix table, the JUnit properties and the HTML page's data (never 1.0, never '-')."""
    import json

    from export_harness.converters.checks.compare import compare
    from export_harness.converters.conformance import CellResult
    from export_harness.converters.report import html_report, matrix_report
    from export_harness.plugin.junit import flat_properties

    ref = {"logits": np.eye(3, 4, dtype=np.float32), "embedding": np.ones((3, 2), dtype=np.float32)}
    broken = {"logits": np.full((3, 4), np.nan, dtype=np.float32), "embedding": ref["embedding"].copy()}
    parity = compare(ref, broken, Tolerance(0.99, 1e-4, 1e-4, 0.99), batch=3, classifier_outputs=("logits",))
    assert [o.name for o in parity.outputs if not o.passed] == ["logits"]
    assert np.isnan(parity.outputs[0].top1_agreement)  # argmax of two NaN rows once "agreed"
    result = CellResult("m", "onnx:fp32", status="failed", stage="parity", parity=[parity])
    worst = result.worst()
    assert np.isnan(worst["cosine"]) and np.isnan(worst["top1"]) and worst["max_abs"] == np.inf
    record = result.to_dict()
    assert np.isnan(record["worst"]["cosine"])
    line = next(x for x in matrix_report.table_lines([{**record, "outcome": "FAILED"}]) if x.startswith("m-onnx"))
    assert " nan " in f" {line} " and "1.000000000" not in line
    props = dict(flat_properties("harness", record))
    assert props["harness.cosine"] == "nan" and props["harness.top1"] == "nan"
    page_data = html_report._finite(json.loads(json.dumps(record)))
    assert page_data["worst"]["cosine"] == "nan"
