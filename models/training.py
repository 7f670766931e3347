"""Reference weights: short, seeded CPU training of a model on its proxy task, cached by content hash.

A model declares both on its spec: ``ModelSpec.task`` (a zero-argument callable returning a ``ProxyTask``) and
``ModelSpec.training`` (a :class:`~export_harness.models.spec.TrainingRecipe`: the training function and its
hyper-parameters), or ``ModelSpec.weights_from`` (another variant whose trained weights it shares). This module
knows no model by name: the bundled zoo declares its recipes on its specs like any user model. The zoo uses two
kinds of recipe, so the whole zoo trains in minutes on 2 cores:

- full: every parameter is trained (TinyLaDeDa, the G-code encoder and decoder step, :func:`train_full_ce`).
- heads: the seeded body is frozen and the output heads are fitted on the body's cached features (BST,
  sign models: :func:`train_heads`; chess: its family's policy / value recipe). These bodies cost seconds per batch
  on a CPU; a fitted head over the seeded body is a real classifier with non-flat logits (random-feature training),
  which is what an accuracy gate needs.

BatchNorm running statistics and dropout are left in eval mode throughout (the zoo's BN stats are part of the
seeded model). The cache key hashes the recipe's code and parameters, the model's code and seeded weights, the task
data and the torch version; weights are written atomically under a per-key lock into ``<harness cache>/weights/``.
A user checkpoint (``--harness-weights`` / ``spec.build(weights=...)``) replaces the trained weights entirely.
"""

from __future__ import annotations

import fcntl
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
from export_harness.models.proxy_tasks import Arrays, ProxyTask
from export_harness.models.spec import ModelSpec, TrainingRecipe, model_code_hash, run_torch
from export_harness.models.weights import state_dict_hash

TRAIN_SEED = 1234
TRAIN_THREADS = 2
"""torch threads while training: the float sums of a matmul depend on how many threads split them, so the same seed
gives other weights on another thread count (measured: alphazero_chess value_sign 0.8822 with 2 threads, 0.8722
with the one thread an xdist worker gets). Fixed, and part of the weights' cache key, so every machine and every
``-n`` trains the weights the stored accuracy baselines were measured on."""


def weights_dir() -> Path:
    path = datasets.data_dir().parent / "weights"
    path.mkdir(parents=True, exist_ok=True)
    return path


def training_key(spec: ModelSpec, task: ProxyTask) -> str:
    recipe = _recipe(spec)
    model = spec.build()
    code = "".join(inspect.getsource(f) for f in recipe_functions(recipe))
    parts = {"spec": spec.name, "recipe": code, "params": repr(sorted(recipe.params.items())),
             "code": model_code_hash(model), "seeded": state_dict_hash(model), "data": task.data_hash,
             "torch": torch.__version__, "seed": TRAIN_SEED, "threads": TRAIN_THREADS}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def recipe_functions(recipe: TrainingRecipe) -> list[Callable[..., Any]]:
    """The code a recipe's training runs: its hash is part of the weights' cache key."""
    return [train, fit, predict, tensors, recipe.fn, *recipe.code]


def _recipe(spec: ModelSpec) -> TrainingRecipe:
    if spec.training is None:
        raise KeyError(f"{spec.name}: no training recipe (set ModelSpec.training or ModelSpec.weights_from)")
    return spec.training


def reference_weights(spec: ModelSpec) -> tuple[Path, dict[str, Any]]:
    """(state_dict path, training record) of the trained reference weights; trains on a cache miss."""
    if spec.weights_from is not None:
        return reference_weights(spec.weights_from)
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


def tensors(spec: ModelSpec, inputs: Arrays, idx: np.ndarray | slice) -> tuple[torch.Tensor, ...]:
    """The rows ``idx`` of named ``inputs`` as torch tensors in the spec's input order (a recipe's batch)."""
    return tuple(torch.from_numpy(np.ascontiguousarray(inputs[i.name][idx])) for i in spec.inputs)


def trained_outputs(spec: ModelSpec, output: str) -> Callable[[Arrays], np.ndarray]:
    """``inputs -> outputs[output]`` (float32) of ``spec``'s model with its *trained* reference weights, loaded (and
    trained on a cache miss) on the first call: a task built on another model's outputs (the G-code decoder step's
    memory comes from the trained encoder) declares it from the spec it depends on."""
    loaded: list[nn.Module] = []

    def outputs(inputs: Arrays) -> np.ndarray:
        if not loaded:
            loaded.append(trained_model(spec))
        return predict(spec, loaded[0], inputs)[output].astype(np.float32)

    return outputs


