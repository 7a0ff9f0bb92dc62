"""Checks that span fields: references, phases, cycles, parameters and operator arguments.

The pydantic models only see one field at a time. These checks see the whole spec and
report every problem with the field path at fault, so one run of ``nuro-ml validate``
lists everything that needs fixing.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema
import pendulum

from nuro_ml import settings
from nuro_ml.pipelines import operators
from nuro_ml.pipelines.spec import PHASES, AssetSchedule, PipelineSpec, StageSpec
from nuro_ml.pipelines.templates import check_templates
from nuro_ml.specs.issues import Problem, did_you_mean

#: ``${name}`` placeholders expanded in stage args and asset URIs. Upper-case names such as
#: ``${HOME}`` are left alone, so shell variables in a bash command keep working.
PLACEHOLDERS: dict[str, Callable[[], str]] = {
    "data_dir": lambda: str(settings.data_dir()),
    "raw_logs_dir": lambda: str(settings.raw_logs_dir()),
    "etl_output_dir": lambda: str(settings.etl_output_dir()),
    "feast_dir": lambda: str(settings.feast_dir()),
    "feature_repo_dir": lambda: str(settings.feature_repo_dir()),
    "artifacts_dir": lambda: str(settings.artifacts_dir()),
    "terraform_dir": lambda: str(settings.terraform_dir()),
    "workloads_dir": lambda: str(settings.workloads_dir()),
    "ledger_url": settings.ledger_url,
    "python": lambda: sys.executable,
}
_PLACEHOLDER = re.compile(r"\$\{([a-z][a-z0-9_]*)\}")


def placeholder_values() -> dict[str, str]:
    """Current value of every placeholder (they follow ``NURO_ML_*`` environment variables)."""
    return {name: resolve() for name, resolve in PLACEHOLDERS.items()}


@dataclass(frozen=True)
class CheckedStage:
    """A stage whose operator resolved and whose arguments fit the constructor."""

    stage_id: str
    spec: StageSpec
    args: dict[str, Any]
    kind: str | None
    teardown: bool


@dataclass(frozen=True)
class CheckedPipeline:
    """A spec that passed every check, ready to become a DAG."""

    spec: PipelineSpec
    stages: dict[str, CheckedStage]
    asset_uris: dict[str, str]


def check(
    spec: PipelineSpec, placeholders: Mapping[str, str] | None = None
) -> tuple[CheckedPipeline | None, list[Problem]]:
    """Run every cross-field check; the pipeline is returned only when there is no problem."""
    values = placeholders if placeholders is not None else placeholder_values()
    problems: list[Problem] = []
    problems += _check_timezone(spec)
    problems += _check_params(spec)
    asset_uris = _expand_asset_uris(spec, values, problems)
    problems += _check_asset_refs(spec)
    problems += _check_stage_refs(spec)
    kinds = {
        stage_id: stage.kind or operators.default_phase(stage.operator)
        for stage_id, stage in spec.stages.items()
    }
    problems += _check_phases(spec, kinds)
    problems += _check_cycles(spec)
    stages: dict[str, CheckedStage] = {}
    for stage_id, stage in spec.stages.items():
        checked = _check_stage(spec, stage_id, stage, kinds[stage_id], values, problems)
        if checked is not None:
            stages[stage_id] = checked
    if problems:
        return None, problems
    return CheckedPipeline(spec=spec, stages=stages, asset_uris=asset_uris), []


def _check_timezone(spec: PipelineSpec) -> Iterator[Problem]:
    try:
        pendulum.timezone(spec.timezone)
    except Exception as err:
        yield Problem(("timezone",), f"unknown time zone {spec.timezone!r}: {err}")


def _check_params(spec: PipelineSpec) -> Iterator[Problem]:
    for name, param in spec.params.items():
        if param.required:
            if spec.schedule is not None:
                yield Problem(
                    ("params", name),
                    f"parameter {name!r} has no default, but scheduled runs need one "
                    "(give it a default or set schedule: null)",
                    at="key",
                )
            continue
        error = _schema_error(json.dumps(param.json_schema(), sort_keys=True), json.dumps(param.default))
        if error is not None:
            yield Problem(("params", name, "default"), f"default does not fit the parameter: {error}")


@functools.lru_cache(maxsize=1024)
def _schema_error(schema_json: str, value_json: str) -> str | None:
    """First JSON-schema error of a value (the same check Airflow's Param runs), cached by content."""
    schema = json.loads(schema_json)
    validator_cls = jsonschema.validators.validator_for(schema)
    try:
        validator_cls.check_schema(schema)
    except jsonschema.SchemaError as err:
        return f"invalid parameter schema: {err.message}"
    error = jsonschema.exceptions.best_match(
        validator_cls(schema, format_checker=jsonschema.FormatChecker()).iter_errors(json.loads(value_json))
    )
    return error.message if error is not None else None


def _expand_asset_uris(
    spec: PipelineSpec, values: Mapping[str, str], problems: list[Problem]
) -> dict[str, str]:
    uris: dict[str, str] = {}
    for name, asset in spec.assets.items():
        uri = asset.uri if asset is not None and asset.uri else name
        uris[name] = expand(uri, values, ("assets", name, "uri"), problems)
    return uris


def _check_asset_refs(spec: PipelineSpec) -> Iterator[Problem]:
    declared = list(spec.assets)

    def unknown(name: str) -> str:
        listed = ", ".join(declared) if declared else "none are declared"
        return f"unknown asset {name!r}{did_you_mean(name, declared)}; declare it under `assets` ({listed})"

    if isinstance(spec.schedule, AssetSchedule):
        for index, name in enumerate(spec.schedule.assets):
            if name not in spec.assets:
                yield Problem(("schedule", "assets", index), unknown(name))
    for stage_id, stage in spec.stages.items():
        for field in ("produces", "consumes"):
            for index, name in enumerate(getattr(stage, field)):
                if name not in spec.assets:
                    yield Problem(("stages", stage_id, field, index), unknown(name))


def _check_stage_refs(spec: PipelineSpec) -> Iterator[Problem]:
    names = list(spec.stages)
    for stage_id, stage in spec.stages.items():
        for field in ("depends_on", "setups"):
            refs: list[str] = getattr(stage, field)
            for index, ref in enumerate(refs):
                where = ("stages", stage_id, field, index)
                if ref == stage_id:
                    yield Problem(where, f"stage {stage_id!r} cannot refer to itself")
                elif ref not in spec.stages:
                    yield Problem(
                        where, f"unknown stage {ref!r}{did_you_mean(ref, names)}; stages: {', '.join(names)}"
                    )
                elif refs.index(ref) != index:
                    yield Problem(where, f"stage {ref!r} is listed twice")
        teardown = _is_teardown(stage, stage.kind or operators.default_phase(stage.operator))
        if stage.setups and not teardown:
            yield Problem(
                ("stages", stage_id, "setups"),
                "setups only apply to teardown stages (set teardown: true)",
                at="key",
            )
        if teardown and not stage.setups:
            yield Problem(
                ("stages", stage_id),
                "a teardown stage needs `setups`: the stages whose resources it "
                "releases (it runs once they ran, even when work between them failed)",
                at="key",
            )
        for index, ref in enumerate(stage.setups):
            other = spec.stages.get(ref)
            if other is not None and _is_teardown(
                other, other.kind or operators.default_phase(other.operator)
            ):
                yield Problem(
                    ("stages", stage_id, "setups", index),
                    f"{ref!r} is a teardown stage; setups must "
                    "be the stages that create what this one releases",
                )


def _is_teardown(stage: StageSpec, kind: str | None) -> bool:
    return stage.teardown if stage.teardown is not None else kind == "teardown"


def _check_phases(spec: PipelineSpec, kinds: Mapping[str, str | None]) -> Iterator[Problem]:
    for stage_id, stage in spec.stages.items():
        kind = kinds[stage_id]
        if kind is None or kind == "teardown":
            continue
        for index, ref in enumerate(stage.depends_on):
            ref_kind = kinds.get(ref)
            if ref_kind is not None and PHASES.index(ref_kind) > PHASES.index(kind):
                yield Problem(
                    ("stages", stage_id, "depends_on", index),
                    f"stage {stage_id!r} ({kind}) cannot depend on {ref!r} ({ref_kind}), a later phase; "
                    f"phases run {' -> '.join(PHASES)} (set `kind` if a stage is in another phase)",
                )


def _check_cycles(spec: PipelineSpec) -> Iterator[Problem]:
    upstream = {
        stage_id: [
            ref for ref in (*stage.depends_on, *stage.setups) if ref in spec.stages and ref != stage_id
        ]
        for stage_id, stage in spec.stages.items()
    }
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    reported: set[frozenset[str]] = set()
    for start in upstream:
        if state.get(start):
            continue
        path: list[str] = []
        stack: list[tuple[str, Iterator[str]]] = [(start, iter(upstream[start]))]
        state[start] = 1
        path.append(start)
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                path.pop()
                state[node] = 2
                continue
            if state.get(child) == 1:
                cycle = path[path.index(child) :]
                if frozenset(cycle) not in reported:
                    reported.add(frozenset(cycle))
                    # Shown in execution order: each stage runs after the one before it.
                    order = [*reversed(cycle), cycle[-1]]
                    first, closing = order[0], order[-2]
                    field = "depends_on" if closing in spec.stages[first].depends_on else "setups"
                    yield Problem(
                        ("stages", first, field),
                        "dependency cycle: "
                        + " -> ".join(order)
                        + " (each stage would have to run after itself)",
                        at="key",
                    )
            elif not state.get(child):
                state[child] = 1
                path.append(child)
                stack.append((child, iter(upstream[child])))


def _check_stage(
    spec: PipelineSpec,
    stage_id: str,
    stage: StageSpec,
    kind: str | None,
    values: Mapping[str, str],
    problems: list[Problem],
) -> CheckedStage | None:
    loc = ("stages", stage_id)
    try:
        info = operators.load(stage.operator)
    except operators.OperatorLoadError as err:
        problems.append(Problem((*loc, "operator"), str(err)))
        return None
    args = {key: expand(value, values, (*loc, "args", key), problems) for key, value in stage.args.items()}
    template_problems = check_templates(args, (*loc, "args"), native=spec.render_template_as_native_obj)
    if template_problems:
        problems += template_problems
        return None
    if spec.team is not None and "team" in info.accepted and "team" not in args:
        args["team"] = spec.team
    converted, arg_problems = operators.check_args(info, args, (*loc, "args"))
    problems += arg_problems
    if arg_problems:
        return None
    return CheckedStage(stage_id, stage, converted, kind, _is_teardown(stage, kind))


def expand(value: Any, values: Mapping[str, str], loc: tuple[str | int, ...], problems: list[Problem]) -> Any:
    """Replace ``${name}`` placeholders in strings, recursively through lists and mappings."""
    if isinstance(value, str):
        if "${" not in value:
            return value

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in values:
                problems.append(
                    Problem(
                        loc,
                        f"unknown placeholder ${{{name}}}{did_you_mean(name, values)}; "
                        f"known: {', '.join(values)}",
                    )
                )
                return match.group(0)
            return values[name]

        return _PLACEHOLDER.sub(substitute, value)
    if isinstance(value, dict):
        return {key: expand(item, values, (*loc, key), problems) for key, item in value.items()}
    if isinstance(value, list):
        return [expand(item, values, (*loc, index), problems) for index, item in enumerate(value)]
    return value
