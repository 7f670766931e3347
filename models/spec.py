"""ModelSpec: one model variant, its I/O contract, data generators, accuracy task and training recipe.

Importable without pytest; a user's script can build a model and its inputs from a spec.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from export_harness.converters.util.recent import Recent
from export_harness.models.proxy_tasks import ProxyTask

BATCH = "B"
"""Symbol used in shapes for the (dynamic) batch dimension."""

Generator = Callable[..., np.ndarray]
"""(rng, batch) -> array with the input's full shape and dtype; an input with dynamic axes other than batch gets
their lengths as keywords named by the axis symbols: ``(rng, batch, frames=500)``."""


@dataclass(frozen=True)
class InputSpec:
    """One named model input: shape with symbolic batch, dtype, layout and a realistic value generator."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str
    layout: str
    generator: Generator
    value_range: tuple[float, float] | None = None
    description: str = ""

    def concrete_shape(self, batch: int, lengths: dict[str, int] | None = None) -> tuple[int, ...]:
        """The shape for ``batch`` samples, each dynamic axis at ``lengths[symbol]``."""
        lengths = lengths or {}
        out = []
        for d in self.shape:
            if d == BATCH:
                out.append(batch)
            elif isinstance(d, str):
                if d not in lengths:
                    raise ValueError(f"input {self.name!r}: no length given for its dynamic axis {d!r}")
                out.append(int(lengths[d]))
            else:
                out.append(int(d))
        return tuple(out)

    @property
    def batch_axis(self) -> int | None:
        return self.shape.index(BATCH) if BATCH in self.shape else None

    @property
    def length_axes(self) -> dict[int, str]:
        """Dynamic axes other than batch: axis -> symbol (``{1: "frames"}``)."""
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str) and d != BATCH}

    def generate(self, rng: np.random.Generator, batch: int, lengths: dict[str, int] | None = None) -> np.ndarray:
        symbols = {d: (lengths or {})[d] for d in self.length_axes.values() if d in (lengths or {})}
        arr = np.asarray(self.generator(rng, batch, **symbols))
        want = self.concrete_shape(batch, lengths)
        if arr.shape != want or arr.dtype != np.dtype(self.dtype):
            raise ValueError(
                f"input {self.name!r}: generator returned {arr.dtype}{list(arr.shape)}, "
                f"expected {self.dtype}{list(want)}"
            )
        return arr


@dataclass(frozen=True)
class OutputSpec:
    """One named model output. ``kind`` drives which parity metrics apply (top-1 for logits)."""

    name: str
    shape: tuple[int | str, ...]
    kind: str = "tensor"  # logits | log_probs | logit | embedding | map | value | tensor
    description: str = ""

    @property
    def is_classifier(self) -> bool:
        return self.kind in ("logits", "log_probs") and isinstance(self.shape[-1], int) and self.shape[-1] > 1


def star_match(pattern: str, name: str) -> bool:
    """The one pattern syntax of every declaration (expectations, budgets, thresholds, latency settings, markers):
    ``*`` matches any run of characters and everything else is literal, so target names with brackets are written as
    they are: ``tflite:int8-full[onnx2tf]``, ``bst*-tflite:*[litert-torch]``."""
    if "*" not in pattern:
        return pattern == name
    return re.fullmatch(".*".join(map(re.escape, pattern.split("*"))), name, flags=re.DOTALL) is not None


@dataclass(frozen=True)
class TrainingRecipe:
    """How the harness trains a model's reference weights on the model's ``task`` (see ``ModelSpec.training``).

    ``export_harness.models.training`` builds the seeded model, sets eval mode, seeds torch and numpy with its
    ``TRAIN_SEED`` and fixes its thread count, then calls ``fn(spec, model, task, **params)``, which trains ``model``
    in place. The source of ``fn`` and of ``code``, and ``params``, are part of the trained weights' cache key:
    changing any of them trains again."""

    fn: Callable[..., Any]
    """``fn(spec, model, task, **params) -> None``: trains ``model`` (a ``torch.nn.Module``) in place on ``task``
    (a ``ProxyTask``), e.g. ``export_harness.models.training.train_heads``."""
    params: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of ``fn``: the recipe's hyper-parameters (their ``repr`` is part of the cache key)."""
    name: str = "full"
    """Recorded as the training record's ``recipe`` (``"full"``, ``"heads:mlp_head"``)."""
    code: tuple[Callable[..., Any], ...] = ()
    """Further functions ``fn`` calls whose source must key the weights (the harness's own training loop,
    ``train`` / ``fit`` / ``predict`` / ``tensors``, always does)."""


