"""The ``export-harness`` command: argument parsing, dispatch to the subcommands, exit codes.

Exit codes: 0 every cell passed or failed as declared (and the files were written), 1 a cell or the verified artifact
failed (or the run could not go on: one line on stderr, ``EXPORT_HARNESS_DEBUG=1`` for the traceback), 2 a usage error
(one line on stderr: ``export-harness: error: --weights bad.pt: ...``, no traceback).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import NoReturn

from export_harness.converters.cli import EXIT_FAILED, EXIT_USAGE, PROG, UsageError
from export_harness.converters.cli.session import add_common_arguments, add_model_arguments, first_line

DESCRIPTION = """\
The export guides' command lines on the export conformance harness: every artifact is the pytest matrix's own cell
(the same cache, weights, calibration split, thresholds and declared limitations), so it gets the same verdict.
Exit codes: 0 ok (every cell passed or failed as declared), 1 a cell or artifact failed, 2 usage error."""

EPILOG = """\
examples (docs/cli.md has each guide's command line with its output):
  export-harness export bst_cg_ap --weights best.pt --formats onnx:fp32 torchscript:trace --opset 13 \\
      --output-dir out --benchmark                                   # guide 000
  export-harness export alphazero_chess --weights ckpt.pt --formats onnx:fp32 --opset 11 --dynamic-batch \\
      --output-dir out                                               # guides 001 / 003
  export-harness quantize gcode_fingerprint --method fp16 int8 int8-static --compare --output-dir q  # guide 004
  export-harness benchmark sign_gru --formats onnx:fp32 torchscript:trace --batch-sizes 1 2 4 8 16 --json b.json
  export-harness verify out/tiny_ladeda-onnx_fp32.onnx --model tiny_ladeda
  export-harness report matrix-report.json --html report.html --markdown summary.md"""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one ``UsageError`` line (not argparse's usage block)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def _subcommand(sub: argparse._SubParsersAction, name: str, help_text: str, description: str,
                add: Callable[[argparse.ArgumentParser], None], *, model: bool = True) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help_text, description=description.replace("``", ""),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    if model:
        add_model_arguments(parser)
    add(parser)
    if model or name == "verify":
        add_common_arguments(parser)
    return parser


def build_parser() -> Parser:
    """The parser of every subcommand."""
    from export_harness.converters.cli import benchmark, diverge, export, quantize, report, setup, verify

    parser = Parser(prog=PROG, description=DESCRIPTION, epilog=EPILOG,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _subcommand(sub, "export", "export a model to the selected targets, verified, into a directory",
                export.__doc__ or "", export.add_arguments)
    _subcommand(sub, "quantize", "compression methods (fp16, int8, int8-static, ...) as verified artifacts, compared",
                quantize.__doc__ or "", quantize.add_arguments)
    _subcommand(sub, "benchmark", "latency percentiles, throughput and peak memory per target and batch size",
                benchmark.__doc__ or "", benchmark.add_arguments)
    _subcommand(sub, "verify", "parity of one artifact file against a model (exit 1 when it fails)",
                verify.__doc__ or "", verify.add_arguments, model=False)
    _subcommand(sub, "report", "a saved matrix report as HTML and Markdown", report.__doc__ or "",
                report.add_arguments, model=False)
    _subcommand(sub, "setup", "build the onnx-tf backend's pinned venv where the harness finds it (no tox)",
                setup.__doc__ or "", setup.add_arguments, model=False)
    _subcommand(sub, "diverge", "the first diverging op of a failing fp32 / fp16 cell and a standalone reproducer",
                diverge.__doc__ or "", diverge.add_arguments)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    logging.getLogger().setLevel(logging.ERROR)  # converters' root-logger chatter (ORT's quantizer) would break lines
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        from export_harness.converters.cli import benchmark, diverge, export, quantize, report, setup, verify

        commands = {"export": export.run, "quantize": quantize.run, "benchmark": benchmark.run,
                    "verify": verify.run, "report": report.run, "setup": setup.run, "diverge": diverge.run}
        return commands[args.command](args)
    except UsageError as exc:
        sys.stdout.flush()
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # not a cell failure (those are results): e.g. a task's dataset package missing
        if os.environ.get("EXPORT_HARNESS_DEBUG"):
            raise
        print(f"{PROG}: error: {first_line(exc)} (EXPORT_HARNESS_DEBUG=1 shows the traceback)", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
