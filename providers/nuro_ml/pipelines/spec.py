"""The YAML pipeline spec: one file describes one DAG.

Every model forbids unknown keys, so a misspelt field is an error naming the field rather
than a silently ignored setting. The models check the shape of a spec; cross-references
(stage names, asset names, operator parameters, cycles) are checked by
:mod:`nuro_ml.pipelines.checks`, which can point at the exact YAML node at fault.

Example::

    dag_id: nightly_perception_training
    schedule: "0 2 * * *"
    start_date: 2026-11-01
    team: perception
    params:
      gpus: {type: integer, default: 2, minimum: 1, maximum: 8, description: GPUs for training}
    assets:
      scene_stats: {uri: "file://${etl_output_dir}/scene_stats"}
    stages:
      provision: {operator: terraform_apply, args: {working_dir: "${terraform_dir}/environments/local"}}
      etl: {operator: mcap_to_parquet, depends_on: [provision], produces: [scene_stats], args: {...}}
      teardown: {operator: terraform_destroy, depends_on: [etl], setups: [provision], args: {...}}
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, WithJsonSchema, field_validator, model_validator

#: The phases of an ML pipeline, in the order work flows through them.
PHASES: tuple[str, ...] = ("provision", "etl", "features", "capacity", "train", "teardown")
Phase = Literal["provision", "etl", "features", "capacity", "train", "teardown"]

#: Airflow's own rule for DAG and task ids (``airflow.utils.helpers.KEY_REGEX``).
ID_PATTERN = r"^[\w.-]+$"
Identifier = Annotated[str, Field(pattern=ID_PATTERN, min_length=1, max_length=250)]
AssetName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$", min_length=1, max_length=1500)]

JsonType = Literal["string", "integer", "number", "boolean", "array", "object"]

#: Pydantic accepts seconds or an ISO 8601 duration; the published schema says so too.
Duration = Annotated[
    timedelta,
    WithJsonSchema({"anyOf": [{"type": "number", "minimum": 0}, {"type": "string", "format": "duration"}]}),
]


class SpecModel(BaseModel):
    """Base of every spec model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _iso_dates(value: Any) -> Any:
    if isinstance(value, date):  # datetime is a date too
        return value.isoformat()
    if isinstance(value, list):
        return [_iso_dates(item) for item in value]
    if isinstance(value, dict):
        return {key: _iso_dates(item) for key, item in value.items()}
    return value


class ParamItems(SpecModel):
    """Element type of an ``array`` parameter."""

    type: JsonType = Field(description="JSON-schema type of each element.")
    enum: list[JsonValue] | None = Field(default=None, description="Allowed element values.")
    pattern: str | None = Field(default=None, description="Regular expression each string element matches.")


class ParamSpec(SpecModel):
    """A run parameter; becomes an ``airflow.sdk.Param`` and a typed field of the trigger form."""

    type: JsonType = Field(description="JSON-schema type of the value.")
    default: JsonValue = Field(
        default=None,
        description="Value used by scheduled runs and pre-filled in the trigger form. Omit it to make the "
        "parameter required (only allowed for pipelines without a schedule).",
    )
    nullable: bool = Field(default=False, description="Also accept null (an empty form field).")
    title: str | None = Field(default=None, description="Label shown in the trigger form.")
    description: str | None = Field(default=None, description="Help text shown in the trigger form.")
    enum: list[JsonValue] | None = Field(default=None, min_length=1, description="Allowed values.")
    minimum: int | float | None = Field(default=None, description="Smallest allowed number.")
    maximum: int | float | None = Field(default=None, description="Largest allowed number.")
    min_length: int | None = Field(default=None, ge=0, description="Shortest allowed string.")
    max_length: int | None = Field(default=None, ge=0, description="Longest allowed string.")
    pattern: str | None = Field(default=None, description="Regular expression a string value matches.")
    format: Literal["date", "date-time", "time", "email", "uri"] | None = Field(
        default=None, description="String format; date and date-time get a picker in the trigger form."
    )
    items: ParamItems | None = Field(default=None, description="Element type of an array parameter.")
    min_items: int | None = Field(default=None, ge=0, description="Fewest elements of an array parameter.")

    @field_validator("default", "enum", mode="before")
    @classmethod
    def _dates_as_iso_strings(cls, value: Any) -> Any:
        # YAML reads 2026-11-01 as a date; parameter values are JSON, where dates are strings.
        return _iso_dates(value)

    @field_validator("pattern")
    @classmethod
    def _pattern_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            re.compile(value)
        return value

    @model_validator(mode="after")
    def _keywords_fit_type(self) -> ParamSpec:
        numeric = self.type in ("integer", "number")
        if not numeric and (self.minimum is not None or self.maximum is not None):
            raise ValueError(f"minimum/maximum only apply to integer or number parameters, not {self.type}")
        if self.type != "string" and (
            self.min_length is not None or self.max_length is not None or self.pattern or self.format
        ):
            raise ValueError(
                f"min_length/max_length/pattern/format only apply to string parameters, not {self.type}"
            )
        if self.type != "array" and (self.items is not None or self.min_items is not None):
            raise ValueError(f"items/min_items only apply to array parameters, not {self.type}")
        return self

    @property
    def required(self) -> bool:
        """True when the spec gives no default: the trigger form must supply a value."""
        return "default" not in self.model_fields_set

    def json_schema(self) -> dict[str, Any]:
        """The JSON schema Airflow's ``Param`` validates values against (and renders the form from)."""
        schema: dict[str, Any] = {"type": [self.type, "null"] if self.nullable else self.type}
        optional: dict[str, Any] = {
            "title": self.title,
            "enum": self.enum,
            "minimum": self.minimum,
            "maximum": self.maximum,
            "minLength": self.min_length,
            "maxLength": self.max_length,
            "pattern": self.pattern,
            "format": self.format,
            "minItems": self.min_items,
            "items": self.items.model_dump(exclude_none=True) if self.items else None,
        }
        schema.update({key: value for key, value in optional.items() if value is not None})
        return schema