@dataclass(frozen=True)
class ModelSpec:
    """One model variant of the zoo.

    ``factory`` builds the faithful module with deterministic (seeded) init; ``build`` adds eval mode
    and optional weights. ``reference_params`` is the learnable-parameter count the reference gives.
    """

    name: str
    family: str
    factory: Callable[[], nn.Module]
    inputs: tuple[InputSpec, ...]
    outputs: tuple[OutputSpec, ...]
    reference_params: int | None = None
    description: str = ""
    seed: int = 0
    smoke: bool = False
    slow: bool = False
    guide_opsets: tuple[int, ...] = ()
    """ONNX opsets the model's export guide uses: its ``TARGET@opsetN`` cells of the opset axis always run (every
    opset of the axis runs only with ``--harness-tier=full``)."""
    architecture: dict[str, Any] = field(default_factory=dict)
    """Architecture parameters a checkpoint's ``architecture`` entry must agree with before its weights load
    (guide 003: channels, blocks); keys the checkpoint does not state are not checked."""
    axis_lengths: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """Lengths of each dynamic non-batch axis (a symbol in an input shape, e.g. ``"frames"``): the first is the
    default every suite uses; the matrix also checks parity at the others (the axis is exported dynamic)."""
    guide_chains: tuple[str, ...] = ()
    """Target chains of ``export_harness.converters.variants`` the guide ships, at its guide opsets (``guide-int8``:
    guide 001's
    quantize -> ONNX -> TF -> TFLite)."""
    tolerances: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per-tier threshold overrides, e.g. ``{"fp32": {"atol": 1e-4}}``; each needs a reason in ``notes``."""
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    task: Callable[[], ProxyTask] | None = None
    """The model's accuracy task: a zero-argument callable returning an
    ``export_harness.models.proxy_tasks.ProxyTask`` (labelled train, calibration and eval splits and the task
    metrics), called once per process (``export_harness.models.training.task_for``). With a task, every compression
    method with a budget is an accuracy cell of the model and static quantizers calibrate on its calibration split;
    without one the model has no accuracy cells."""
    training: TrainingRecipe | None = None
    """How the harness trains the model's reference weights on ``task`` (:class:`TrainingRecipe`); None (a user's
    pretrained model, the common case): every suite runs the model with its weights as built or loaded."""
    weights_from: ModelSpec | None = None
    """Another variant with an identical state dict whose trained reference weights this one uses (trained once,
    under that variant's name), instead of a ``training`` recipe of its own: ``tiny_ladeda_patch`` uses
    ``tiny_ladeda``'s."""

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.outputs]

    @property
    def dynamic_batch(self) -> bool:
        return all(i.batch_axis is not None for i in self.inputs)

    def __post_init__(self) -> None:
        if "accuracy_task" in self.extra:
            raise ValueError(f"model {self.name!r}: extra['accuracy_task'] is no longer read; declare the accuracy "
                             "task as ModelSpec(task=make_task) (a zero-argument callable returning a ProxyTask)")
        if self.training is not None and self.weights_from is not None:
            raise ValueError(f"model {self.name!r}: set either training (its own recipe) or weights_from (another "
                             "variant's trained weights), not both")
        if self.training is not None and not isinstance(self.training, TrainingRecipe):
            raise TypeError(f"model {self.name!r}: training must be a TrainingRecipe, got "
                            f"{type(self.training).__name__}")
        symbols = {d for i in self.inputs for d in i.length_axes.values()}
        missing, unused = symbols - set(self.axis_lengths), set(self.axis_lengths) - symbols
        if missing or unused:
            raise ValueError(f"model {self.name!r}: axis_lengths must give the lengths of exactly the dynamic axes "
                             f"of its inputs {sorted(symbols)} (missing {sorted(missing)}, unknown {sorted(unused)})")
        for symbol, lengths in self.axis_lengths.items():
            if not lengths or not all(isinstance(n, int) and n > 0 for n in lengths):
                raise ValueError(f"model {self.name!r}: axis_lengths[{symbol!r}] must be positive ints, got {lengths}")

    def default_lengths(self) -> dict[str, int]:
        """Each dynamic non-batch axis at its default (first) length."""
        return {symbol: lengths[0] for symbol, lengths in self.axis_lengths.items()}

    def onnx_dynamic_axes(self) -> dict[str, dict[int, str]]:
        """``dynamic_axes`` of the TorchScript-based ONNX export: every input's batch axis and dynamic length axes,
        and the outputs' first axis when the whole model is batch-dynamic. Defined here, not in the exporter, so
        that which axes are dynamic is part of the model's contract (and of its cache key), not of the converter's
        code."""
        axes: dict[str, dict[int, str]] = {}
        for i in self.inputs:
            named = {i.batch_axis: "batch"} if i.batch_axis is not None else {}
            named.update(i.length_axes)
            if named:
                axes[i.name] = named
        for o in self.outputs:
            named = {0: "batch"} if self.dynamic_batch else {}
            named.update({i: d for i, d in enumerate(o.shape) if isinstance(d, str) and d != BATCH})
            if named:
                axes[o.name] = named
        return axes

    def export_dynamic_shapes(self) -> tuple[dict[int, Any] | None, ...]:
        """``dynamic_shapes`` of ``torch.export`` (the dynamo exporter), the same axes as :meth:`onnx_dynamic_axes`
        (one Dim per symbol, shared by the inputs that carry it)."""
        dims = {"batch": torch.export.Dim("batch", min=1, max=4096)}
        dims.update({s: torch.export.Dim(s, min=2, max=4 * max(n)) for s, n in self.axis_lengths.items()})
        shapes = []
        for i in self.inputs:
            named = {i.batch_axis: dims["batch"]} if i.batch_axis is not None else {}
            named.update({axis: dims[symbol] for axis, symbol in i.length_axes.items()})
            shapes.append(named or None)
        return tuple(shapes)

    def build(self, weights: str | Path | None = None, *, allow_pickle: bool = False) -> nn.Module:
        """Build the model in eval mode: seeded init, then ``weights`` (state_dict, checkpoint or TorchScript)."""
        with torch.random.fork_rng(devices=[]), _one_thread():
            torch.manual_seed(self.seed)
            model = self.factory()
        if weights is not None:
            from export_harness.models.weights import load_weights

            load_weights(model, weights, allow_pickle=allow_pickle, architecture=self.architecture)
        return model.eval()

    def example_inputs(self, batch: int = 1, seed: int = 0,
                       lengths: dict[str, int] | None = None) -> dict[str, np.ndarray]:
        """Realistic named inputs (numpy, PyTorch layout and dtype) for ``batch`` samples, dynamic axes at
        ``lengths`` (default: each axis's first length)."""
        lengths = {**self.default_lengths(), **(lengths or {})}
        key = [seed, batch, _stable_hash(self.name)]
        key += [n for s, n in sorted(lengths.items()) if n != self.axis_lengths[s][0]]  # default draws unchanged
        memo = (id(self.inputs), self.name, *key, *sorted(lengths.items()))

        def draw() -> tuple[Any, dict[str, np.ndarray]]:
            rng = np.random.default_rng(key)
            return self.inputs, {spec.name: spec.generate(rng, batch, lengths) for spec in self.inputs}

        return {name: array.copy() for name, array in _EXAMPLE_INPUTS.get(memo, draw)[1].items()}


