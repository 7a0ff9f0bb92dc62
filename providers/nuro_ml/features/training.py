"""Point-in-time-correct training frames from the offline store, for training jobs.

Runs anywhere the data directory is visible (an Airflow worker, a Ray job process): the
registry and sources are found through ``NURO_ML_DATA_DIR`` and ``NURO_ML_FEAST_*``, no Airflow
connection needed. The feature repository must have been applied (``FeastApplyOperator``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nuro_ml import settings
from nuro_ml.exceptions import FeatureStoreError
from nuro_ml.features.config import FeastSettings
from nuro_ml.features.partitions import PartitionedSource
from nuro_ml.features.schema import PARTITION_EVENT_WINDOW, check_columns, read_file_schema

if TYPE_CHECKING:
    from feast import FeatureService, FeatureStore
    from feast.infra.offline_stores.file_source import FileSource

log = logging.getLogger(__name__)

ENTITY_COLUMNS = ("scene_id", "vehicle_id", "event_timestamp")
LABEL = "hard_brake"


def _utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _service_features(service: FeatureService) -> list[str]:
    names: list[str] = []
    for projection in service.feature_view_projections:
        names.extend(f.name for f in projection.features)
    return names


def _entity_source(store: FeatureStore, service: FeatureService) -> FileSource:
    from feast.infra.offline_stores.file_source import FileSource

    for projection in service.feature_view_projections:
        view = store.get_feature_view(projection.name)
        if isinstance(view.batch_source, FileSource) and "scene_id" in view.join_keys:
            return view.batch_source
    raise FeatureStoreError(
        f"Feature service {service.name!r} has no scene-keyed feature view on a file source to take "
        "scene rows and labels from"
    )


def _entity_rows(
    source_path: str,
    start: datetime,
    end: datetime,
    vehicles: Sequence[str] | None,
    created_column: str | None,
) -> pd.DataFrame:
    located = PartitionedSource.at(source_path)
    wanted = {"scene_id": "STRING", "vehicle_id": "STRING", LABEL: "INT64"}
    ts_columns = ["event_timestamp"] + ([created_column] if created_column else [])
    vehicle_dirs = {f"vehicle={v}" for v in vehicles} if vehicles else None
    tables = []
    for partition in located.partitions_for(start, end, PARTITION_EVENT_WINDOW):
        for f in partition.files:
            if vehicle_dirs is not None and located.by_date:
                parts = set(f.path.relative_to(located.root).parts)
                if any(p.startswith("vehicle=") for p in parts) and not parts & vehicle_dirs:
                    continue
            check_columns(
                view="scene_training entity rows",
                schema=read_file_schema(f.path),
                where=str(f.path),
                expected=wanted,
                timestamps=ts_columns,
            )
            t = pq.read_table(f.path, columns=[*wanted, *ts_columns])
            tables.append(
                pa.table(
                    {
                        "scene_id": t.column("scene_id").cast(pa.string()),
                        "vehicle_id": t.column("vehicle_id").cast(pa.string()),
                        "event_timestamp": t.column("event_timestamp").cast(pa.timestamp("us", tz="UTC")),
                        LABEL: t.column(LABEL).cast(pa.int64()),
                        "__created": (
                            t.column(created_column).cast(pa.timestamp("us", tz="UTC"))
                            if created_column
                            else pa.nulls(t.num_rows, pa.timestamp("us", tz="UTC"))
                        ),
                    }
                )
            )
    if not tables:
        return pd.DataFrame(
            {
                "scene_id": pd.Series(dtype="object"),
                "vehicle_id": pd.Series(dtype="object"),
                "event_timestamp": pd.Series(dtype="datetime64[us, UTC]"),
                LABEL: pd.Series(dtype="int64"),
            }
        )
    table = pa.concat_tables(tables)
    ts = table.column("event_timestamp")
    mask = pc.and_(
        pc.greater_equal(ts, pa.scalar(start, pa.timestamp("us", tz="UTC"))),
        pc.less(ts, pa.scalar(end, pa.timestamp("us", tz="UTC"))),
    )
    if vehicles:
        mask = pc.and_(mask, pc.is_in(table.column("vehicle_id"), pa.array(list(vehicles), pa.string())))
    frame = table.filter(mask).to_pandas()
    # An ETL rerun may leave a scene twice; the newest write is the truth, as in Feast's joins.
    frame = frame.sort_values(["scene_id", "__created"], na_position="first")
    frame = frame.drop_duplicates("scene_id", keep="last").drop(columns="__created")
    return frame.reset_index(drop=True)


def load_training_frame(
    *,
    start: datetime,
    end: datetime,
    vehicles: Sequence[str] | None = None,
    repo_path: str | Path | None = None,
    feature_service: str = "scene_training",
) -> pd.DataFrame:
    """Scenes starting in ``[start, end)`` with their features as of the scene start and the label.

    Entity rows are the scenes of ``scene_stats`` in the interval (optionally only the given
    vehicles); features come from Feast's ``get_historical_features`` for the feature service,
    so each value is the newest one known at the scene's event time (point-in-time correct).
    The ETL overwrites whole partitions on a rerun, so a scene has one row; should a partition
    hold two rows of one scene with the same start, Feast's file offline store does not reliably
    prefer the later ``created_timestamp`` for the features (the label here does).

    :param start: first scene start included (naive means UTC).
    :param end: scene starts before this are included.
    :param vehicles: only these vehicle ids (default all).
    :param repo_path: feature repository directory (default ``settings.feature_repo_dir()``).
    :param feature_service: the Feast feature service whose features are joined.
    :return: columns ``scene_id``, ``vehicle_id``, ``event_timestamp``, every feature of the
        service (in service order), ``hard_brake``; one row per scene, ordered by event time.
    """
    from feast.errors import FeatureServiceNotFoundException

    start, end = _utc(start), _utc(end)
    if start >= end:
        raise FeatureStoreError(f"Training interval is empty: start {start} is not before end {end}")
    repo = Path(repo_path).resolve() if repo_path else settings.feature_repo_dir()
    cfg = FeastSettings.from_env().resolve(repo)
    store = cfg.feature_store()
    try:
        service = store.get_feature_service(feature_service)
    except FeatureServiceNotFoundException as exc:
        raise FeatureStoreError(
            f"Feature service {feature_service!r} is not in the registry at {cfg.describe()['registry']} "
            f"(project {cfg.project!r}); apply the feature repository {repo} first"
        ) from exc
    from feast.infra.offline_stores.file_source import FileSource

    source = _entity_source(store, service)
    source_path = FileSource.get_uri_for_file_path(repo, source.path)
    rows = _entity_rows(source_path, start, end, vehicles, source.created_timestamp_column)
    features = _service_features(service)
    columns = [*ENTITY_COLUMNS, *features, LABEL]
    if rows.empty:
        log.info(
            "No scenes in [%s, %s) for %s", start.isoformat(), end.isoformat(), vehicles or "all vehicles"
        )
        empty = rows.reindex(columns=columns)
        return empty
    entity_df = rows[["scene_id", "event_timestamp"]].copy()
    try:
        joined = store.get_historical_features(entity_df=entity_df, features=service).to_df()
    except FeatureStoreError:
        raise
    except Exception as exc:
        raise FeatureStoreError(
            f"get_historical_features for feature service {feature_service!r} over "
            f"[{start}, {end}) failed: {exc}"
        ) from exc
    joined["event_timestamp"] = pd.to_datetime(joined["event_timestamp"], utc=True)
    rows["event_timestamp"] = pd.to_datetime(rows["event_timestamp"], utc=True)
    frame = rows.merge(joined, on=["scene_id", "event_timestamp"], how="left", validate="one_to_one")
    frame = frame[columns].sort_values(["event_timestamp", "scene_id"]).reset_index(drop=True)
    log.info(
        "Training frame [%s, %s): %d scenes, %d features, %d positive labels",
        start.isoformat(),
        end.isoformat(),
        len(frame),
        len(features),
        int(frame[LABEL].sum()),
    )
    return frame