class AssetSpec(SpecModel):
    """A data asset produced or consumed by stages; becomes an ``airflow.sdk.Asset``."""

    uri: str | None = Field(
        default=None,
        description="Asset URI; pipelines that share an asset must use the same URI. "
        "Defaults to the asset's name. ${...} placeholders are expanded (see stage args).",
    )
    group: str | None = Field(default=None, description="Asset group shown in the Assets view.")
    extra: dict[str, JsonValue] | None = Field(default=None, description="Free-form metadata.")


class AssetSchedule(SpecModel):
    """Data-aware schedule: run when the listed assets have been updated."""

    assets: list[AssetName] = Field(min_length=1, description="Names of assets declared under `assets`.")
    mode: Literal["all", "any"] = Field(
        default="all", description="Run once all of the assets were updated, or when any one was."
    )


class StageSpec(SpecModel):
    """One step of the pipeline: an operator and its arguments; becomes one Airflow task."""

    operator: str = Field(
        min_length=1,
        description="Operator short name (see `nuro-ml validate --list-operators`) or a dotted class path.",
    )
    kind: Phase | None = Field(
        default=None,
        description="Pipeline phase; defaults to the operator's usual phase. A stage may not depend on "
        "a stage of a later phase (teardown stages excepted).",
    )
    args: dict[str, Any] = Field(
        default_factory=dict,
        description="Operator constructor arguments, checked against its signature when the DAG is "
        "built. Strings may use Jinja templates in templated fields and ${...} placeholders for "
        "platform paths (data_dir, raw_logs_dir, etl_output_dir, feast_dir, feature_repo_dir, "
        "artifacts_dir, terraform_dir, workloads_dir, python).",
    )
    depends_on: list[Identifier] = Field(default_factory=list, description="Stages that must finish first.")
    retries: int | None = Field(default=None, ge=0, le=100, description="Overrides `default_retries`.")
    teardown: bool | None = Field(
        default=None,
        description="Run as an Airflow teardown task (always runs once its setups ran, even after failures). "
        "Defaults to true for kind `teardown`.",
    )
    setups: list[Identifier] = Field(
        default_factory=list,
        description="For teardown stages: the setup stages whose resources this one releases.",
    )
    produces: list[AssetName] = Field(
        default_factory=list, description="Assets this stage updates on success (task outlets)."
    )
    consumes: list[AssetName] = Field(
        default_factory=list, description="Assets this stage reads (task inlets)."
    )
    doc: str | None = Field(default=None, description="Markdown shown on the task in the UI.")


class PipelineSpec(SpecModel):
    """One YAML file: one DAG."""

    dag_id: Identifier = Field(description="Unique DAG id.")
    description: str | None = Field(default=None, description="One line shown in the DAG list.")
    doc: str | None = Field(default=None, description="Markdown documentation shown on the DAG page.")
    schedule: str | AssetSchedule | None = Field(
        default=None,
        description="Cron expression or preset (@daily), null for manual runs only, or "
        "{assets: [...]} to run when assets are updated.",
    )
    start_date: datetime | date = Field(
        description="First logical date (UTC unless `timezone` says otherwise)."
    )
    end_date: datetime | date | None = Field(default=None, description="Last logical date.")
    timezone: str = Field(
        default="UTC", description="IANA time zone of start_date/end_date and the cron schedule."
    )
    catchup: bool = Field(default=False, description="Create runs for past intervals since start_date.")
    owner: str = Field(default="ml-platform", min_length=1, description="Task owner shown in the UI.")
    team: str | None = Field(
        default=None,
        pattern=r"^[a-z][a-z0-9-]*$",
        description="Team the pipeline belongs to: added as a `team:` tag and passed as `team` to "
        "operators that take one (GPU quota accounting) unless a stage sets it.",
    )
    tags: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        default_factory=list, description="DAG tags (at most 100 characters each)."
    )
    default_retries: int = Field(
        default=0, ge=0, le=100, description="Retries for stages that do not set `retries`."
    )
    retry_delay: Duration = Field(
        default=timedelta(minutes=5), description="Delay between retries (seconds or ISO 8601 duration)."
    )
    max_active_runs: int | None = Field(default=None, ge=1, description="Concurrent runs allowed.")
    dagrun_timeout: Duration | None = Field(
        default=None, description="Fail a run that takes longer than this."
    )
    render_template_as_native_obj: bool = Field(
        default=True,
        description="Render Jinja templates to native Python values ('{{ params.gpus }}' arrives as an int).",
    )
    params: dict[Identifier, ParamSpec] = Field(default_factory=dict, description="Run parameters.")
    assets: dict[AssetName, AssetSpec | None] = Field(
        default_factory=dict, description="Assets referenced by `schedule`, `produces` and `consumes`."
    )
    stages: dict[Identifier, StageSpec] = Field(min_length=1, description="The pipeline's steps, by task id.")
