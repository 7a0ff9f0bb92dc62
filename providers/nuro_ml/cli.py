"""``nuro-ml`` command line: each area of the platform registers its own sub-commands."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: Modules that expose ``register(subparsers)``; each adds its sub-commands and sets
#: ``func`` (taking the parsed namespace, returning an exit code) on its parsers.
COMMAND_MODULES: tuple[str, ...] = (
    "nuro_ml.etl.commands",
    "nuro_ml.capacity.commands",
    "nuro_ml.pipelines.commands",
    "nuro_ml.demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nuro-ml", description=__doc__)
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
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
