"""What every ``nuro-ml`` sub-command shares: the parser class, plain-text help, error reporting.

A sub-command only registers its parser and a handler; :class:`CommandParser` gives each parser
``--debug`` and plain-text help, and :func:`run_handler` turns whatever the handler raises into
one line on stderr and an exit code: 2 for usage errors (:class:`~nuro_ml.exceptions.UsageError`,
argparse's own), 1 for failures (any other :class:`~nuro_ml.exceptions.NuroMLException`, files
that cannot be read or written). ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import errno
import math
import re
import sys
from collections.abc import Callable, Sequence
from datetime import date
from typing import Any, NoReturn, TextIO

from nuro_ml.exceptions import NuroMLException

#: Exit codes (the convention of argparse and most Unix tools).
EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

#: Namespace attribute holding the full program name of the parser that parsed the command,
#: e.g. ``nuro-ml quota set-quota``; error lines start with it.
PROG_ATTR = "command_prog"

# Inline reStructuredText in docstrings reused as help: ``literal``, :role:`target` and
# :role:`text <target>`, `interpreted`. Help is shown in a terminal, so only the text stays.
_RST_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`(?:([^`<]*?)\s*<[^`>]*>|(~?)([^`]*?))`")
_RST_LITERAL = re.compile(r"``(.+?)``")
_RST_INTERPRETED = re.compile(r"(?<![`\w])`([^`]+)`(?![`\w])")


def plain_text(text: str) -> str:
    """Inline reStructuredText markup removed: ``nuro-ml`` -> nuro-ml, :class:`~a.B` -> B."""

    def role(match: re.Match[str]) -> str:
        text, short, target = match.groups()
        if text is not None:
            return str(text)
        # :class:`~a.b.C` shows only the last name, as Sphinx renders it.
        return str(target).rsplit(".", 1)[-1] if short else str(target)

    text = _RST_ROLE.sub(role, text)
    text = _RST_LITERAL.sub(r"\1", text)
    return _RST_INTERPRETED.sub(r"\1", text)


class PlainHelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, with reStructuredText markup removed from descriptions and help."""

    def _format_text(self, text: str) -> str:
        return super()._format_text(plain_text(text))

    def _expand_help(self, action: argparse.Action) -> str:
        return plain_text(super()._expand_help(action))


class CommandParser(argparse.ArgumentParser):
    """The parser class of ``nuro-ml`` and, through ``add_subparsers``, of every sub-command."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", PlainHelpFormatter)
        super().__init__(*args, **kwargs)
        # SUPPRESS keeps a sub-command's parser from resetting a --debug given before its name.
        self.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="show the full traceback of an error",
        )

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        # The innermost parser finishes first, so its name is the one kept.
        if not hasattr(parsed, PROG_ATTR):
            setattr(parsed, PROG_ATTR, self.prog)
        return parsed, extras

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def one_line(text: str) -> str:
    """A message on one line: its lines joined, blank ones dropped."""
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


_OS_HINTS: dict[int, str] = {
    errno.ENOENT: "check the path, or create the folder first",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "give a file, not a folder",
    errno.EACCES: "choose a location you may write to, or fix its permissions",
    errno.EPERM: "choose a location you may write to, or fix its permissions",
    errno.EROFS: "the file system is read-only; choose another location",
    errno.ENOSPC: "free some disk space or choose another location",
    errno.EEXIST: "remove it or choose another location",
}


def describe_os_error(err: OSError) -> str:
    """``cannot use /x/y: Permission denied; choose a location ...``, naming the file."""
    names = [str(name) for name in (err.filename, err.filename2) if name is not None]
    if not names:
        # Not about a file (a refused connection, say): its own words are all there is.
        return f"{type(err).__name__}: {one_line(str(err))}"
    reason = err.strerror or type(err).__name__
    hint = _OS_HINTS.get(err.errno or -1)
    return f"cannot use {' -> '.join(names)}: {reason}" + (f"; {hint}" if hint else "")


def describe(err: BaseException) -> tuple[str, int]:
    """The one-line message and exit code for an error a handler raised."""
    if isinstance(err, NuroMLException):
        return one_line(str(err)) or type(err).__name__, err.exit_code
    if isinstance(err, argparse.ArgumentTypeError | argparse.ArgumentError):
        return one_line(str(err)), EXIT_USAGE
    if isinstance(err, OSError):
        return describe_os_error(err), EXIT_FAILURE
    if isinstance(err, KeyboardInterrupt):
        return "interrupted", EXIT_INTERRUPTED
    return (
        f"unexpected {type(err).__name__}: {one_line(str(err))} (run again with --debug for the traceback)",
        EXIT_FAILURE,
    )


def run_handler(
    handler: Callable[[argparse.Namespace], int | None],
    args: argparse.Namespace,
    *,
    stderr: TextIO | None = None,
) -> int:
    """Run a sub-command's handler; an error becomes one line on stderr and an exit code."""
    try:
        return int(handler(args) or EXIT_OK)
    except (Exception, KeyboardInterrupt) as err:
        if getattr(args, "debug", False):
            raise
        message, code = describe(err)
        prog = getattr(args, PROG_ATTR, "nuro-ml")
        # Messages written for the command line may already start with its name.
        message = message.removeprefix(f"{prog}: ")
        print(f"{prog}: error: {message}", file=stderr or sys.stderr, flush=True)
        return code


def iso_date(value: str) -> date:
    """argparse ``type`` for a calendar day given as ``YYYY-MM-DD``."""
    try:
        return date.fromisoformat(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date ({err}); use YYYY-MM-DD") from None


def _number(cast: Callable[[str], float], kind: str, minimum: float, strict: bool) -> Callable[[str], Any]:
    bound = f"greater than {minimum:g}" if strict else f"at least {minimum:g}"

    def parse(value: str) -> float:
        try:
            number = cast(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not {kind}; give {kind} {bound}") from None
        if not math.isfinite(number) or number < minimum or (strict and number == minimum):
            raise argparse.ArgumentTypeError(f"{value!r} is out of range; give {kind} {bound}")
        return number

    parse.__name__ = f"{kind.split()[-1]} {bound}"
    return parse


#: argparse ``type`` converters for counts and durations, naming the accepted range when they refuse.
positive_int = _number(int, "an integer", 0, strict=True)
non_negative_int = _number(int, "an integer", 0, strict=False)
positive_float = _number(float, "a finite number", 0, strict=True)
non_negative_float = _number(float, "a finite number", 0, strict=False)
