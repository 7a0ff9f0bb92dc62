"""Operators that apply the Feast feature repository and materialize features over an interval."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from airflow.sdk import BaseOperator

from nuro_ml.exceptions import FeatureStoreError
from nuro_ml.hooks.feast import FeastHook

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context


def parse_instant(value: str | datetime, *, field: str) -> datetime:
    """A timezone-aware UTC datetime from a datetime or an ISO-8601 string (naive means UTC)."""
    if isinstance(value, datetime):
        parsed = value
    else:
        text = str(value).strip()
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError as exc:
            raise FeatureStoreError(f"{field}={text!r} is not an ISO-8601 timestamp") from exc
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


class FeastApplyOperator(BaseOperator):
    """
    Apply the Feast feature repository to the registry and online-store infrastructure.

    Like ``feast apply``: objects defined in the repository are created or updated, objects
    no longer defined are removed. Before anything changes, every file-sourced feature view is
    checked against the newest partitions of its source; a missing column or a type that
    drifted fails the task naming the view, the column and the file. Applying the same
    repository twice changes nothing, so retries are safe. The registry diff is logged and
    returned: ``{"added": [...], "changed": [...], "removed": [...], "unchanged": N,
    "changed_properties": {...}}`` with entries ``<object type>:<name>`` (for example
    ``feature_view:scene_ego_motion``).

    .. seealso::
        :ref:`howto/operator:FeastApplyOperator`

    :param feast_conn_id: :ref:`Feast connection <howto/connection:feast>`; without a
        ``feast_default`` connection the embedded defaults apply. (templated)
    :param repo_path: feature repository directory; default ``settings.feature_repo_dir()``. (templated)
    """

    template_fields: Sequence[str] = ("feast_conn_id", "repo_path")
    ui_color = "#e8d6f5"

    def __init__(
        self,
        *,
        feast_conn_id: str = FeastHook.default_conn_name,
        repo_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.feast_conn_id = feast_conn_id
        self.repo_path = repo_path

    @cached_property
    def hook(self) -> FeastHook:
        return FeastHook(self.feast_conn_id, repo_path=self.repo_path)

    def execute(self, context: Context) -> dict[str, Any]:
        self.log.info("Applying feature repository %s to %s", self.hook.repo_path, self.hook.describe())
        result = self.hook.apply()
        for label in result.added:
            self.log.info("Added %s", label)
        for label in result.changed:
            self.log.info("Changed %s (%s)", label, ", ".join(result.changed_properties.get(label, [])))
        for label in result.removed:
            self.log.info("Removed %s", label)
        self.log.info(
            "Registry diff: %d added, %d changed, %d removed, %d unchanged",
            len(result.added),
            len(result.changed),
            len(result.removed),
            len(result.unchanged),
        )
        return result.to_xcom()


class FeastMaterializeOperator(BaseOperator):
    """
    Materialize feature views into the online store over ``[start - lookback, end)``.

    The lookback re-reads recent partitions so rows that arrived late (an ETL rerun, a vehicle
    uploading days later) reach the online store on the next run. Work is cut into one
    computation per (feature view, date partition); each is cached by the view definition,
    the partition's file fingerprints, the effective interval and the target store, so
    unchanged partitions are skipped (logged as cache hits) and a retry or an overlapping run
    redoes nothing that already landed. With Redis the rows are written straight from Arrow
    batches in Feast's exact key/value format. Every partition about to be computed is
    schema-checked first: drift fails the task before anything is written.

    Returns (XCom)::

        {"start": ISO, "end": ISO, "online_store": "...", "rows": {view: rows written},
         "rows_total": N, "cache_hits": H, "cache_misses": M,
         "cache": {view: {"hits": h, "misses": m}}, "stale_rows_skipped": S,
         "paths": {view: {"path": "partitioned" | "feast", "writer": "redis" | "feast" | "feast engine",
                          "cache": "files:stat" | "files:content" | "data_version:V" | "off",
                          "reason": "..."}}}

    Views whose batch source is local Parquet (a ``FileSource`` or a ``SparkSource`` with a
    path) take the partitioned path described above; any other source (warehouse tables,
    queries, remote files) goes through Feast's own ``materialize`` over the same interval and
    lookback, with the repository's offline store and batch engine (``rows`` is then None:
    Feast does not count them). Feast's engine is what the stores untested here (BigQuery,
    Snowflake, Redshift, DynamoDB, Cassandra...) use.

    .. seealso::
        :ref:`howto/operator:FeastMaterializeOperator`

    :param start: start of the interval, ISO-8601 or datetime (naive means UTC). (templated)
    :param end: end of the interval (exclusive). (templated)
    :param lookback: how far before ``start`` to re-read for late data.
    :param feature_views: views to materialize; default every online view of the registry. (templated)
    :param feast_conn_id: :ref:`Feast connection <howto/connection:feast>`. (templated)
    :param repo_path: feature repository directory; default ``settings.feature_repo_dir()``. (templated)
    :param use_cache: skip computations recorded in the computation cache.
    :param fingerprint: how partitions are identified: ``stat`` (paths, sizes, mtimes; cheap)
        or ``content`` (file hashes; immune to touched-but-unchanged files).
    :param data_versions: feature view name -> version of its source data (for example the
        load date of a warehouse table). Views whose source cannot be fingerprinted by content
        are cached under this version (or their ``nuro_ml.data_version`` tag); without one they
        are recomputed on every run. (templated)
    """

    template_fields: Sequence[str] = (
        "start",
        "end",
        "feature_views",
        "feast_conn_id",
        "repo_path",
        "data_versions",
    )
    ui_color = "#e8d6f5"

    def __init__(
        self,
        *,
        start: str | datetime = "{{ data_interval_start }}",
        end: str | datetime = "{{ data_interval_end }}",
        lookback: timedelta = timedelta(days=1),
        feature_views: Sequence[str] | None = None,
        feast_conn_id: str = FeastHook.default_conn_name,
        repo_path: str | Path | None = None,
        use_cache: bool = True,
        fingerprint: Literal["stat", "content"] = "stat",
        data_versions: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if lookback < timedelta(0):
            raise ValueError(f"lookback must not be negative, got {lookback}")
        if fingerprint not in ("stat", "content"):
            raise ValueError(f"fingerprint must be 'stat' or 'content', got {fingerprint!r}")
        self.start = start
        self.end = end
        self.lookback = lookback
        self.feature_views = feature_views
        self.feast_conn_id = feast_conn_id
        self.repo_path = repo_path
        self.use_cache = use_cache
        self.fingerprint: Literal["stat", "content"] = fingerprint
        self.data_versions = data_versions
        self._stop = threading.Event()

    @cached_property
    def hook(self) -> FeastHook:
        return FeastHook(self.feast_conn_id, repo_path=self.repo_path)

    def execute(self, context: Context) -> dict[str, Any]:
        start = parse_instant(self.start, field="start")
        end = parse_instant(self.end, field="end")
        if start >= end:
            raise FeatureStoreError(
                f"Materialization interval is empty: start {start} is not before end {end}"
            )
        begin = start - self.lookback
        views = list(self.feature_views) if self.feature_views else None
        self.log.info(
            "Materializing %s over [%s, %s) (interval [%s, %s) with lookback %s) into %s",
            ", ".join(views) if views else "all online feature views",
            begin.isoformat(),
            end.isoformat(),
            start.isoformat(),
            end.isoformat(),
            self.lookback,
            self.hook.describe(),
        )
        report = self.hook.materialize(
            start=begin,
            end=end,
            feature_views=views,
            use_cache=self.use_cache,
            fingerprint=self.fingerprint,
            stop=self._stop,
            data_versions={str(k): str(v) for k, v in (self.data_versions or {}).items()},
        )
        xcom = report.to_xcom()
        self.log.info(
            "Materialized %d rows (%s); cache hits %d, misses %d",
            xcom["rows_total"],
            ", ".join(f"{k}={v}" for k, v in xcom["rows"].items()),
            xcom["cache_hits"],
            xcom["cache_misses"],
        )
        self._lineage_result = xcom
        return xcom

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """Batch sources in; feature views and online-store tables out, with row counts (OpenLineage)."""
        from nuro_ml.lineage.feast import materialize_operator_lineage

        return materialize_operator_lineage(self)

    def on_kill(self) -> None:
        # Materialization runs in this process; finishing the current computation and then
        # stopping keeps the online store and the cache consistent with each other.
        self._stop.set()
        self.log.info("Materialization asked to stop after the current computation")


class FeastPushOperator(BaseOperator):
    """
    Push rows to a Feast push source, so stream and batch feed one online feature view.

    Every feature view whose source is the push source receives the rows (Feast's
    ``FeatureStore.push``); the view's batch source is still materialized by
    :class:`FeastMaterializeOperator`. The online store keeps the newest event per entity, so a
    retry that pushes the same rows again leaves it unchanged. ``to="offline"`` appends the rows
    to the batch source instead (a retry appends them again).

    Returns (XCom): ``{"push_source": name, "rows": N, "to": "online", "feature_views": [...]}``.

    .. seealso::
        :ref:`howto/operator:FeastPushOperator`

    :param push_source_name: name of the ``PushSource`` in the registry. (templated)
    :param data: the rows: a pandas DataFrame, an Arrow table, or the path of a Parquet file or
        directory (read with Arrow), with the join keys, the timestamp column and the features.
        (templated when a path)
    :param to: ``online`` (default), ``offline`` or ``online_and_offline``.
    :param feast_conn_id: :ref:`Feast connection <howto/connection:feast>`. (templated)
    :param repo_path: feature repository directory; default ``settings.feature_repo_dir()``. (templated)
    """

    template_fields: Sequence[str] = ("push_source_name", "data", "feast_conn_id", "repo_path")
    ui_color = "#e8d6f5"

    def __init__(
        self,
        *,
        push_source_name: str,
        data: pd.DataFrame | pa.Table | str,
        to: Literal["online", "offline", "online_and_offline"] = "online",
        feast_conn_id: str = FeastHook.default_conn_name,
        repo_path: str | Path | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if to not in ("online", "offline", "online_and_offline"):
            raise ValueError(f"to must be 'online', 'offline' or 'online_and_offline', got {to!r}")
        self.push_source_name = push_source_name
        self.data = data
        self.to: Literal["online", "offline", "online_and_offline"] = to
        self.feast_conn_id = feast_conn_id
        self.repo_path = repo_path

    @cached_property
    def hook(self) -> FeastHook:
        return FeastHook(self.feast_conn_id, repo_path=self.repo_path)

    def _rows(self) -> pd.DataFrame | pa.Table:
        if not isinstance(self.data, str | Path):
            return self.data
        import pyarrow.parquet as pq

        path = Path(self.data)
        if not path.exists():
            raise FeatureStoreError(f"Rows to push to {self.push_source_name!r}: {path} does not exist")
        try:
            return pq.read_table(path)
        except Exception as exc:
            raise FeatureStoreError(
                f"Rows to push to {self.push_source_name!r}: cannot read {path}: {exc}"
            ) from exc

    def execute(self, context: Context) -> dict[str, Any]:
        rows = self._rows()
        self.log.info(
            "Pushing %d rows to push source %s (%s) of %s",
            len(rows),
            self.push_source_name,
            self.to,
            self.hook.describe(),
        )
        result = self.hook.push(self.push_source_name, rows, to=self.to)
        self.log.info("Pushed %d rows into feature views %s", result.rows, ", ".join(result.feature_views))
        return result.to_xcom()
