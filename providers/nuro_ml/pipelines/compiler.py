"""Checked pipeline -> ``airflow.sdk.DAG`` built from the provider's operators.

Stages become tasks with their stage name as task id; ``depends_on`` becomes upstream
edges; teardown stages become Airflow teardown tasks bound to their setups, so Terraform
destroy and GPU-lease release run even when training fails; ``produces``/``consumes``
become task outlets/inlets, and an asset schedule makes the DAG data-aware. Anything
Airflow itself rejects while the DAG is built is reported against the stage or field
that caused it, never as a failure of the whole DAG file.
"""

from __future__ import annotations

from datetime import date, datetime, time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pendulum

from nuro_ml.pipelines.checks import CheckedPipeline
from nuro_ml.pipelines.issues import Problem
from nuro_ml.pipelines.operators import untemplated
from nuro_ml.pipelines.spec import AssetSchedule, PipelineSpec

if TYPE_CHECKING:
    from airflow.sdk import DAG, Asset, BaseOperator, Param

#: Tag on every DAG built from a YAML spec, to find them in the DAG list.
PIPELINE_TAG = "yaml-pipeline"


def build(checked: CheckedPipeline, *, source: str | Path | None = None) -> tuple[DAG | None, list[Problem]]:
    """Build the DAG; returns it, or None and the problems Airflow raised."""
    from airflow.sdk import DAG

    spec = checked.spec
    problems: list[Problem] = []
    try:
        tz = pendulum.timezone(spec.timezone)
    except Exception as err:
        return None, [Problem(("timezone",), f"unknown time zone {spec.timezone!r}: {err}")]
    assets = _assets(checked)
    optional: dict[str, Any] = {}
    if spec.max_active_runs is not None:
        optional["max_active_runs"] = spec.max_active_runs
    if spec.end_date is not None:
        optional["end_date"] = _as_datetime(spec.end_date, tz)
    try:
        dag = DAG(
            dag_id=spec.dag_id,
            description=spec.description,
            doc_md=_doc(spec, source),
            schedule=_schedule(spec, assets),
            start_date=_as_datetime(spec.start_date, tz),
            catchup=spec.catchup,
            tags=_tags(spec),
            params=_params(spec),
            default_args={
                "owner": spec.owner,
                "retries": spec.default_retries,
                "retry_delay": spec.retry_delay,
            },
            dagrun_timeout=spec.dagrun_timeout,
            render_template_as_native_obj=spec.render_template_as_native_obj,
            auto_register=False,
            **optional,
        )
    except Exception as err:
        return None, [Problem((), f"Airflow rejected the DAG: {type(err).__name__}: {err}")]
    try:
        dag.timetable.validate()
    except Exception as err:
        return None, [Problem(("schedule",), f"invalid schedule {spec.schedule!r}: {err}")]

    tasks: dict[str, BaseOperator] = {}
    for stage_id, stage in checked.stages.items():
        kwargs: dict[str, Any] = dict(stage.args)
        if stage.spec.retries is not None:
            kwargs["retries"] = stage.spec.retries
        if stage.spec.produces:
            kwargs["outlets"] = [assets[name] for name in stage.spec.produces]
        if stage.spec.consumes:
            kwargs["inlets"] = [assets[name] for name in stage.spec.consumes]
        if stage.spec.doc:
            kwargs["doc_md"] = stage.spec.doc
        label = stage.operator.cls.__name__
        try:
            task = stage.operator.cls(task_id=stage_id, dag=dag, **kwargs)
        except Exception as err:
            problems.append(
                Problem(
                    ("stages", stage_id), f"{label} rejected the stage: {type(err).__name__}: {err}", at="key"
                )
            )
            continue
        tasks[stage_id] = task
        for key, template in untemplated(task, stage.args):
            problems.append(
                Problem(
                    ("stages", stage_id, "args", key),
                    f"{label}.{key} is not a templated field, so "
                    f"{template!r} would be passed literally instead of rendered; templated fields: "
                    f"{', '.join(task.template_fields) or 'none'}",
                )
            )
    if problems:
        return None, problems

    for stage_id, stage in checked.stages.items():
        for upstream in stage.spec.depends_on:
            tasks[upstream] >> tasks[stage_id]
    for stage_id, stage in checked.stages.items():
        if stage.teardown:
            tasks[stage_id].as_teardown(setups=[tasks[name] for name in stage.spec.setups])
    try:
        # The rest of DAG.validate(), which the DagBag runs again: the timetable was checked above.
        dag.validate_setup_teardown()
    except Exception as err:
        return None, [Problem(("stages",), f"invalid setup/teardown arrangement: {err}", at="key")]
    return dag, []


def _as_datetime(value: datetime | date, tz: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=tz)
    return datetime.combine(value, time.min, tzinfo=tz)


def _assets(checked: CheckedPipeline) -> dict[str, Asset]:
    from airflow.sdk import Asset

    built: dict[str, Asset] = {}
    for name, asset in checked.spec.assets.items():
        kwargs: dict[str, Any] = {}
        if asset is not None and asset.group:
            kwargs["group"] = asset.group
        if asset is not None and asset.extra:
            kwargs["extra"] = dict(asset.extra)
        built[name] = Asset(name=name, uri=checked.asset_uris[name], **kwargs)
    return built


def _schedule(spec: PipelineSpec, assets: dict[str, Asset]) -> Any:
    if isinstance(spec.schedule, AssetSchedule):
        from airflow.sdk import AssetAll, AssetAny

        chosen = [assets[name] for name in spec.schedule.assets]
        return AssetAll(*chosen) if spec.schedule.mode == "all" else AssetAny(*chosen)
    return spec.schedule


def _params(spec: PipelineSpec) -> dict[str, Param]:
    from airflow.sdk import Param

    params: dict[str, Param] = {}
    for name, param in spec.params.items():
        schema = param.json_schema()
        if param.required:
            params[name] = Param(description=param.description, **schema)
        else:
            params[name] = Param(param.default, description=param.description, **schema)
    return params


def _tags(spec: PipelineSpec) -> list[str]:
    tags = [PIPELINE_TAG, *spec.tags]
    if spec.team:
        tags.append(f"team:{spec.team}")
    return list(dict.fromkeys(tags))


def _doc(spec: PipelineSpec, source: str | Path | None) -> str | None:
    parts = [text for text in (spec.doc or spec.description,) if text]
    if source is not None:
        parts.append(f"Built from the pipeline spec `{source}`.")
    return "\n\n".join(parts) or None
