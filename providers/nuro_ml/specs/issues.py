"""Problems found in a spec, each tied to a file, line, column and field path.

Every check (YAML syntax, the pydantic models, references, operator signatures, cycles)
reports :class:`Problem` objects that carry a field path; :func:`locate` turns them into
:class:`SpecIssue` objects with the position of the YAML node the path points at. The one
text format, ``file:line:col: field: message``, is what editors and CI annotations parse.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from nuro_ml.specs.yaml_source import Document, Position

FieldPath = tuple[str | int, ...]


@dataclass(frozen=True)
class SpecIssue:
    """One problem in one spec file."""

    file: str
    line: int
    column: int
    #: Dotted field path, e.g. ``stages.train.args.gpus`` or ``stages.etl.depends_on[0]``.
    field: str
    message: str

    def format(self) -> str:
        """``file:line:col: field: message``, on one line whatever characters names and keys hold."""
        return (
            f"{_one_line(self.file)}:{self.line}:{self.column}: {_one_line(self.field)}: "
            f"{_one_line(self.message)}"
        )


def _one_line(text: str) -> str:
    """Control characters (a key may hold a line break) written as escapes, so one issue is one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


@dataclass(frozen=True)
class Problem:
    """A problem at a field path, before it is given a line and column."""

    loc: FieldPath
    message: str
    #: Point at the field's key (unknown names) or at its value (wrong values).
    at: Literal["key", "value"] = "value"
    #: For a problem inside a multi-line string value: the 1-based line within the string.
    line_in_value: int = 1


def format_field(parts: Sequence[str | int]) -> str:
    """``("stages", "etl", "depends_on", 0)`` -> ``stages.etl.depends_on[0]``."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(document)"


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` when a close match exists, else an empty string."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _position_or_start(position: Position | None) -> tuple[int, int]:
    return (position.line, position.column) if position else (1, 1)


def locate(file: str, document: Document | None, problems: Iterable[Problem]) -> list[SpecIssue]:
    """Give each problem the line and column of the node its path points at."""
    issues = []
    for problem in problems:
        if document is None:
            line, column = 1, 1
        else:
            found = document.locate(problem.loc)
            line, column = _position_or_start(found.key if problem.at == "key" else found.value)
            if problem.at == "value" and problem.line_in_value > 1:
                inner = document.line_in_scalar(problem.loc, problem.line_in_value)
                line, column = _position_or_start(inner) if inner else (line, column)
        issues.append(SpecIssue(file, line, column, format_field(problem.loc), problem.message))
    return issues


# --- pydantic errors -----------------------------------------------------------------

_EXPECTED_BY_TYPE: dict[str, str] = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "none_required": "null",
    "datetime_type": "a date (YYYY-MM-DD) or date-time",
    "datetime_parsing": "a date (YYYY-MM-DD) or date-time",
    "datetime_from_date_parsing": "a date (YYYY-MM-DD) or date-time",
    "date_type": "a date (YYYY-MM-DD) or date-time",
    "date_parsing": "a date (YYYY-MM-DD) or date-time",
    "date_from_datetime_inexact": "a date (YYYY-MM-DD) or date-time",
    "timedelta_type": "a duration (seconds, or ISO 8601 such as PT5M)",
    "timedelta_parsing": "a duration (seconds, or ISO 8601 such as PT5M)",
}


def _got(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _expected(error: Any) -> str | None:
    if error["type"] in _EXPECTED_BY_TYPE:
        return _EXPECTED_BY_TYPE[error["type"]]
    if error["type"] == "literal_error":
        return f"one of {error['ctx']['expected']}"
    return None


def _unwrap(annotation: Any) -> list[Any]:
    """The alternatives of a union annotation (Annotated and Optional removed)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [alt for arg in typing.get_args(annotation) for alt in _unwrap(arg)]
    return [annotation]


