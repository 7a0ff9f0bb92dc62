"""Topic mappings: which recorded topics feed which table, and how message fields become columns.

A mapping is data (YAML or JSON), validated with Pydantic; errors name ``file:line:col`` and the
field, as for pipeline specs. Example::

    version: 1
    exclude: ["/diagnostics*"]            # topic globs left out on purpose (counted, not written)
    tables:
      ego_pose:
        sources:
          - schemas: [nav_msgs/msg/Odometry]      # schema-name globs (pkg/Type matches pkg/msg/Type)
            topics: ["/localization/*"]           # topic-name globs (default: any)
            time: header.stamp                    # or log_time (default)
            columns:
              frame_id: header.frame_id
              x_m: pose.pose.position.x           # a field path of the message
              speed_kph: {field: twist.twist.linear.x, scale: 3.6}
    overrides:                                     # per fleet or vehicle generation
      - vehicles: ["gen3-*"]
        tables: {...}                              # tried before the base sources
        exclude: [...]

A topic is routed to the first source (overrides first, then the mapping, then the built-in
mapping) whose schema and topic globs match. A topic that matches none lands in the generic
table ``topic_<name>`` with every decoded field, unless ``unmapped: fail``. Decoded fields are
flat: nested fields are joined with ``_`` (``pose.position.x`` is ``pose_position_x``), and
repeated messages are lists of structs whose fields are flattened the same way (a Foxglove
``FrameTransforms`` row holds ``transforms`` with ``translation_x`` ... ``rotation_w``). Tables named in
:data:`CANONICAL_COLUMNS` feed the derived tables and must map their required columns.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from nuro_ml.exceptions import ETLError
from nuro_ml.specs import issues as spec_issues
from nuro_ml.specs import yaml_source

BUILTIN_PATH = Path(__file__).with_name("builtin_mapping.yaml")
BUILTIN_NAME = "builtin"
GENERIC_PREFIX = "topic_"
LOG_TIME = "log_time"

#: Tables the derived tables read, with the columns a mapping must give them.
CANONICAL_COLUMNS: dict[str, tuple[str, ...]] = {
    "ego_pose": ("x_m", "y_m", "z_m", "qx", "qy", "qz", "qw"),
    "gnss_fix": ("latitude", "longitude", "altitude_m", "position_covariance", "covariance_type"),
    "imu": (
        *(f"orientation_{a}" for a in "xyzw"),
        *(f"angular_velocity_{a}" for a in "xyz"),
        *(f"linear_acceleration_{a}" for a in "xyz"),
    ),
    "vehicle_can": ("speed_mps", "steering_angle_rad", "throttle", "brake_pressure_bar", "gear"),
    "lidar_payload": ("point_stride", "fields", "data"),
    "camera_payload": ("format", "data"),
}
#: Tables the job derives; a mapping cannot write them.
DERIVED_TABLES = ("lidar_points", "camera_frames", "ego_motion", "scene_stats")
_FIELD_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_TABLE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class MappingError(ETLError, ValueError):
    """A mapping file is invalid; the message lists ``file:line:col: field: problem`` lines."""


class UnmappedTopicError(ValueError):
    """A topic's messages would end in no table and the mapping does not exclude it."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnSpec(_Model):
    """A column taken from a message field, optionally converted: ``value * scale + offset``."""

    field: str = Field(description="dotted field path of the message, e.g. pose.pose.position.x")
    scale: float | None = Field(default=None, description="multiply the value (unit conversion)")
    offset: float | None = Field(default=None, description="add to the value after scaling")

    @field_validator("field")
    @classmethod
    def _path(cls, value: str) -> str:
        if not _FIELD_PATH.match(value):
            raise ValueError(f"{value!r} is not a field path like pose.position.x")
        return value

    @property
    def column(self) -> str:
        """The decoded column the path names (decoders flatten nested fields with ``_``)."""
        return self.field.replace(".", "_")


