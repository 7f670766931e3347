"""Strict option parsing: a bad value is a one-line usage error naming the option, never accepted or INTERNALERROR."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from suites.plugin.latency import _batches, _positive

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
