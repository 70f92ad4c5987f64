"""The ``napari-comir`` command: train, infer, register, apply, models, demo, batch.

One module per sub-command, each adding its options (``add_parser``) and running them
(``run``); user errors print one line and exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from . import _apply, _batch, _demo, _infer, _models, _register, _train
from ._output import silence_output

#: The sub-commands, in the order ``napari-comir --help`` lists them.
COMMANDS = (_train, _infer, _register, _apply, _models, _demo, _batch)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-comir", description="Multimodal image registration with CoMIRs "
        "(contrastive multimodal image representations).")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; user errors print one line and exit with status 2, never a traceback."""
    from ..core.errors import ComirError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ComirError as exc:
        print(f"napari-comir {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"napari-comir {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `napari-comir batch ... | head`: end quietly, as shell tools do
        silence_output()
        return 128 + 13  # SIGPIPE
