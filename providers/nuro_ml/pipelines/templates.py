"""Jinja templates in stage arguments, compiled (never rendered) with Airflow's environment.

Airflow compiles a task's templates only when the task runs, so a template with a syntax
error (``"{{ dag_run.run_after }"``) would load fine and fail hours later. Compiling catches
syntax errors and unknown filters or tests; it evaluates nothing, so no context is needed.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import jinja2

from nuro_ml.pipelines.issues import Problem, did_you_mean
from nuro_ml.pipelines.operators import has_template

if TYPE_CHECKING:
    from nuro_ml.pipelines.issues import FieldPath


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


def _wording(env: jinja2.Environment, err: jinja2.TemplateSyntaxError) -> str:
    message = (err.message or str(err)).rstrip(".")
    for kind, known in (("filter", env.filters), ("test", env.tests)):
        prefix = f"No {kind} named '"
        if message.startswith(prefix):
            name = message[len(prefix) :].split("'", 1)[0]
            return f"Jinja template uses an unknown {kind} {name!r}{did_you_mean(name, known)}"
    return f"Jinja template does not compile: {message}; the task would fail when Airflow renders it"


def check_templates(value: Any, loc: FieldPath, *, native: bool) -> list[Problem]:
    """A problem for every templated string under ``value`` that does not compile."""
    env = template_env(native)
    problems = []
    for where, text in _strings(value, loc):
        if not has_template(text):
            continue
        try:
            env.from_string(text)
        except jinja2.TemplateSyntaxError as err:
            problems.append(Problem(where, _wording(env, err), line_in_value=err.lineno))
    return problems
