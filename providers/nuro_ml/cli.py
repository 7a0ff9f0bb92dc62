"""The nuro-ml command line: GPU quotas, trace replay, pipeline specs, drive logs, the demo.

Errors are reported the same way by every sub-command (see nuro_ml.cli_support): one line
naming what is wrong, exit code 2 for usage errors and 1 for failures, and a traceback only
with --debug.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from nuro_ml.cli_support import CommandParser, run_handler

#: Modules that expose ``register(subparsers)``; each adds its sub-commands and sets
#: ``func`` (taking the parsed namespace, returning an exit code) on its parsers.
COMMAND_MODULES: tuple[str, ...] = (
    "nuro_ml.etl.commands",
    "nuro_ml.capacity.commands",
    "nuro_ml.pipelines.commands",
    "nuro_ml.demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="nuro-ml",
        description=__doc__.split("\n\n", 1)[0],
        epilog="Exit status: 0 on success, 1 when the work fails, 2 for a usage error. "
        "Errors are one line; --debug shows the traceback.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name == module_name:
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the sub-command; returns the exit code (it never raises, but with --debug)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:
        # argparse exits after --help (0) and on usage errors (2, message already printed).
        if done.code is None:
            return 0
        return done.code if isinstance(done.code, int) else 2
    return run_handler(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
