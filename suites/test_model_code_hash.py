"""The model part of the cache key: the model's own code, not the file it lives in."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path

from export_harness.models.spec import model_code_hash

SOURCE = '''
from torch import nn

WIDTH = 8


def scale(x):
    return x * 2


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, WIDTH)

    def forward(self, x):
        return scale(self.fc(x))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block()

    def forward(self, x):
        return self.block(x)


class Other(nn.Module):
    def forward(self, x):
        return x


def unrelated():
    return "a"
'''


def _hash(tmp_path: Path, source: str, tag: str) -> str:
    path = tmp_path / f"user_models_{tag}.py"
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    try:
        spec.loader.exec_module(module)
        return model_code_hash(module.Net())
    finally:
        del sys.modules[path.stem]


def test_only_the_models_own_code_enters_the_key(tmp_path: Path) -> None:
    base = _hash(tmp_path, SOURCE, "base")
    assert _hash(tmp_path, SOURCE, "again") == base  # the module's name and path are not part of it
    untouched = {
        "unrelated function": SOURCE.replace('return "a"', 'return "b"'),
        "another model": SOURCE.replace("return x\n", "return x + 1\n"),
        "a new helper": SOURCE + "\n\ndef helper():\n    return 1\n",
    }
    for what, source in untouched.items():
        assert _hash(tmp_path, source, what.replace(" ", "_")) == base, what
    changed = {
        "the class": SOURCE.replace("return self.block(x)", "return self.block(x) + 0"),
        "a submodule's class": SOURCE.replace("nn.Linear(4, WIDTH)", "nn.Linear(4, WIDTH, bias=False)"),
        "a called helper": SOURCE.replace("return x * 2", "return x * 3"),
        "a referenced constant": SOURCE.replace("WIDTH = 8", "WIDTH = 9"),
    }
    for what, source in changed.items():
        assert _hash(tmp_path, source, what.replace(" ", "_").replace("'", "")) != base, what
