"""Load user weights into a zoo model: state_dict files, checkpoint dicts, or TorchScript archives.

Safe by default: ``torch.load(..., weights_only=True)``. Full pickles need an explicit ``allow_pickle=True``.
Every failure is one ``WeightsError`` line naming the file and the first offending key.
"""

from __future__ import annotations

import hashlib
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

CHECKPOINT_KEYS = ("model_state_dict", "state_dict", "model")
"""Keys under which the guides' checkpoints nest the state dict, tried in this order."""


class WeightsError(ValueError):
    """A weights file that cannot be loaded into the model; the message names the file and the key."""


def _is_torchscript_archive(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any("/code/" in name for name in zf.namelist())


def read_state_dict(path: str | Path, *, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Read a state dict from a state_dict file, a checkpoint dict or a TorchScript file."""
    return read_checkpoint(path, allow_pickle=allow_pickle)[0]


def read_checkpoint(path: str | Path, *, allow_pickle: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, the checkpoint's ``architecture`` entry or {}) of a state_dict file, a checkpoint dict or a
    TorchScript file."""
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"{path}: weights file does not exist")
    if not path.is_file():
        raise WeightsError(f"{path}: expected a weights file, found a directory")
    try:
        if _is_torchscript_archive(path):
            return dict(torch.jit.load(str(path), map_location="cpu").state_dict()), {}
        obj = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as exc:
        if not allow_pickle and "Unsupported global" in str(exc):
            raise WeightsError(
                f"{path}: holds pickled Python objects beyond tensors and was refused (weights_only=True); "
                "re-save it as a state_dict, or pass allow_pickle=True (--harness-allow-pickle) if you trust the file"
            ) from exc
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({_first_line(exc)})") from exc
    except Exception as exc:
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({_first_line(exc)})") from exc
    architecture = obj.get("architecture") if isinstance(obj, Mapping) else None
    return _extract_state_dict(obj, path), dict(architecture) if isinstance(architecture, Mapping) else {}


def check_architecture(path: Path, stated: Mapping[str, Any], model: Mapping[str, Any]) -> None:
    """Guide 003's compatibility check: every parameter both the checkpoint and the model state must agree."""
    for key in (k for k in model if k in stated):
        if stated[key] != model[key]:
            raise WeightsError(f"{path}: architecture mismatch, {key}: checkpoint {stated[key]!r}, "
                               f"model {model[key]!r}")


def _extract_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, nn.Module):
        return dict(obj.state_dict())
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path}: expected a state_dict or checkpoint dict, found {type(obj).__name__}")
    for key in CHECKPOINT_KEYS:
        nested = obj.get(key)
        if isinstance(nested, nn.Module):
            return dict(nested.state_dict())
        if isinstance(nested, Mapping):
            return _extract_state_dict(nested, path)
    bad = next((k for k, v in obj.items() if not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise WeightsError(
            f"{path}: key {bad!r} is not a tensor; expected a state_dict or a checkpoint with one of "
            f"{', '.join(CHECKPOINT_KEYS)}"
        )
    state = dict(obj)
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def load_weights(model: nn.Module, path: str | Path, *, allow_pickle: bool = False,
                 architecture: Mapping[str, Any] | None = None) -> nn.Module:
    """Load ``path`` into ``model`` strictly; mismatches raise WeightsError naming the first offending key. With
    ``architecture`` (the model's parameters), a checkpoint's ``architecture`` entry is checked against it first."""
    path = Path(path)
    state, stated = read_checkpoint(path, allow_pickle=allow_pickle)
    if architecture:
        check_architecture(path, stated, architecture)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing:
        raise WeightsError(f"{path}: missing key {missing[0]!r} ({len(missing)} missing in total)")
    if unexpected:
        raise WeightsError(f"{path}: unexpected key {unexpected[0]!r} ({len(unexpected)} unexpected in total)")
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise WeightsError(
                f"{path}: shape mismatch for key {key!r}: file has {list(state[key].shape)}, "
                f"model expects {list(tensor.shape)}"
            )
    model.load_state_dict(state, strict=True)
    return model


def state_dict_hash(model: nn.Module) -> str:
    """sha256 over every parameter and buffer (names, dtypes, shapes, bytes): the weights' identity."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
