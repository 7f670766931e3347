"""Strict option parsing: a bad value is a one-line usage error naming the option, never accepted or INTERNALERROR."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from export_harness.converters.checks.accuracy import BudgetError, Budgets
from export_harness.converters.checks.thresholds import ThresholdError, Thresholds
from export_harness.converters.latency import gate as latency_gate
from export_harness.converters.latency.session import BenchSettings
from export_harness.converters.registry import default_target_registry
from export_harness.models.registry import default_registry
from export_harness.plugin.latency import _batches, _positive

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("parse", "text", "message"), [
    (_positive(float), "-5", "expected a finite number > 0, got '-5'"),
    (_positive(float), "nan", "expected a finite number > 0, got 'nan'"),
    (_positive(float), "inf", "expected a finite number > 0, got 'inf'"),
    (_positive(float), "0", "expected a finite number > 0, got '0'"),
    (_positive(int, zero=True), "-1", "expected a finite number >= 0, got '-1'"),
    (_positive(int, zero=True), "two", "expected a int, got 'two'"),
    (_batches, "", "expected positive integers like 1,4,16, got ''"),
    (_batches, "1,0", "batch sizes must be positive, got '1,0'"),
])
def test_bad_option_values_are_rejected(parse, text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=message.replace("(", r"\(")):
        parse(text)


def test_good_option_values_parse() -> None:
    assert _positive(float)("2.5") == 2.5 and _positive(int, zero=True)("0") == 0
    assert _batches("1,4,16") == (1, 4, 16)


@pytest.mark.parametrize(("args", "message"), [
    (["--latency-seconds=-5", "--harness-hypothesis-profile=bogus"],
     "argument --latency-seconds: expected a finite number > 0, got '-5'"),
    (["--harness-hypothesis-profile=bogus"], "argument --harness-hypothesis-profile: invalid choice: 'bogus'"),
])
def test_bad_option_is_a_usage_error_not_an_internal_error(args: list[str], message: str) -> None:
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--co", "-q", *args,
                          "suites/test_declarations.py"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == pytest.ExitCode.USAGE_ERROR, run.stdout + run.stderr
    assert message in run.stderr
    assert "INTERNALERROR" not in run.stdout + run.stderr


# ----------------------------------------------------------------------- configuration files: strict at load

REASON = 'reason = "measured"\n'


@pytest.mark.parametrize(("text", "message"), [
    ("[tiers.fp32]\ncosine_min = nan\n", r"\[tiers.fp32\] cosine_min must be a finite number >= -1 and <= 1, got nan"),
    ("[tiers.fp32]\ntop1_min = nan\n", r"\[tiers.fp32\] top1_min must be a finite number"),
    ("[tiers.fp32]\natol = inf\n", r'atol must be a finite number >= 0, got inf \(to judge a tier on cosine alone '
                                   r'write atol = "unchecked"\)'),
    ('[cells."tiny_ladeda-onnx:fp32"]\natol = "unchecked"\n' + REASON, r"an override may raise atol, not switch"),
    ('[cells."tiny_ladeda-onnx:fp32"]\natol = -1.0\n' + REASON, r"atol must be a finite number >= 0, got -1.0"),
    ('[cells."tiny_ladeda-onnx:fp32"]\nthresh = 0.5\n' + REASON, r"unknown keys \['thresh'\]"),
    ("[tier.fp32]\natol = 1e-3\n", r"unknown sections \['tier'\]"),
    ("[models.tiny_ladeda.fp23]\natol = 1e-3\n" + REASON, r"no tier 'fp23'"),
    ("[floors]\nfp32 = { cosine_min = nan }\n", r"\[floors.fp32\] cosine_min must be a finite number"),
    # wrong shapes: a number where a table belongs is one line naming the file and the key, not a traceback
    ("[floors]\nfp32 = 0.5\n", r"thresholds\.toml: \[floors.fp32\] must be a table, got 0\.5"),
    ("tiers = 5\n", r"thresholds\.toml: \[tiers\] must be a table, got 5"),
    ("[models]\ntiny_ladeda = 1\n", r"\[models.tiny_ladeda\] must be a table, got 1"),
    # a whole tier loosened without a word
    ("[tiers.fp32]\ncosine_min = 0.99\n", r"\[tiers.fp32\] loosens the packaged tier \(cosine_min 0\.99"),
    ('[tiers.fp32]\natol = "unchecked"\n', r"\[tiers.fp32\] loosens the packaged tier \(atol 'unchecked'"),
    ("[tiers.fp32]\ntop1_min = 0.0\n", r"needs a written 'reason'"),
    ("[tiers.int8-dynamic]\ncosine_min = -1.0\n", r"\[tiers.int8-dynamic\] loosens the packaged tier"),
])
def test_thresholds_that_would_switch_a_gate_off_are_rejected_at_load(tmp_path: Path, text: str,
                                                                        message: str) -> None:
    path = tmp_path / "thresholds.toml"
    path.write_text(text)
    with pytest.raises(ThresholdError, match=message):
        Thresholds.load(path)


@pytest.mark.parametrize(("text", "message"), [
    ("[models.tiny_ladda.fp32]\natol = 1e-3\n" + REASON, r"\[models.tiny_ladda\]: no model 'tiny_ladda' is registered"),
    ('[cells."tiny_ladeda-onnx:fp33"]\natol = 1e-3\n' + REASON, r"no registered model-target cell of that name"),
    ('[cells."tiny_ladeda-onnx:fp32"]\ncosine_min = 0.5\n' + REASON,
     r"cell tiny_ladeda-onnx:fp32 would be looser than the floor: cosine_min 0.5 < floor"),
])
def test_threshold_overrides_must_name_registered_cells_and_keep_their_floor(tmp_path: Path, text: str,
                                                                            message: str) -> None:
    path = tmp_path / "thresholds.toml"
    path.write_text(text)
    thresholds = Thresholds.load(path)  # the file alone is well formed; the names need the registries
    with pytest.raises(ThresholdError, match=message):
        thresholds.check_names(default_registry(), default_target_registry())


@pytest.mark.parametrize(("text", "message"), [
    ('[methods."onnx:fp16"]\nthreshold = nan\n', r"threshold must be a finite number >= 0 and <= 100, got nan"),
    ('[methods."onnx:fp16"]\nthresh = 0.1\n', r"unknown keys \['thresh'\]"),
    ("[settings]\nconfidence = nan\n", r"confidence must be a finite number"),
    ("[setting]\nconfidence = 0.9\n", r"unknown keys \['setting'\]"),
    ('[models.bst."onnx:*"]\nthreshold = inf\n' + REASON, r"threshold must be a finite number >= 0 and <= 100, "
                                                           r"got inf"),
    ('[models.bst."onnx:*"]\nthreshold = 1e300\n' + REASON, r"threshold must be .* <= 100, got 1e\+300"),
    ("methods = 3\n", r"accuracy_budgets\.toml: \[methods\] must be a table, got 3"),
    ("[models]\nuser_tiny = 1\n", r"\[models.user_tiny\] must be a table, got 1"),
])
def test_budgets_that_would_switch_a_gate_off_are_rejected_at_load(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "accuracy_budgets.toml"
    path.write_text(text)
    with pytest.raises(BudgetError, match=message):
        Budgets.load(path)


def test_budget_overrides_must_name_registered_models(tmp_path: Path) -> None:
    path = tmp_path / "accuracy_budgets.toml"
    path.write_text('[models.bsst."onnx:*"]\nthreshold = 1.0\n' + REASON)
    with pytest.raises(BudgetError, match=r"no model 'bsst' is registered"):
        Budgets.load(path).check_names(default_registry())


@pytest.mark.parametrize("text", ['[cells."bst-onnx:int9*"]\nxfail = "x"\n',
                                  '[settings.unmeasured_targets]\n"*[onnx-tf]" = "x"\n'])
def test_a_budgets_file_that_still_declares_cells_says_where_they_moved(tmp_path: Path, text: str) -> None:
    path = tmp_path / "accuracy_budgets.toml"
    path.write_text(text)
    with pytest.raises(BudgetError, match=r"accuracy_budgets\.toml.*declared in expectations\.toml"):
        Budgets.load(path)


def test_shipped_and_repository_files_pass_the_strict_checks() -> None:
    models, targets = default_registry(), default_target_registry()
    Thresholds.load(ROOT / "baselines" / "thresholds.toml").check_names(models, targets)
    Budgets.load(ROOT / "baselines" / "accuracy_budgets.toml").check_names(models)


def test_a_file_that_is_not_utf8_or_of_the_wrong_shape_is_named(tmp_path: Path) -> None:
    not_text = tmp_path / "thresholds.toml"
    not_text.write_bytes(b"[tiers.fp32]\ncosine_min = 0.9999\n# \xff\xfe\n")
    with pytest.raises(ThresholdError, match=r"thresholds\.toml: not UTF-8 text \(byte \d+"):
        Thresholds.load(not_text)
    latency = tmp_path / "latency.toml"
    latency.write_text("gate = 3\n")
    with pytest.raises(ValueError, match=r"latency\.toml: \[gate\] must be a table, got 3"):
        latency_gate.load_toml(latency)


def test_a_tier_redefinition_with_a_reason_may_loosen_it(tmp_path: Path) -> None:
    path = tmp_path / "thresholds.toml"
    path.write_text('[tiers.fp32]\ncosine_min = 0.9999\nreason = "this project\'s outputs are probabilities"\n')
    assert Thresholds.load(path).tier("fp32").cosine_min == 0.9999


@pytest.mark.parametrize("text", ["[gate]\nmax_noise = nan\n", "[bench]\nseconds = inf\n",
                                  '[[budgets]]\nprofile = "cpu"\np99_ms = nan\n'])
def test_latency_numbers_must_be_finite(text: str) -> None:
    data = tomllib.loads(text)
    with pytest.raises(ValueError, match="must be a finite number"):
        latency_gate.GateConfig.from_mapping(data.get("gate", {}))
        BenchSettings.from_mapping(data.get("bench", {}))
        latency_gate.load_budgets(data.get("budgets", []))


def test_a_bad_project_file_stops_the_run_with_one_line_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "thresholds.toml"
    bad.write_text('[cells."tiny_ladeda-onnx:fp33"]\natol = 1e-3\nreason = "typo"\n')
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-p", "no:randomly",
                          f"--harness-thresholds={bad}", "suites/test_matrix.py", "-k", "tiny_ladeda-onnx:fp32"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    out = run.stdout + run.stderr
    assert run.returncode not in (0, 5), out
    assert f'[config] {bad} over' in out and "no registered model-target cell of that name" in out, out
    assert "INTERNALERROR" not in out and "Traceback" not in out and "During handling" not in out, out


def _collected(*args: str) -> list[str]:
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--co", "-q", *args],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return [line for line in run.stdout.splitlines() if "::" in line]


def test_one_tier_option_scopes_every_suite() -> None:
    smoke_models = {s.name for s in default_registry().specs() if s.smoke}
    files = ["suites/test_matrix.py", "suites/test_accuracy.py"]
    every = _collected(*files)
    smoke = _collected("--harness-tier=smoke", *files)
    assert 0 < len(smoke) < len(every)
    assert all(any(f"[{m}-" in node for m in smoke_models) for node in smoke), smoke[:5]
    assert len(_collected("--harness-tier=full", *files)) >= len(every)  # --accuracy-full's models join
    assert _collected("--harness-tier=smoke", "-m", "smoke", *files) == smoke