# ------------------------------------------------------------------------------------------------------- tasks


_TASKS: dict[str, ProxyTask] = {}


def has_task(spec: ModelSpec) -> bool:
    """Whether ``spec`` declares an accuracy task (``ModelSpec.task``)."""
    return spec.task is not None


def task_for(spec: ModelSpec) -> ProxyTask:
    """The spec's proxy task, ``spec.task()``, built once per process (cached per spec name)."""
    if spec.name not in _TASKS:
        if spec.task is None:
            raise KeyError(f"{spec.name}: no proxy task (set ModelSpec.task)")
        _TASKS[spec.name] = spec.task()
    return _TASKS[spec.name]


def forget_task(name: str) -> None:
    """Drop one model's cached task (its data splits); ``task_for`` rebuilds it on the next call."""
    _TASKS.pop(name, None)


# ----------------------------------------------------------------------------------------------------- recipes


def has_recipe(spec: ModelSpec) -> bool:
    """Whether the harness can train reference weights for ``spec``: it declares a ``training`` recipe, or shares
    the weights of a variant that does (``weights_from``). A model without one (a user's pretrained model, the
    common case) runs every suite on its weights as built or loaded."""
    if spec.weights_from is not None:
        return has_recipe(spec.weights_from)
    return spec.training is not None


def train(spec: ModelSpec, model: nn.Module, task: ProxyTask) -> str:
    """Train ``model`` in place on ``task`` with the spec's recipe; returns the recipe's name."""
    model.eval()
    recipe = _recipe(spec)
    recipe.fn(spec, model, task, **recipe.params)
    return recipe.name


def cached_head_inputs(spec: ModelSpec, model: nn.Module, task: ProxyTask, names: tuple[str, ...],
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
                model(*tensors(spec, task.train_inputs, slice(i, i + batch)))
    finally:
        for h in hooks:
            h.remove()
    return {k: torch.cat(v) for k, v in store.items()}


def fit(params: list[nn.Parameter], loss_fn: Callable[[np.ndarray], torch.Tensor], n: int, epochs: int,
        lr: float, batch: int = 64) -> None:
    """AdamW over ``params``: ``epochs`` passes over ``n`` rows in seeded random order, ``loss_fn(row indices)``."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    gen = np.random.default_rng(TRAIN_SEED)
    for _ in range(epochs):
        order = gen.permutation(n)
        for i in range(0, n, batch):
            loss = loss_fn(order[i:i + batch])
            opt.zero_grad()
            loss.backward()
            opt.step()


def train_heads(spec: ModelSpec, model: nn.Module, task: ProxyTask, heads: tuple[str, ...], offset: int = 0,
                epochs: int = 150, lr: float = 2e-3) -> None:
    """Fit each named classifier head (cross-entropy on ``labels + offset``) on the frozen body's cached features."""
    feats = cached_head_inputs(spec, model, task, heads)
    modules = dict(model.named_modules())
    y = torch.from_numpy(task.train_labels)
    for name in heads:
        head = modules[name]
        head.train()
        x = feats[name]
        with torch.enable_grad():
            fit(list(head.parameters()), lambda b, head=head, x=x: F.cross_entropy(head(x[b]), y[b] + offset),
                len(y), epochs, lr)
        head.eval()


def heads_recipe(*heads: str, offset: int = 0) -> TrainingRecipe:
    """The recipe fitting the named classifier heads over the frozen seeded body (:func:`train_heads`)."""
    return TrainingRecipe(train_heads, {"heads": heads, "offset": offset}, name="heads:" + ",".join(heads),
                          code=(cached_head_inputs,))


def train_full_ce(spec: ModelSpec, model: nn.Module, task: ProxyTask, offset: int, epochs: int, lr: float) -> None:
    """Train every parameter with cross-entropy of the (first) output against ``labels + offset``."""
    y = torch.from_numpy(task.train_labels)

    def loss(b: np.ndarray) -> torch.Tensor:
        out = model(*tensors(spec, task.train_inputs, b))
        return F.cross_entropy(out[0] if isinstance(out, tuple) else out, y[b] + offset)

    with torch.enable_grad():
        fit(list(model.parameters()), loss, len(y), epochs, lr, 32)
