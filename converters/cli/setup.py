"""``export-harness setup onnx-tf``: build the legacy onnx-tf venv where the harness finds it, without tox.

onnx-tf 1.10 only installs beside TensorFlow 2.15 / numpy 1.26 / onnx 1.14, which cannot share an environment with
the harness's stack, so its conversions run in a worker on a venv of its own. This builds that venv (pip from the
package registry, about a minute from a local mirror) at ``--dir`` (default: the location the onnx-tf backend looks
at when ``$HARNESS_ONNX_TF_PYTHON`` is unset) and checks that its modules import. Run again, it only checks.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import venv
from pathlib import Path

from export_harness.converters.cli import EXIT_FAILED, EXIT_OK, UsageError

BACKENDS = ("onnx-tf",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("backend", choices=BACKENDS, help="the backend whose environment to build")
    parser.add_argument("--dir", metavar="DIR", default=None,
                        help="where to build the venv (default: the backend's default location; elsewhere, set "
                             "$HARNESS_ONNX_TF_PYTHON to DIR/bin/python)")


def run(args: argparse.Namespace) -> int:
    from export_harness.converters.tf.isolation import python_has_modules
    from export_harness.converters.tf.tf_onnx_tf import DEFAULT_VENV, ONNX_TF, REQUIREMENTS

    target = Path(args.dir).expanduser() if args.dir else DEFAULT_VENV
    python = target / "bin" / "python"
    if target.exists() and not python.exists() and any(target.iterdir()):
        raise UsageError(f"--dir {target}: exists and is not a venv (no bin/python); choose an empty or new directory")
    if not python.exists():
        print(f"creating the {args.backend} venv in {target}", file=sys.stderr)
        venv.create(target, with_pip=True, clear=False)
    missing = python_has_modules(str(python), ONNX_TF.modules)
    if missing:
        print(f"installing {' '.join(REQUIREMENTS)}", file=sys.stderr)
        done = subprocess.run([str(python), "-m", "pip", "install", "-q", *REQUIREMENTS], check=False)
        if done.returncode != 0:
            print(f"export-harness setup: pip failed (exit {done.returncode}) in {target}", file=sys.stderr)
            return EXIT_FAILED
        missing = python_has_modules(str(python), ONNX_TF.modules)
        if missing:
            print(f"export-harness setup: {target} still lacks modules after pip: {missing}", file=sys.stderr)
            return EXIT_FAILED
    found = "found by the harness" if target == DEFAULT_VENV else f"set HARNESS_ONNX_TF_PYTHON={python}"
    print(f"{args.backend} ready: {python} ({found})")
    return EXIT_OK
