"""Jinja templates in stage arguments, compiled (never rendered) with Airflow's environment.

Airflow compiles a task's templates only when the task runs, so a template with a syntax
error (``"{{ dag_run.run_after }"``) would load fine and fail hours later. The check finds
what compiling would: syntax errors, and filters or tests the environment does not have. It
evaluates nothing, so no context is needed.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import jinja2
from jinja2 import nodes

from nuro_ml.pipelines.operators import has_template
from nuro_ml.specs.issues import Problem, did_you_mean

if TYPE_CHECKING:
    from nuro_ml.specs.issues import FieldPath


@functools.cache
def template_env(native: bool) -> jinja2.Environment:
    """The environment a pipeline's DAG renders with (``render_template_as_native_obj`` picks native)."""
    from airflow.sdk.definitions._internal.templater import create_template_env

    return create_template_env(native=native)


def _strings(value: Any, loc: FieldPath) -> Iterator[tuple[FieldPath, str]]:
    if isinstance(value, str):
        yield loc, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _strings(item, (*loc, str(key)))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _strings(item, (*loc, index))


@functools.lru_cache(maxsize=8192)
def template_error(text: str, native: bool) -> tuple[int, str] | None:
    """``(line, message)`` of the first error in a template, or None when it would compile.

    Parsing finds syntax errors; the filters and tests it names are looked up the way Jinja's
    compiler does, without generating code (which costs five times the parse). Literal text
    before the first brace cannot change how the rest parses, so it is left out of the cache
    key: ``echo a {{ ds }}`` and ``echo b {{ ds }}`` are parsed once.
    """
    brace = text.find("{")
    if brace > 0:
        found = template_error(text[brace:], native)
        return None if found is None else (found[0] + text.count("\n", 0, brace), found[1])
    env = template_env(native)
    try:
        tree = env.parse(text)
    except jinja2.TemplateSyntaxError as err:
        message = (err.message or str(err)).rstrip(".")
        return (
            err.lineno,
            f"Jinja template does not compile: {message}; the task would fail when Airflow renders it",
        )
    for node in tree.find_all((nodes.Filter, nodes.Test)):
        kind, known = ("filter", env.filters) if isinstance(node, nodes.Filter) else ("test", env.tests)
        if node.name not in known:
            return (
                node.lineno,
                f"Jinja template uses an unknown {kind} {node.name!r}{did_you_mean(node.name, known)}",
            )
    return None


def check_templates(value: Any, loc: FieldPath, *, native: bool) -> list[Problem]:
    """A problem for every templated string under ``value`` that does not compile."""
    problems = []
    for where, text in _strings(value, loc):
        if has_template(text) and (error := template_error(text, native)) is not None:
            line, message = error
            problems.append(Problem(where, message, line_in_value=line))
    return problems
