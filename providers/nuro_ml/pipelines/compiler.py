"""Plan -> ``airflow.sdk.DAG`` built from the provider's operators.

Stages become tasks with their stage name as task id; ``depends_on`` becomes upstream
edges; teardown stages become Airflow teardown tasks bound to their setups, so Terraform
destroy and GPU-lease release run even when training fails; ``produces``/``consumes``
become task outlets/inlets, and an asset schedule makes the DAG data-aware. Anything
Airflow itself rejects while the DAG is built is reported against the stage or field
that caused it, never as a failure of the whole DAG file.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import pendulum

from nuro_ml.pipelines import operators
from nuro_ml.pipelines.plan import DagPlan
from nuro_ml.specs.issues import Problem

if TYPE_CHECKING:
    from datetime import datetime

    from airflow.sdk import DAG, Asset, BaseOperator, Param


def build(plan: DagPlan, *, source: str | None = None) -> tuple[DAG | None, list[Problem]]:
    """Build the DAG; returns it, or None and the problems Airflow raised.

    :param source: how to name the spec file in the DAG's documentation.
    """
    from airflow.sdk import DAG

    tz = _timezone(plan.timezone)
    assets = _assets(plan)
    optional: dict[str, Any] = {}
    if plan.max_active_runs is not None:
        optional["max_active_runs"] = plan.max_active_runs
    if plan.end_date is not None:
        optional["end_date"] = _aware(plan.end_date, tz)
    try:
        dag = DAG(
            dag_id=plan.dag_id,
            description=plan.description,
            doc_md=_doc(plan, source),
            schedule=_schedule(plan, assets),
            start_date=_aware(plan.start_date, tz),
            catchup=plan.catchup,
            tags=list(plan.tags),
            params=_params(plan),
            default_args=dict(plan.default_args),
            dagrun_timeout=plan.dagrun_timeout,
            render_template_as_native_obj=plan.render_template_as_native_obj,
            auto_register=False,
            **optional,
        )
    except Exception as err:
        return None, [Problem((), f"Airflow rejected the DAG: {type(err).__name__}: {err}")]
    try:
        dag.timetable.validate()
    except Exception as err:
        return None, [Problem(("schedule",), f"invalid schedule {plan.schedule!r}: {err}")]

    problems: list[Problem] = []
    tasks: dict[str, BaseOperator] = {}
    for stage in plan.stages:
        try:
            info = operators.load(stage.operator)
        except operators.OperatorLoadError as err:
            problems.append(Problem(("stages", stage.stage_id, "operator"), str(err)))
            continue
        kwargs = dict(stage.args)
        if stage.retries is not None:
            kwargs["retries"] = stage.retries
        if stage.doc:
            kwargs["doc_md"] = stage.doc
        if stage.produces:
            kwargs["outlets"] = [assets[name] for name in stage.produces]
        if stage.consumes:
            kwargs["inlets"] = [assets[name] for name in stage.consumes]
        label = info.cls.__name__
        try:
            task = info.cls(task_id=stage.stage_id, dag=dag, **kwargs)
        except Exception as err:
            message = f"{label} rejected the stage: {type(err).__name__}: {err}"
            problems.append(Problem(("stages", stage.stage_id), message, at="key"))
            continue
        tasks[stage.stage_id] = task
        for key, template in operators.untemplated(task, stage.args):
            problems.append(
                Problem(
                    ("stages", stage.stage_id, "args", key),
                    f"{label}.{key} is not a templated field, so {template!r} would be passed literally "
                    f"instead of rendered; templated fields: {', '.join(task.template_fields) or 'none'}",
                )
            )
    if problems:
        return None, problems

    for stage in plan.stages:
        for upstream in stage.depends_on:
            tasks[upstream] >> tasks[stage.stage_id]
    for stage in plan.stages:
        if stage.teardown:
            tasks[stage.stage_id].as_teardown(setups=[tasks[name] for name in stage.setups])
    try:
        # The rest of DAG.validate(), which the DagBag runs again: the timetable was checked above.
        dag.validate_setup_teardown()
    except Exception as err:
        return None, [Problem(("stages",), f"invalid setup/teardown arrangement: {err}", at="key")]
    return dag, []


@functools.cache
def _timezone(name: str) -> Any:
    return pendulum.timezone(name)


def _aware(value: datetime, tz: Any) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=tz)


def _assets(plan: DagPlan) -> dict[str, Asset]:
    from airflow.sdk import Asset

    built: dict[str, Asset] = {}
    for asset in plan.assets:
        kwargs: dict[str, Any] = {}
        if asset.group:
            kwargs["group"] = asset.group
        if asset.extra:
            kwargs["extra"] = dict(asset.extra)
        built[asset.name] = Asset(name=asset.name, uri=asset.uri, **kwargs)
    return built


def _schedule(plan: DagPlan, assets: dict[str, Asset]) -> Any:
    if isinstance(plan.schedule, tuple):
        from airflow.sdk import AssetAll, AssetAny

        mode, names = plan.schedule
        chosen = [assets[name] for name in names]
        return AssetAll(*chosen) if mode == "all" else AssetAny(*chosen)
    return plan.schedule


def _params(plan: DagPlan) -> dict[str, Param]:
    from airflow.sdk import Param

    params: dict[str, Param] = {}
    for param in plan.params:
        if param.required:
            params[param.name] = Param(description=param.description, **param.schema)
        else:
            params[param.name] = Param(param.default, description=param.description, **param.schema)
    return params


def _doc(plan: DagPlan, source: str | None) -> str | None:
    parts = [text for text in (plan.doc,) if text]
    if source is not None:
        parts.append(f"Built from the pipeline spec `{source}`.")
    return "\n\n".join(parts) or None