class SourceSpec(_Model):
    """Messages that feed a table: matched by schema and topic globs."""

    schemas: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    topics: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    time: str = Field(default=LOG_TIME, description="log_time, or the field path of a message timestamp")
    columns: dict[str, str | ColumnSpec] | Literal["*"] = Field(
        description='output column -> field path or {field, scale, offset}; "*" keeps every field'
    )

    @field_validator("time")
    @classmethod
    def _time(cls, value: str) -> str:
        if value != LOG_TIME and not _FIELD_PATH.match(value):
            raise ValueError(f"time must be 'log_time' or a field path like header.stamp, not {value!r}")
        return value

    @field_validator("columns")
    @classmethod
    def _columns(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for name, spec in value.items():
                if not _TABLE_NAME.match(name):
                    raise ValueError(f"column name {name!r} must be lower_snake_case")
                if isinstance(spec, str) and not _FIELD_PATH.match(spec):
                    raise ValueError(f"column {name!r}: {spec!r} is not a field path like pose.position.x")
        return value

    def column_specs(self) -> dict[str, ColumnSpec] | None:
        """Output column -> spec; ``None`` for ``"*"`` (every decoded field)."""
        if self.columns == "*":
            return None
        return {k: ColumnSpec(field=v) if isinstance(v, str) else v for k, v in self.columns.items()}

    def matches(self, topic: str, schema_name: str) -> bool:
        return any(fnmatch.fnmatchcase(topic, g) for g in self.topics) and any(
            _schema_match(schema_name, g) for g in self.schemas
        )


class TableSpec(_Model):
    sources: list[SourceSpec] = Field(min_length=1)


def _check_tables(tables: dict[str, TableSpec]) -> dict[str, TableSpec]:
    for name, table in tables.items():
        if not _TABLE_NAME.match(name) or name.startswith(GENERIC_PREFIX):
            raise ValueError(
                f"table name {name!r} must be lower_snake_case and not start with {GENERIC_PREFIX!r}"
            )
        if name in DERIVED_TABLES:
            raise ValueError(f"table {name!r} is derived by the job and cannot be mapped")
        required = CANONICAL_COLUMNS.get(name)
        for i, source in enumerate(table.sources):
            specs = source.column_specs()
            if required and specs is not None and (missing := [c for c in required if c not in specs]):
                raise ValueError(
                    f"table {name!r} source {i}: missing required column(s) {', '.join(missing)}"
                )
    return tables


class OverrideSpec(_Model):
    """Sources and exclusions for some vehicles (a fleet or a vehicle generation)."""

    vehicles: list[str] = Field(min_length=1, description="vehicle-id globs")
    exclude: list[str] = Field(default_factory=list)
    tables: dict[str, TableSpec] = Field(default_factory=dict)

    @field_validator("tables")
    @classmethod
    def _tables(cls, value: dict[str, TableSpec]) -> dict[str, TableSpec]:
        return _check_tables(value)


class TopicMapping(_Model):
    """A mapping file."""

    version: Literal[1] = 1
    exclude: list[str] = Field(default_factory=list, description="topic globs left out on purpose")
    unmapped: Literal["generic", "fail"] = Field(
        default="generic", description="what happens to a topic no source matches"
    )
    builtin: bool = Field(default=True, description="fall back to the built-in mapping")
    tables: dict[str, TableSpec] = Field(default_factory=dict)
    overrides: list[OverrideSpec] = Field(default_factory=list)

    @field_validator("tables")
    @classmethod
    def _tables(cls, value: dict[str, TableSpec]) -> dict[str, TableSpec]:
        return _check_tables(value)


def _schema_match(schema_name: str, pattern: str) -> bool:
    if fnmatch.fnmatchcase(schema_name, pattern):
        return True
    # rosbag2 names types pkg/msg/Type; people often write pkg/Type.
    parts = schema_name.split("/")
    return len(parts) == 3 and parts[1] == "msg" and fnmatch.fnmatchcase(f"{parts[0]}/{parts[2]}", pattern)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of mapping files (what editors validate against)."""
    schema = TopicMapping.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "nuro-ml topic mapping"
    return schema


@dataclass(frozen=True)
class Route:
    """Where one topic goes."""

    table: str | None  # None: excluded
    source: SourceSpec | None  # None: generic table or excluded
    mapping: str  # the file (or "builtin") that decided


@dataclass(frozen=True)
class LoadedMapping:
    """A validated mapping with where it came from; resolves routes per vehicle."""

    spec: TopicMapping
    name: str
    text: str

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def digest_for(self, vehicle: str) -> str:
        """What shapes a vehicle's rows: the mapping, its applicable overrides and the built-ins."""
        parts = {
            "mapping": json.loads(self.spec.model_dump_json(exclude={"overrides"})),
            "overrides": [
                json.loads(o.model_dump_json()) for o in self.spec.overrides if _vehicle_match(vehicle, o)
            ],
            "builtin": builtin().digest if self.spec.builtin and self is not builtin() else None,
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def route(self, vehicle: str, topic: str, schema_name: str) -> Route:
        overrides = [o for o in self.spec.overrides if _vehicle_match(vehicle, o)]
        excluded = [*self.spec.exclude, *(g for o in overrides for g in o.exclude)]
        if any(fnmatch.fnmatchcase(topic, g) for g in excluded):
            return Route(None, None, self.name)
        for tables in [*(o.tables for o in overrides), self.spec.tables]:
            for table, spec in tables.items():
                for source in spec.sources:
                    if source.matches(topic, schema_name):
                        return Route(table, source, self.name)
        if self.spec.builtin and self is not builtin():
            route = builtin().route(vehicle, topic, schema_name)
            if route.source is not None:
                return route
        if self.spec.unmapped == "fail":
            raise UnmappedTopicError(
                f"topic {topic!r} (schema {schema_name!r}) matches no table of mapping {self.name} and is "
                "not excluded; add a source for it under 'tables' or its name under 'exclude' in "
                f"{self.name}, or set unmapped: generic"
            )
        return Route(generic_table(topic), None, self.name)


def _vehicle_match(vehicle: str, override: OverrideSpec) -> bool:
    return any(fnmatch.fnmatchcase(vehicle, g) for g in override.vehicles)


def generic_table(topic: str) -> str:
    """``/sensing/imu/imu_raw`` -> ``topic_sensing_imu_imu_raw``."""
    return GENERIC_PREFIX + (re.sub(r"[^a-z0-9]+", "_", topic.lower()).strip("_") or "root")


def parse(text: str, name: str) -> LoadedMapping:
    """Validate mapping text (YAML or JSON); :class:`MappingError` lists every problem by line."""
    try:
        document = yaml_source.parse(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{mark.line + 1}:{mark.column + 1}" if mark is not None else "1:1"
        raise MappingError(f"{name}:{where}: (document): not valid YAML: {err}") from err
    data = document.data if document.data is not None else {}
    if not isinstance(data, dict):
        raise MappingError(
            f"{name}:1:1: (document): a mapping file is a YAML mapping, not {type(data).__name__}"
        )
    try:
        spec = TopicMapping.model_validate(data)
    except ValidationError as err:
        found = spec_issues.from_validation_error(name, document, err, TopicMapping)
        raise MappingError("\n".join(issue.format() for issue in found)) from None
    return LoadedMapping(spec, name, text)


def load(path: str | Path | None) -> LoadedMapping:
    """The mapping file at ``path``, or the built-in mapping when ``path`` is empty."""
    if not path:
        return builtin()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise MappingError(f"{p}: cannot read the mapping file: {err.strerror or err}") from err
    return parse(text, str(p))


@cache
def builtin() -> LoadedMapping:
    """ROS 2 standard types, Foxglove schemas and our own types (``builtin_mapping.yaml``)."""
    loaded = parse(BUILTIN_PATH.read_text(encoding="utf-8"), BUILTIN_NAME)
    return LoadedMapping(loaded.spec.model_copy(update={"builtin": False}), BUILTIN_NAME, loaded.text)


def tables_of(mappings: Iterable[LoadedMapping]) -> list[str]:
    """Named tables of the mappings (generic tables are found at run time)."""
    names: set[str] = set()
    for m in mappings:
        names.update(m.spec.tables)
        for o in m.spec.overrides:
            names.update(o.tables)
    return sorted(names)


def field_columns(source: SourceSpec) -> Sequence[str] | None:
    """Decoded columns a source needs (``None``: all)."""
    specs = source.column_specs()
    if specs is None:
        return None
    cols = {s.column for s in specs.values()}
    if source.time != LOG_TIME:
        cols.add(source.time.replace(".", "_"))
    return sorted(cols)
