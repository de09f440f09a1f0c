"""The ``dapo`` command line: ``predict``, ``train`` and ``evaluate`` on one's own images or a benchmark.

``dapo`` (the console script of ``pyproject.toml``) and ``python -m dapo`` call :func:`main`.
Exit status: 0 done; 1 done, but some images could not be read (each was reported by path
and skipped); 2 a bad argument or input file (one line naming it; no output file written); 130
interrupted (outputs are written atomically, so none is left half-written).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from dapo import __version__
from dapo.cli.common import HelpFormatter, UsageError, warnings_as_lines

DESCRIPTION = """\
DAPO: zero-shot multi-type anomaly detection and segmentation with any list of defect names.

  dapo predict IMAGES... --defects "scratch,hole"   maps, per-type masks, overlays, predictions.csv
  dapo train --dataset folder --root DIR --out DIR  train on one's own images (or a benchmark)
  dapo evaluate --checkpoint PATH --dataset ... --root DIR --out DIR   metric tables

`dapo COMMAND --help` describes each. Defaults run the compact synthetic backbone on the CPU.
"""


def build_parser() -> argparse.ArgumentParser:
    from dapo.cli import evaluate, predict, train

    parser = argparse.ArgumentParser(prog="dapo", description=DESCRIPTION, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"dapo {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    predict.add_parser(subparsers)
    train.add_parser(subparsers)
    evaluate.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``dapo`` with ``argv`` (default: the process's arguments); returns the exit status."""
    from dapo.cli.config import expand_run_file

    parser = build_parser()
    try:  # `train --config FILE`: the file's options and fields, as if typed after `train`
        argv = expand_run_file([str(a) for a in (sys.argv[1:] if argv is None else argv)])
    except UsageError as error:
        print(f"dapo train: error: {error}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)  # argparse exits with status 2 on a bad argument
    with warnings_as_lines(sys.stderr):
        try:
            return args.run(args)
        except UsageError as error:
            print(f"dapo {args.command}: error: {error}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"dapo {args.command}: interrupted (files written so far are complete; no file is half-written)",
                  file=sys.stderr)
            return 130


def console() -> None:
    """Entry point of the console script: exit with :func:`main`'s status."""
    sys.exit(main())
