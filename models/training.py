"""Reference weights: short, seeded CPU training of every zoo variant on its proxy task, cached by content hash.

Two recipes, chosen per family so the whole zoo trains in minutes on 2 cores:

- ``full``: every parameter is trained (TinyLaDeDa, the G-code encoder and decoder step).
- ``heads``: the seeded body is frozen and the output heads are fitted on the body's cached features (BST,
  sign models, chess). These bodies cost seconds per batch on a CPU; a fitted head over the seeded body is a
  real classifier with non-flat logits (random-feature training), which is what an accuracy gate needs.

BatchNorm running statistics and dropout are left in eval mode throughout (the zoo's BN stats are part of the
seeded model). The cache key hashes this file, the model's code and seeded weights, the task data and the torch
version; weights are written atomically under a per-key lock into ``<harness cache>/weights/``. A user
checkpoint (``--harness-weights`` / ``spec.build(weights=...)``) replaces the trained weights entirely.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import inspect
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from export_harness.converters.util.files import atomic_path, write_json_atomic
from export_harness.models import datasets
from export_harness.models.proxy_tasks import BUILTIN_TASKS, Arrays, ProxyTask, gcode_decoder_task
from export_harness.models.spec import ModelSpec, model_code_hash, run_torch
from export_harness.models.weights import state_dict_hash

TRAIN_SEED = 1234
TRAIN_THREADS = 2
"""torch threads while training: the float sums of a matmul depend on how many threads split them, so the same seed
gives other weights on another thread count (measured: alphazero_chess value_sign 0.8822 with 2 threads, 0.8722
with the one thread an xdist worker gets). Fixed, and part of the weights' cache key, so every machine and every
``-n`` trains the weights the stored accuracy baselines were measured on."""
HEADS: dict[str, tuple[str, ...]] = {
    "bst": ("mlp_head",),
    "sign_language": ("gloss_head", "category_head"),
    "alphazero_chess": ("policy_fc", "value_fc1"),
}
SHARED_WEIGHTS = {"tiny_ladeda_patch": "tiny_ladeda"}
"""Variants with identical state dicts trained once: the patch map shares the pooled model's weights."""


def weights_dir() -> Path:
    path = datasets.data_dir().parent / "weights"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _registry_spec(name: str) -> ModelSpec:
    from export_harness.models.registry import default_registry

    return default_registry(include_entry_points=False).get(name)


def training_key(spec: ModelSpec, task: ProxyTask) -> str:
    model = spec.build()
    recipe = "".join(inspect.getsource(f) for f in _recipe_functions(spec))
    parts = {"spec": spec.name, "recipe": recipe,
             "code": model_code_hash(model), "seeded": state_dict_hash(model), "data": task.data_hash,
             "torch": torch.__version__, "seed": TRAIN_SEED, "threads": TRAIN_THREADS}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _recipe_functions(spec: ModelSpec) -> list[Callable[..., Any]]:
    """The code a variant's training runs: its hash is part of the weights' cache key."""
    common: list[Callable[..., Any]] = [train, _fit, predict, _tensors]
    if spec.family in HEADS:
        return [*common, _train_heads, _cached_head_inputs]
    if spec.family == "tiny_ladeda":
        return [*common, _train_ladeda]
    return [*common, _train_fingerprint, _train_full_ce]


