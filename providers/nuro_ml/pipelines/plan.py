"""A checked spec reduced to plain data: exactly the arguments the DAG is built from.

The plan holds only built-in values (strings, numbers, datetimes, dicts, tuples), so it is
cheap to cache and to load again: a DAG processor re-parsing an unchanged spec loads its
plan and constructs the DAG, without YAML, pydantic or any check in between.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from nuro_ml.pipelines.checks import CheckedPipeline
from nuro_ml.pipelines.spec import AssetSchedule, PipelineSpec

#: Tag on every DAG built from a YAML spec, to find them in the DAG list.
PIPELINE_TAG = "yaml-pipeline"


@dataclass(frozen=True)
class ParamPlan:
    name: str
    required: bool
    default: Any
    description: str | None
    schema: dict[str, Any]


@dataclass(frozen=True)
class AssetPlan:
    name: str
    uri: str
    group: str | None
    extra: dict[str, Any] | None


@dataclass(frozen=True)
class StagePlan:
    stage_id: str
    #: Short name or dotted class path, resolved by :func:`nuro_ml.pipelines.operators.load`.
    operator: str
    #: Operator arguments from the spec, placeholders expanded and converted to annotated types.
    args: dict[str, Any]
    retries: int | None
    doc: str | None
    depends_on: tuple[str, ...]
    setups: tuple[str, ...]
    teardown: bool
    produces: tuple[str, ...]
    consumes: tuple[str, ...]


@dataclass(frozen=True)
class DagPlan:
    dag_id: str
    description: str | None
    #: The spec's documentation (``doc``, else ``description``).
    doc: str | None
    #: A cron expression or preset, None, or ("all" | "any", asset names).
    schedule: str | tuple[str, tuple[str, ...]] | None
    timezone: str
    #: Naive times are wall-clock times in ``timezone``; aware ones are kept as they are.
    start_date: datetime
    end_date: datetime | None
    catchup: bool
    tags: tuple[str, ...]
    default_args: dict[str, Any]
    max_active_runs: int | None
    dagrun_timeout: timedelta | None
    render_template_as_native_obj: bool
    params: tuple[ParamPlan, ...]
    assets: tuple[AssetPlan, ...]
    stages: tuple[StagePlan, ...]


def make_plan(checked: CheckedPipeline) -> DagPlan:
    """Everything :func:`nuro_ml.pipelines.compiler.build` needs, from a checked spec."""
    spec = checked.spec
    return DagPlan(
        dag_id=spec.dag_id,
        description=spec.description,
        doc=spec.doc or spec.description,
        schedule=(
            (spec.schedule.mode, tuple(spec.schedule.assets))
            if isinstance(spec.schedule, AssetSchedule)
            else spec.schedule
        ),
        timezone=spec.timezone,
        start_date=_naive(spec.start_date),
        end_date=_naive(spec.end_date) if spec.end_date is not None else None,
        catchup=spec.catchup,
        tags=_tags(spec),
        default_args={"owner": spec.owner, "retries": spec.default_retries, "retry_delay": spec.retry_delay},
        max_active_runs=spec.max_active_runs,
        dagrun_timeout=spec.dagrun_timeout,
        render_template_as_native_obj=spec.render_template_as_native_obj,
        params=tuple(
            ParamPlan(name, param.required, param.default, param.description, param.json_schema())
            for name, param in spec.params.items()
        ),
        assets=tuple(
            AssetPlan(
                name=name,
                uri=checked.asset_uris[name],
                group=asset.group if asset is not None else None,
                extra=dict(asset.extra) if asset is not None and asset.extra else None,
            )
            for name, asset in spec.assets.items()
        ),
        stages=tuple(
            StagePlan(
                stage_id=stage_id,
                operator=stage.spec.operator,
                args=stage.args,
                retries=stage.spec.retries,
                doc=stage.spec.doc,
                depends_on=tuple(stage.spec.depends_on),
                setups=tuple(stage.spec.setups),
                teardown=stage.teardown,
                produces=tuple(stage.spec.produces),
                consumes=tuple(stage.spec.consumes),
            )
            for stage_id, stage in checked.stages.items()
        ),
    )


def _naive(value: datetime | date) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.combine(value, time.min)


def _tags(spec: PipelineSpec) -> tuple[str, ...]:
    tags = [PIPELINE_TAG, *spec.tags]
    if spec.team:
        tags.append(f"team:{spec.team}")
    return tuple(dict.fromkeys(tags))
