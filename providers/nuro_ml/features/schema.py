"""The ``scene_stats`` table as the ETL writes it, and the column checks Feast views rely on.

The table lives at ``<etl root>/scene_stats/date=YYYY-MM-DD/vehicle=<id>/*.parquet``. A
partition ``date=D`` holds the scenes of drives that started on day ``D`` (UTC); a drive that
runs past midnight puts scenes of day ``D + 1`` into it, never later ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from nuro_ml.exceptions import FeatureStoreError

TABLE_NAME = "scene_stats"

#: How far after its partition date a row's event time may lie (drives that cross midnight).
PARTITION_EVENT_WINDOW = timedelta(days=2)

#: Arrow types accepted for each Feast value type name; anything else is schema drift.
_ACCEPTED_TYPES: dict[str, tuple[pa.DataType, ...]] = {
    "DOUBLE": (pa.float64(), pa.float32()),
    "FLOAT": (pa.float32(), pa.float64()),
    "INT64": (pa.int64(), pa.int32(), pa.int16(), pa.int8()),
    "INT32": (pa.int32(), pa.int16(), pa.int8()),
    "STRING": (pa.string(), pa.large_string()),
    "BOOL": (pa.bool_(),),
    "BYTES": (pa.binary(), pa.large_binary()),
}


def accepted_types(value_type_name: str) -> tuple[pa.DataType, ...] | None:
    """Arrow types a column of the given Feast value type may have (None: not checked)."""
    return _ACCEPTED_TYPES.get(value_type_name)


def check_columns(
    *,
    view: str,
    schema: pa.Schema,
    where: str,
    expected: Mapping[str, str | None],
    timestamps: Iterable[str] = (),
) -> None:
    """Raise :class:`FeatureStoreError` if ``schema`` lacks a column the view reads or has drifted.

    :param view: the feature view whose columns are checked (named in the error).
    :param schema: the Arrow schema found in the data.
    :param where: the file or directory the schema came from (named in the error).
    :param expected: column name -> Feast value type name (``None`` accepts any type).
    :param timestamps: columns that must be Arrow timestamps.
    """
    names = set(schema.names)
    for column, value_type in expected.items():
        if column not in names:
            raise FeatureStoreError(
                f"Feature view {view!r} reads column {column!r}, which is missing from {where} "
                f"(columns there: {', '.join(sorted(names))})"
            )
        allowed = accepted_types(value_type) if value_type else None
        actual = schema.field(column).type
        if allowed is not None and actual not in allowed:
            raise FeatureStoreError(
                f"Feature view {view!r}: column {column!r} in {where} has type {actual}, "
                f"expected {' or '.join(str(t) for t in allowed)} for Feast type {value_type}"
            )
    for column in timestamps:
        if column not in names:
            raise FeatureStoreError(
                f"Feature view {view!r} reads timestamp column {column!r}, which is missing from "
                f"{where} (columns there: {', '.join(sorted(names))})"
            )
        if not pa.types.is_timestamp(schema.field(column).type):
            raise FeatureStoreError(
                f"Feature view {view!r}: column {column!r} in {where} has type "
                f"{schema.field(column).type}, expected a timestamp"
            )


def read_file_schema(path: Path) -> pa.Schema:
    """The Arrow schema in a Parquet file's footer; unreadable files raise FeatureStoreError."""
    try:
        return pq.read_schema(path)
    except (OSError, pa.ArrowException) as exc:
        raise FeatureStoreError(f"Cannot read the Parquet footer of {path}: {exc}") from exc