def fields_at(root: type[BaseModel], path: Sequence[str | int]) -> list[str] | None:
    """Field names of the model found at ``path`` below ``root`` (None when no model is there)."""
    candidates: list[Any] = [root]
    for part in path:
        following: list[Any] = []
        for candidate in candidates:
            for alternative in _unwrap(candidate):
                origin = typing.get_origin(alternative)
                if isinstance(alternative, type) and issubclass(alternative, BaseModel):
                    field = alternative.model_fields.get(str(part))
                    if field is not None:
                        following.append(field.annotation)
                elif origin is dict:
                    following.append(typing.get_args(alternative)[1])
                elif origin is list and isinstance(part, int):
                    following.append(typing.get_args(alternative)[0])
        candidates = following
    for candidate in candidates:
        for alternative in _unwrap(candidate):
            if isinstance(alternative, type) and issubclass(alternative, BaseModel):
                return list(alternative.model_fields)
    return None


@dataclass
class _Converted:
    field: FieldPath
    position: Position | None
    expected: list[str]
    message: str
    got: Any
    tagged: bool
    branch: FieldPath


def from_validation_error(
    file: str, document: Document, error: ValidationError, root: type[BaseModel]
) -> list[SpecIssue]:
    """Turn pydantic's errors into issues, one per field, worded as what was expected.

    A value that matches none of a union's alternatives makes pydantic report one error per
    alternative; only those that got furthest into the YAML are kept, and errors for the
    same field are merged ("expected a string or a mapping").
    """
    converted: list[_Converted] = []
    for raw in error.errors(include_url=False):
        loc: FieldPath = tuple(raw["loc"])
        found = document.locate(loc)
        kind = raw["type"]
        tagged = bool(found.skipped) or (found.unmatched is not None and kind != "missing")
        branch = found.matched[: _first_skip_depth(loc, found.matched)] if tagged else found.matched
        expected = _expected(raw)
        if kind == "missing":
            name = found.unmatched if found.unmatched is not None else (found.matched or ("?",))[-1]
            field = (*found.matched, name)
            message = f"required field {name!r} is missing"
            position = found.key
        elif kind == "extra_forbidden":
            field = found.matched
            name = str(field[-1]) if field else "?"
            allowed = fields_at(root, [*found.matched[:-1]]) or []
            message = f"unknown field {name!r}{did_you_mean(name, allowed)}"
            if allowed:
                message += f"; expected one of: {', '.join(allowed)}"
            position = found.key
        else:
            field = found.matched
            message = raw["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
            message = message[:1].lower() + message[1:]
            position = found.value
        converted.append(
            _Converted(
                field, position, [expected] if expected else [], message, raw.get("input"), tagged, branch
            )
        )
    return [
        SpecIssue(file, *_position_or_start(item.position), format_field(item.field), _wording(item))
        for item in _merge_union_branches(converted)
    ]


def _first_skip_depth(loc: FieldPath, matched: FieldPath) -> int:
    depth = 0
    for part in loc:
        if depth < len(matched) and part == matched[depth]:
            depth += 1
        else:
            break
    return depth


def _merge_union_branches(items: list[_Converted]) -> list[_Converted]:
    deepest: dict[FieldPath, int] = {}
    for item in items:
        if item.tagged:
            deepest[item.branch] = max(deepest.get(item.branch, 0), len(item.field))
    merged: dict[tuple[FieldPath, str], _Converted] = {}
    result: list[_Converted] = []
    for item in items:
        if item.tagged and len(item.field) < deepest[item.branch]:
            continue
        if item.tagged and item.expected:
            key = (item.field, "expected")
            if key in merged:
                for expectation in item.expected:
                    if expectation not in merged[key].expected:
                        merged[key].expected.append(expectation)
                continue
            merged[key] = item
        result.append(item)
    return result


def _wording(item: _Converted) -> str:
    if item.expected:
        return f"expected {' or '.join(item.expected)}, got {_got(item.got)}"
    return item.message
