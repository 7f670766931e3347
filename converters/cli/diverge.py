"""Say where an fp32 / fp16 artifact computes something else: the cell is run as the matrix runs it and, when it fails
at parity, the first diverging ONNX op through its converter is found by bisection, reduced to the smallest sub-graph
that still diverges, and written as a standalone reproducer (model.onnx, inputs.npz, expected.npz, repro.py, ISSUE.md).
Results are cached with the artifact (docs/divergence.md). Exit 0 when an op is named, 1 when none is (the reason is
printed) or the cell does not fail at parity, 2 on a usage error.

With --table PATH instead of MODEL TARGET: every fp32 / fp16 cell the expectations declare as failing at parity,
explained, as one Markdown table (docs/results/miscompiles.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from export_harness.converters.cli import EXIT_FAILED, EXIT_OK, PROG, UsageError
from export_harness.converters.cli.session import load_model, open_session
from export_harness.converters.util.files import write_text_atomic


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="TARGET", nargs="?", default=None,
                        help="the cell's target, e.g. 'tflite:fp32[onnx2tf]', 'onnx:fp16'")
    parser.add_argument("--table", metavar="PATH", type=Path, default=None,
                        help="instead of one cell: every declared fp32 / fp16 parity failure, as a Markdown table")
    parser.add_argument("--out", metavar="DIR", type=Path, default=None,
                        help="also copy the reproducer directory here (it stays in the cache either way)")
    parser.add_argument("--standalone", choices=("venv", "interpreter", "none"), default="venv",
                        help="where the written repro.py runs once more to confirm it reproduces: a fresh venv "
                             "holding only its requirements.txt (default; made once per set of pins, from the "
                             "package registry), the backend's interpreter, or nowhere")
    parser.add_argument("--no-standalone", dest="standalone", action="store_const", const="none",
                        help="the same as --standalone none")


def run(args: argparse.Namespace) -> int:
    from export_harness.converters.divergence.explain import DivergenceError, explain_cell

    if args.table is not None:
        return _table(args)
    if args.model is None or args.target is None:
        raise UsageError("diverge needs MODEL and TARGET (or --table PATH)")
    session, spec = open_session(args)
    if args.target not in session.targets.names():
        raise UsageError(f"TARGET {args.target!r}: no such target (e.g. 'tflite:fp32[onnx2tf]', 'onnx:fp16')")
    load_model(session, spec)
    try:
        result = explain_cell(session, spec, args.target, out=args.out, standalone=args.standalone)
    except DivergenceError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(result.report())
    return EXIT_OK if result.first_op is not None else EXIT_FAILED


def _table(args: argparse.Namespace) -> int:
    from export_harness.converters.divergence import table

    session, _ = open_session(_without_model(args))
    cells = table.declared_parity_failures(session, session.expectations)
    if not cells:
        raise UsageError("no fp32 / fp16 cell is declared as failing at parity: nothing to explain")

    def progress(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    rows = table.explain_all(session, cells, progress, standalone=args.standalone)
    write_text_atomic(args.table, table.render(rows, f"export-harness diverge --table {args.table}"))
    print(args.table)
    return EXIT_OK


def _without_model(args: argparse.Namespace) -> argparse.Namespace:
    """The session of every zoo model: the first one stands in for MODEL (open_session needs one)."""
    from export_harness.models.registry import default_registry

    copy = argparse.Namespace(**vars(args))
    copy.model = copy.model or default_registry().names()[0]
    return copy