_EXAMPLE_INPUTS: Recent[tuple[Any, dict[str, np.ndarray]]] = Recent(8)
"""The last few ``example_inputs`` draws of this process (every target of a model runs on the same probes, and a
generator may run a model: the G-code decoder step's memory comes from an encoder). The key holds the spec's input
declarations by identity; the value keeps them alive, so an id is never reused while its entry exists."""


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Seeded init must not depend on the caller's thread count: ``orthogonal_`` (a QR) rounds differently with one
    and two threads (sign_gru's ``weight_hh`` moved by 2e-7, so its weights' identity changed with the threads)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def count_parameters(model: nn.Module) -> int:
    """Learnable parameters, each shared tensor counted once (BN running stats are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters())


def model_code_hash(model: nn.Module) -> str:
    """sha256 of the model's own code: the source of each of its (non-library) module classes, their project base
    classes, and the project functions, classes and constants they reference by name, followed transitively.

    Code elsewhere in the same file (another model, a helper nothing here calls, a test) does not enter the key, so
    editing a user's ``conftest.py`` re-converts only the models whose code changed. Library code (torch, anything
    installed in site-packages or the standard library) is covered by the converter versions in the cache key."""
    import hashlib

    digest = hashlib.sha256()
    seen: set[int] = set()
    for cls in sorted({type(m) for m in model.modules()}, key=lambda c: (c.__module__, c.__qualname__)):
        _hash_code_object(cls, digest, seen)
    return digest.hexdigest()


@functools.cache
def _library_dirs() -> tuple[str, ...]:
    import sysconfig

    paths = sysconfig.get_paths()
    return paths["stdlib"], paths["purelib"], paths["platlib"]


def _is_project_code(obj: Any) -> bool:
    import inspect
    import sys

    module = sys.modules.get(getattr(obj, "__module__", None) or "")
    try:
        path = inspect.getsourcefile(obj) or ""
    except TypeError:
        return False
    if module is None or not path:
        return False
    return not (path.startswith(_library_dirs()) or "site-packages" in path or "dist-packages" in path)


def _code_names(obj: Any) -> set[str]:
    """Global names a function's or class's code refers to (nested functions, comprehensions and methods too)."""
    import types

    names: set[str] = set()
    codes = []
    if isinstance(obj, type):
        for value in vars(obj).values():
            value = getattr(value, "__func__", value)  # classmethod / staticmethod
            if isinstance(value, property):
                codes += [f.__code__ for f in (value.fget, value.fset, value.fdel) if f is not None]
            elif isinstance(value, types.FunctionType):
                codes.append(value.__code__)
    elif isinstance(obj, types.FunctionType):
        codes.append(obj.__code__)
    while codes:
        code = codes.pop()
        names.update(code.co_names)
        codes += [c for c in code.co_consts if isinstance(c, types.CodeType)]
    return names


def _hash_code_object(obj: Any, digest: Any, seen: set[int]) -> None:
    import inspect
    import sys

    if id(obj) in seen or not _is_project_code(obj):
        return
    seen.add(id(obj))
    try:
        source = inspect.getsource(obj)
    except (OSError, TypeError):
        source = getattr(obj, "__qualname__", repr(obj))
    digest.update(f"{obj.__qualname__}\n{source}".encode())
    if isinstance(obj, type):
        for base in obj.__mro__[1:]:
            _hash_code_object(base, digest, seen)
    namespace = vars(sys.modules[obj.__module__])
    for name in sorted(_code_names(obj)):
        value = namespace.get(name)
        constant = isinstance(value, (int, float, str, bytes, bool, tuple, frozenset))
        if constant or (value is None and name in namespace):
            digest.update(f"{name}={value!r}\n".encode())
        elif inspect.isfunction(value) or inspect.isclass(value):
            _hash_code_object(value, digest, seen)


def to_torch(inputs: dict[str, np.ndarray], names: Sequence[str]) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(np.ascontiguousarray(inputs[n])) for n in names)


def run_torch(spec: ModelSpec, model: nn.Module, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run the PyTorch reference on named numpy inputs; returns named numpy outputs."""
    with torch.inference_mode():
        out = model(*to_torch(inputs, spec.input_names))
    outs = out if isinstance(out, (tuple, list)) else (out,)
    if len(outs) != len(spec.outputs):
        raise ValueError(f"{spec.name}: model returned {len(outs)} outputs, spec declares {len(spec.outputs)}")
    return {o.name: t.detach().cpu().numpy() for o, t in zip(spec.outputs, outs, strict=True)}


def _stable_hash(text: str) -> int:
    import zlib

    return zlib.crc32(text.encode())