def reference_weights(spec: ModelSpec) -> tuple[Path, dict[str, Any]]:
    """(state_dict path, training record) of the trained reference weights; trains on a cache miss."""
    if spec.name in SHARED_WEIGHTS:
        return reference_weights(_registry_spec(SHARED_WEIGHTS[spec.name]))
    task = task_for(spec)
    key = training_key(spec, task)
    path = weights_dir() / f"{spec.name}-{key[:16]}.pt"
    record_path = path.with_suffix(".json")
    if path.is_file() and record_path.is_file():
        return path, {**json.loads(record_path.read_text()), "cached": True}
    with open(weights_dir() / f"{spec.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.is_file() and record_path.is_file():
            return path, {**json.loads(record_path.read_text()), "cached": True}
        t0 = time.perf_counter()
        model = spec.build()
        threads = torch.get_num_threads()
        torch.set_num_threads(TRAIN_THREADS)
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(TRAIN_SEED)
                recipe = train(spec, model, task)
        finally:
            torch.set_num_threads(threads)
        seconds = time.perf_counter() - t0
        model.eval()
        outputs = predict(spec, model, task.eval_inputs)
        record = {"model": spec.name, "key": key, "recipe": recipe, "train_seconds": round(seconds, 1),
                  "metrics": {m.name: m(outputs) for m in task.metrics},
                  "chance": {m.name: m.chance for m in task.metrics}, "n_eval": task.n_eval, "task": task.name}
        with atomic_path(path) as tmp:
            torch.save(model.state_dict(), tmp)
        write_json_atomic(record_path, record)
    return path, {**record, "cached": False}


def trained_model(spec: ModelSpec) -> nn.Module:
    """The spec's model with its trained reference weights, in eval mode."""
    return spec.build(reference_weights(spec)[0])


def predict(spec: ModelSpec, model: nn.Module, inputs: Arrays, batch: int = 32) -> Arrays:
    """Run the PyTorch model over ``inputs`` in batches; concatenated named outputs."""
    n = len(next(iter(inputs.values())))
    parts = [run_torch(spec, model, {k: v[i:i + batch] for k, v in inputs.items()}) for i in range(0, n, batch)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _tensors(spec: ModelSpec, inputs: Arrays, idx: np.ndarray | slice) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(np.ascontiguousarray(inputs[i.name][idx])) for i in spec.inputs)


# ------------------------------------------------------------------------------------------------------- tasks


_TASKS: dict[str, ProxyTask] = {}


def has_task(spec: ModelSpec) -> bool:
    """Whether ``spec`` has an accuracy task (its own ``extra["accuracy_task"]`` or a built-in one)."""
    return "accuracy_task" in spec.extra or spec.name in BUILTIN_TASKS or spec.name == "gcode_decoder_step"


def task_for(spec: ModelSpec) -> ProxyTask:
    """The spec's proxy task (cached per spec name): ``extra["accuracy_task"]`` first, then the built-ins."""
    if spec.name not in _TASKS:
        if "accuracy_task" in spec.extra:
            _TASKS[spec.name] = spec.extra["accuracy_task"]()
        elif spec.name == "gcode_decoder_step":
            _TASKS[spec.name] = gcode_decoder_task(gcode_memory_fn())
        elif spec.name in BUILTIN_TASKS:
            _TASKS[spec.name] = BUILTIN_TASKS[spec.name]()
        else:
            raise KeyError(f"{spec.name}: no proxy task (set ModelSpec.extra['accuracy_task'])")
    return _TASKS[spec.name]


def forget_task(name: str) -> None:
    """Drop one model's cached task (its data splits); ``task_for`` rebuilds it on the next call."""
    _TASKS.pop(name, None)


# ----------------------------------------------------------------------------------------------------- recipes


def has_recipe(spec: ModelSpec) -> bool:
    """Whether the harness knows how to train reference weights for ``spec`` (the zoo's families). A model without a
    recipe (a user's pretrained model, the common case) runs every suite on its weights as built or loaded."""
    if spec.name in SHARED_WEIGHTS:
        return True
    return (spec.family in HEADS or spec.family == "tiny_ladeda"
            or spec.name in ("gcode_fingerprint", "gcode_decoder_step"))


def train(spec: ModelSpec, model: nn.Module, task: ProxyTask) -> str:
    """Train ``model`` in place on ``task``; returns the recipe's name."""
    model.eval()
    if spec.family in HEADS:
        _train_heads(spec, model, task)
        return "heads:" + ",".join(HEADS[spec.family])
    if spec.family == "tiny_ladeda":
        _train_ladeda(model, task)
    elif spec.name == "gcode_fingerprint":
        _train_fingerprint(spec, model, task)
    elif spec.name == "gcode_decoder_step":
        _train_full_ce(spec, model, task, offset=5, epochs=8, lr=1e-3)
    else:
        raise KeyError(f"{spec.name}: no training recipe for family {spec.family!r}")
    return "full"


def _cached_head_inputs(spec: ModelSpec, model: nn.Module, task: ProxyTask, names: tuple[str, ...],
                        batch: int = 32) -> dict[str, torch.Tensor]:
    """Inputs of the named modules over the train split, captured with forward pre-hooks (no grad)."""
    store: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    modules = dict(model.named_modules())
    hooks = [modules[n].register_forward_pre_hook(lambda _m, args, n=n: store[n].append(args[0].detach().clone()))
             for n in names]
    try:
        n = len(task.train_labels)
        with torch.no_grad():
            for i in range(0, n, batch):
                model(*_tensors(spec, task.train_inputs, slice(i, i + batch)))
    finally:
        for h in hooks:
            h.remove()
    return {k: torch.cat(v) for k, v in store.items()}


def _fit(params: list[nn.Parameter], loss_fn: Callable[[np.ndarray], torch.Tensor], n: int, epochs: int,
         lr: float, batch: int = 64) -> None:
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    gen = np.random.default_rng(TRAIN_SEED)
    for _ in range(epochs):
        order = gen.permutation(n)
        for i in range(0, n, batch):
            loss = loss_fn(order[i:i + batch])
            opt.zero_grad()
            loss.backward()
            opt.step()


def _train_heads(spec: ModelSpec, model: nn.Module, task: ProxyTask) -> None:
    names = HEADS[spec.family]
    feats = _cached_head_inputs(spec, model, task, names)
    modules = dict(model.named_modules())
    y = torch.from_numpy(task.train_labels)
    if spec.family == "alphazero_chess":
        policy_rows = torch.nonzero(y[:, 0] >= 0).squeeze(1)
        value_rows = torch.nonzero(y[:, 1] != 2).squeeze(1)
        fc, fc1, fc2 = modules["policy_fc"], modules["value_fc1"], modules["value_fc2"]
        with torch.enable_grad():
            _fit(list(fc.parameters()), lambda b: F.nll_loss(F.log_softmax(fc(feats["policy_fc"][policy_rows[b]]), 1),
                                                             y[policy_rows[b], 0]), len(policy_rows), 12, 1e-3, 128)
            _fit(list(fc1.parameters()) + list(fc2.parameters()),
                 lambda b: F.mse_loss(torch.tanh(fc2(F.relu(fc1(feats["value_fc1"][value_rows[b]])))).squeeze(1),
                                      y[value_rows[b], 1].float()), len(value_rows), 60, 1e-3, 128)
        return
    offset = 1 if spec.family == "bst" else 0
    for name in names:
        head = modules[name]
        head.train()
        x = feats[name]
        with torch.enable_grad():
            _fit(list(head.parameters()), lambda b, head=head, x=x: F.cross_entropy(head(x[b]), y[b] + offset),
                 len(y), 150, 2e-3)
        head.eval()


def _train_ladeda(model: nn.Module, task: ProxyTask) -> None:
    x = torch.from_numpy(task.train_inputs["input"])
    y = torch.from_numpy(task.train_labels).float()
    with torch.enable_grad():
        _fit(list(model.parameters()), lambda b: F.binary_cross_entropy_with_logits(
            model(x[b]).reshape(len(b), -1).mean(1), y[b]), len(y), 4, 1e-2, 64)


def _train_fingerprint(spec: ModelSpec, model: nn.Module, task: ProxyTask) -> None:
    """Supervised cosine-classifier training of the fingerprint (the temporary class prototypes are dropped)."""
    y = torch.from_numpy(task.train_labels)
    protos = nn.Parameter(torch.randn(int(y.max()) + 1, 128) * 0.1)

    def loss(b: np.ndarray) -> torch.Tensor:
        fp, _ = model(*_tensors(spec, task.train_inputs, b))
        return F.cross_entropy(16.0 * F.normalize(fp, dim=-1) @ F.normalize(protos, dim=-1).T, y[b])

    with torch.enable_grad():
        _fit([*model.parameters(), protos], loss, len(y), 4, 1e-3, 32)


def _train_full_ce(spec: ModelSpec, model: nn.Module, task: ProxyTask, offset: int, epochs: int, lr: float) -> None:
    y = torch.from_numpy(task.train_labels)

    def loss(b: np.ndarray) -> torch.Tensor:
        out = model(*_tensors(spec, task.train_inputs, b))
        return F.cross_entropy(out[0] if isinstance(out, tuple) else out, y[b] + offset)

    with torch.enable_grad():
        _fit(list(model.parameters()), loss, len(y), epochs, lr, 32)


@functools.lru_cache(maxsize=1)
def _fingerprint_encoder() -> nn.Module:
    return trained_model(_registry_spec("gcode_fingerprint"))


def gcode_memory_fn() -> Callable[[Arrays], np.ndarray]:
    """Memory of the *trained* gcode_fingerprint encoder: the decoder-step task's input."""
    spec = _registry_spec("gcode_fingerprint")

    def memory(inputs: Arrays) -> np.ndarray:
        return predict(spec, _fingerprint_encoder(), inputs)["memory"].astype(np.float32)

    return memory
