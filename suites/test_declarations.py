"""Expected-failure declarations that depend on the CPU, and accuracy targets skipped as unmeasured."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from export_harness.converters.checks.accuracy import Budgets
from export_harness.converters.util.cpu import cpu_flags
from export_harness.models.spec import Limitation


@pytest.fixture
def flags(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """Set this process's CPU flags for one test (``$HARNESS_CPU_FLAGS``), restoring the cache afterwards."""

    def use(value: str) -> None:
        monkeypatch.setenv("HARNESS_CPU_FLAGS", value)
        cpu_flags.cache_clear()

    yield use
    monkeypatch.undo()
    cpu_flags.cache_clear()


def test_cpu_conditional_limitation_applies_only_without_the_flags(flags) -> None:
    lim = Limitation("onnx:int8-dynamic", "u8s8 saturation", cpu_lacks=("avx512_vnni", "avx_vnni"))
    flags("fma avx2")
    assert lim.matches("onnx:int8-dynamic")
    flags("avx2 avx512f avx512_vnni")
    assert not lim.matches("onnx:int8-dynamic"), "on a VNNI CPU the cell must pass: the declaration does not hold"
    flags("avx2 avx_vnni")
    assert not lim.matches("onnx:int8-dynamic")
    assert Limitation("onnx:int8-dynamic", "always").matches("onnx:int8-dynamic")


def test_cpu_flags_are_read_from_proc_cpuinfo(flags, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HARNESS_CPU_FLAGS", raising=False)
    cpu_flags.cache_clear()
    found = cpu_flags()
    with open("/proc/cpuinfo") as fh:
        line = next(ln for ln in fh if ln.startswith("flags"))
    assert found == frozenset(line.split(":", 1)[1].split())


def test_budget_xfail_with_cpu_condition_and_unmeasured_targets(flags) -> None:
    budgets = Budgets({
        "settings": {"unmeasured_targets": {"*[onnx-tf]": "not measured yet"}},
        "methods": {"*": {"threshold": 1.0}},
        "cells": {"m-onnx:int8-dynamic": {"xfail": "saturation", "match": "drop", "cpu_lacks": ["avx512_vnni"]},
                  "m-onnx:fp16": {"xfail": "always", "cpu_lacks": "avx512_vnni"}},
    })
    flags("avx2")
    assert budgets.expected_failure("m-onnx:int8-dynamic").cpu_lacks == ("avx512_vnni",)
    assert budgets.expected_failure("m-onnx:fp16").cpu_lacks == ("avx512_vnni",)
    flags("avx2 avx512_vnni")
    assert budgets.expected_failure("m-onnx:int8-dynamic") is None
    assert budgets.unmeasured("tflite:fp16[onnx-tf]") == "not measured yet"
    assert budgets.unmeasured("tflite:fp16[onnx2tf]") is None
