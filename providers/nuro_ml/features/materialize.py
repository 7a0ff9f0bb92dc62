"""Interval-aware, cached materialization of feature views into the online store.

Each view takes one of two paths, chosen per view, logged and reported in XCom:

* ``partitioned`` (the fast path): the view's batch source is local Parquet, a Feast
  ``FileSource``, or a ``SparkSource`` or ``RaySource`` reading Parquet from a ``path``. The
  rows are read with Arrow and written by the fastest writer that can encode the view (Redis:
  Feast's exact format straight from Arrow; otherwise, or for an entity key or value the fast
  writer does not know, Feast's own online write). The computation cache fingerprints the
  files.
* ``feast``: any other source (warehouse tables, queries, remote files). Feast's own
  ``FeatureStore.materialize`` runs over the same interval through the configured offline store
  and batch engine. Such a source cannot be fingerprinted by content, so the cache applies only
  when the user declares a version of the view's data (a ``data_version`` for the view, or the
  view tag ``nuro_ml.data_version``); otherwise the view is recomputed and the log says why.

On the partitioned path, the interval ``[start, end)`` is cut along the source's date
partitions. Each (feature view, partition) pair is one computation: the partition's rows with
event time in the interval, reduced to the newest row per entity, written to the online store.
Its cache key hashes the view definition, the partition fingerprint, the *effective* interval
(the requested interval clipped to the event times actually present in the partition, so
overlapping lookback windows over unchanged data produce the same key) and the target store. A
hit skips the work; after one day of a 30-day range changes, a backfill recomputes that day
only.

Every unit about to be computed is schema-checked first, so schema drift fails the run before
anything is written.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nuro_ml.exceptions import FeatureStoreError
from nuro_ml.features.cache import Computation, ComputationCache
from nuro_ml.features.partitions import FingerprintMode, Partition, PartitionedSource
from nuro_ml.features.repo import view_columns
from nuro_ml.features.schema import PARTITION_EVENT_WINDOW, check_columns
from nuro_ml.features.writers import CREATED_TS, EVENT_TS, OnlineWriter
from nuro_ml.progress import Progress

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView

log = logging.getLogger(__name__)

_ARROW_FOR_TYPE: dict[str, pa.DataType] = {
    "DOUBLE": pa.float64(),
    "FLOAT": pa.float32(),
    "INT64": pa.int64(),
    "INT32": pa.int32(),
    "STRING": pa.string(),
    "BOOL": pa.bool_(),
}
_TS_TYPE = pa.timestamp("us", tz="UTC")


#: View tag declaring the version of a view's data (makes the cache usable on the Feast path).
DATA_VERSION_TAG = "nuro_ml.data_version"

PathName = Literal["partitioned", "feast"]


@dataclass
class ViewReport:
    rows: int | None = 0
    """Rows written (None: Feast's engine wrote them and does not report a count)."""
    stale: int = 0
    hits: int = 0
    misses: int = 0
    retries: int = 0
    path: PathName = "partitioned"
    writer: str = ""
    cache: str = ""
    """How the cache treats the view: ``files:<stat|content>``, ``data_version:<v>`` or ``off``."""
    reason: str = ""
    """Why the view took its path, writer and cache mode."""

    def add_rows(self, n: int) -> None:
        self.rows = (self.rows or 0) + n


@dataclass
class MaterializeReport:
    """Outcome of one materialization run (what the operator returns through XCom)."""

    start: datetime
    end: datetime
    online_store: str
    views: dict[str, ViewReport] = field(default_factory=dict)

    @property
    def hits(self) -> int:
        return sum(v.hits for v in self.views.values())

    @property
    def misses(self) -> int:
        return sum(v.misses for v in self.views.values())

    def to_xcom(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "online_store": self.online_store,
            "rows": {name: v.rows for name, v in self.views.items()},
            "rows_total": sum(v.rows or 0 for v in self.views.values()),
            "cache_hits": self.hits,
            "cache_misses": self.misses,
            "cache": {name: {"hits": v.hits, "misses": v.misses} for name, v in self.views.items()},
            "stale_rows_skipped": sum(v.stale for v in self.views.values()),
            "paths": {
                name: {"path": v.path, "writer": v.writer, "cache": v.cache, "reason": v.reason}
                for name, v in self.views.items()
            },
        }


@dataclass(frozen=True)
class _FileInfo:
    schema: pa.Schema
    min_us: int | None
    max_us: int | None


@dataclass
class _Unit:
    view: FeatureView
    partition: Partition
    computation: Computation
    source_path: str
    writer: OnlineWriter


@dataclass(frozen=True)
class ViewPlan:
    """The path a view takes, and why."""

    view: FeatureView
    path: PathName
    source_path: str | None
    reason: str


def view_definition_hash(view: FeatureView) -> str:
    """Hash of what determines a view's online rows (not its description, tags or timestamps)."""
    spec = view.to_proto().spec
    spec.ClearField("description")
    spec.ClearField("tags")
    spec.ClearField("owner")
    spec.batch_source.ClearField("meta")
    spec.batch_source.ClearField("description")
    spec.batch_source.ClearField("tags")
    spec.batch_source.ClearField("owner")
    for feature in spec.features:
        feature.ClearField("description")
        feature.ClearField("tags")
    for column in spec.entity_columns:
        column.ClearField("description")
        column.ClearField("tags")
    return hashlib.sha256(spec.SerializeToString(deterministic=True)).hexdigest()


class Materializer:
    """Runs cached materialization for a Feast store.

    :param store: the Feast store (registry and config).
    :param writer: where rows go (Redis fast path or Feast's provider).
    :param target: identity of the online store, part of every cache key.
    :param cache: computation cache; None disables caching (every unit is a miss).
    :param fingerprint: ``stat`` (paths, sizes, mtimes) or ``content`` (file hashes).
    :param stop: when set, the run stops before its next computation (finished ones stay cached).
    :param fallback: writer for views ``writer`` cannot encode (Feast's own online write).
    :param data_versions: view name -> declared version of its data; lets the cache skip views
        on the Feast path (overrides the view's ``nuro_ml.data_version`` tag).
    """

    def __init__(
        self,
        store: FeatureStore,
        *,
        writer: OnlineWriter,
        target: str,
        cache: ComputationCache | None,
        fingerprint: FingerprintMode = "stat",
        stop: threading.Event | None = None,
        fallback: OnlineWriter | None = None,
        data_versions: Mapping[str, str] | None = None,
    ) -> None:
        self.stop = stop
        self.fallback = fallback
        self.data_versions = dict(data_versions or {})
        self.store = store
        self.writer = writer
        self.target = target
        self.cache = cache
        self.fingerprint = fingerprint
        self._files: dict[tuple[Path, int, int, str], _FileInfo] = {}

    # ------------------------------------------------------------------ planning

    def _views(self, names: Sequence[str] | None) -> list[FeatureView]:
        self.store.refresh_registry()
        available = {v.name: v for v in self.store.list_feature_views()}
        if names:
            unknown = sorted(set(names) - set(available))
            if unknown:
                raise FeatureStoreError(
                    f"Feature view(s) {unknown} are not in the registry of project {self.store.project!r} "
                    f"(known: {sorted(available)}); apply the feature repository first"
                )
            views = [available[n] for n in names]
        else:
            views = [v for v in available.values() if v.online]
        return sorted(views, key=lambda v: v.name)

    def choose(self, view: FeatureView) -> ViewPlan:
        """The path for ``view``: partitioned over local Parquet where it holds, else Feast's engine."""
        source = view.batch_source
        kind = type(source).__name__
        if source is None:
            return ViewPlan(view, "feast", None, "the view has no batch source")
        path, why_not = local_parquet_location(source, self.store.config.repo_path)
        if path is None:
            return ViewPlan(view, "feast", None, f"{kind} {why_not}")
        if not Path(path).exists():
            # Local files a pipeline has not produced yet (a new view, a stream not yet run):
            # nothing to write, as apply treats it; Feast's engine would only fail to open them.
            log.warning("Feature view %s: no data under %s yet; nothing to materialize", view.name, path)
            reason = f"{kind} over local Parquet at {path} (no data there yet)"
            return ViewPlan(view, "partitioned", path, reason)
        return ViewPlan(view, "partitioned", path, f"{kind} over local Parquet at {path}")

    def _writer_for(self, view: FeatureView) -> tuple[OnlineWriter, str]:
        unsupported = self.writer.unsupported(view)
        if unsupported is None or self.fallback is None:
            return self.writer, f"{self.writer.name} writer"
        return self.fallback, f"{self.fallback.name} writer ({self.writer.name} writer: {unsupported})"

    def data_version(self, view: FeatureView) -> str | None:
        declared = self.data_versions.get(view.name) or (view.tags or {}).get(DATA_VERSION_TAG)
        return str(declared) if declared else None

    def _file_info(self, path: Path, size: int, mtime_ns: int, ts_column: str) -> _FileInfo:
        key = (path, size, mtime_ns, ts_column)
        info = self._files.get(key)
        if info is None:
            info = _read_file_info(path, ts_column)
            self._files[key] = info
        return info

    def _time_range(self, partition: Partition, ts_column: str) -> tuple[int, int] | None:
        lows, highs = [], []
        for f in partition.files:
            info = self._file_info(f.path, f.size, f.mtime_ns, ts_column)
            if info.min_us is not None and info.max_us is not None:
                lows.append(info.min_us)
                highs.append(info.max_us)
        if not lows:
            return None
        return min(lows), max(highs)

    def plan(
        self, start: datetime, end: datetime, names: Sequence[str] | None
    ) -> tuple[list[_Unit], list[ViewPlan], dict[str, ViewReport]]:
        """Units of the partitioned views with rows in ``[start, end)``, and the Feast-path views."""
        units: list[_Unit] = []
        engine: list[ViewPlan] = []
        reports: dict[str, ViewReport] = {}
        start_us = _to_micros(start)
        end_us = _to_micros(end)
        for view in self._views(names):
            choice = self.choose(view)
            if choice.path == "feast":
                version = self.data_version(view)
                reports[view.name] = ViewReport(
                    rows=None,
                    path="feast",
                    writer="feast engine",
                    cache=f"data_version:{version}" if version and self.cache else "off",
                    reason=choice.reason,
                )
                engine.append(choice)
                continue
            assert choice.source_path is not None
            source = view.batch_source
            assert source is not None
            writer, writer_reason = self._writer_for(view)
            reports[view.name] = ViewReport(
                path="partitioned",
                writer=writer.name,
                cache=f"files:{self.fingerprint}" if self.cache else "off",
                reason=f"{choice.reason}; {writer_reason}",
            )
            located = PartitionedSource.at(choice.source_path)
            view_hash = view_definition_hash(view)
            for partition in located.partitions_for(start, end, PARTITION_EVENT_WINDOW):
                span = self._time_range(partition, source.timestamp_field)
                if span is None:
                    continue
                lo = max(start_us, span[0])
                hi = min(end_us, span[1] + 1)
                if lo >= hi:
                    continue
                computation = Computation(
                    feature_view=view.name,
                    view_hash=view_hash,
                    partition=partition.label,
                    fingerprint=partition.fingerprint(self.fingerprint),
                    interval_start=_from_micros(lo),
                    interval_end=_from_micros(hi),
                    target=self.target,
                )
                units.append(_Unit(view, partition, computation, choice.source_path, writer))
        return units, engine, reports

    # ------------------------------------------------------------------ running

    def run(
        self, start: datetime, end: datetime, feature_views: Sequence[str] | None = None
    ) -> MaterializeReport:
        """Materialize ``[start, end)`` for the given views (all online views by default)."""
        start = _utc(start)
        end = _utc(end)
        if start >= end:
            raise FeatureStoreError(
                f"Materialization interval is empty: start {start} is not before end {end}"
            )
        units, engine, reports = self.plan(start, end, feature_views)
        report = MaterializeReport(start=start, end=end, online_store=self.target, views=reports)
        for name, v in reports.items():
            log.info("Feature view %s: %s path, %s; cache %s", name, v.path, v.reason, v.cache)
        done = self.cache.hits([u.computation for u in units]) if self.cache else set()
        todo = [u for u in units if u.computation.key not in done]
        for unit in units:
            if unit.computation.key in done:
                report.views[unit.view.name].hits += 1
        log.info(
            "Materializing [%s, %s): %d computations, %d cached, %d to compute, into %s",
            start.isoformat(),
            end.isoformat(),
            len(units),
            len(units) - len(todo),
            len(todo),
            self.target,
        )
        for unit in todo:
            self._check_schema(unit)
        by_partition: dict[tuple[str, str], list[_Unit]] = {}
        for unit in todo:
            by_partition.setdefault((unit.source_path, unit.partition.label), []).append(unit)
        touched: dict[str, FeatureView] = {}
        progress = Progress(f"Materializing into {self.target}", len(todo), unit="computations")
        written = 0
        for group in by_partition.values():
            table = self._read(group)
            for batch in _write_groups(group):
                writer = batch[0].writer
                if self.stop is not None and self.stop.is_set():
                    raise FeatureStoreError(
                        f"Materialization of [{start.isoformat()}, {end.isoformat()}) was stopped before "
                        f"{batch[0].partition.label}; finished computations are cached"
                    )
                rows = self._prepare(batch, table)
                stats = writer.write([u.view for u in batch], rows)
                for unit in batch:
                    s = stats[unit.view.name]
                    view_report = report.views[unit.view.name]
                    view_report.add_rows(s.rows)
                    view_report.stale += s.stale
                    view_report.retries += s.retries
                    view_report.misses += 1
                    if self.cache is not None:
                        self.cache.record(unit.computation, s.rows)
                    touched[unit.view.name] = unit.view
                    log.info(
                        "Cache miss %s %s [%s, %s): %d rows written, %d stale rows skipped",
                        unit.view.name,
                        unit.partition.label,
                        unit.computation.interval_start.isoformat(),
                        unit.computation.interval_end.isoformat(),
                        s.rows,
                        s.stale,
                    )
                written += sum(stats[unit.view.name].rows for unit in batch)
                progress.advance(len(batch), rows_written=f"{written:,}")
        if todo:
            progress.finish(rows_written=f"{written:,}")
        for unit in units:
            if unit.computation.key in done:
                log.info(
                    "Cache hit %s %s [%s, %s): skipped",
                    unit.view.name,
                    unit.partition.label,
                    unit.computation.interval_start.isoformat(),
                    unit.computation.interval_end.isoformat(),
                )
        if touched:
            from nuro_ml.features.registry_store import registry_update

            # Keep Feast's own bookkeeping (used by `feast materialize-incremental`) in step.
            with registry_update(self.store):
                registry = self.store.registry
                for view in touched.values():
                    registry.apply_materialization(view, self.store.project, start, end, commit=True)
        for plan in engine:
            self._run_engine(plan.view, start, end, report.views[plan.view.name])
        for name, v in report.views.items():
            log.info(
                "Feature view %s: %s rows materialized, %d stale skipped, cache %d hits / %d misses",
                name,
                "unreported" if v.rows is None else v.rows,
                v.stale,
                v.hits,
                v.misses,
            )
        return report

    def _run_engine(self, view: FeatureView, start: datetime, end: datetime, report: ViewReport) -> None:
        """Materialize ``view`` through Feast's own engine, cached only under a declared data version."""
        version = self.data_version(view)
        computation = None
        if self.cache is not None and version:
            computation = Computation(
                feature_view=view.name,
                view_hash=view_definition_hash(view),
                partition="feast-engine",
                fingerprint=f"data_version:{version}",
                interval_start=start,
                interval_end=end,
                target=self.target,
            )
            if self.cache.hits([computation]):
                report.hits += 1
                log.info(
                    "Cache hit %s [%s, %s) at data version %s: skipped",
                    view.name,
                    start.isoformat(),
                    end.isoformat(),
                    version,
                )
                return
        elif self.cache is not None:
            log.info(
                "Feature view %s: recomputed, its %s cannot be fingerprinted by content and no data "
                "version is declared (operator data_versions or view tag %s)",
                view.name,
                type(view.batch_source).__name__,
                DATA_VERSION_TAG,
            )
        if self.stop is not None and self.stop.is_set():
            raise FeatureStoreError(
                f"Materialization of [{start.isoformat()}, {end.isoformat()}) was stopped before feature "
                f"view {view.name}; finished computations are cached"
            )
        log.info("Feature view %s: Feast materialization over [%s, %s)", view.name, start, end)
        from nuro_ml.features.registry_store import registry_update

        try:
            # Feast's materialize records the interval in the registry at its end: one writer.
            with registry_update(self.store):
                self.store.materialize(start_date=start, end_date=end, feature_views=[view.name])
        except Exception as exc:
            raise FeatureStoreError(
                f"Feast materialization of feature view {view.name!r} over [{start.isoformat()}, "
                f"{end.isoformat()}) from {type(view.batch_source).__name__} failed: {exc}"
            ) from exc
        report.misses += 1
        if computation is not None and self.cache is not None:
            self.cache.record(computation, 0)

    def _check_schema(self, unit: _Unit) -> None:
        expected, timestamps = view_columns(unit.view)
        source = unit.view.batch_source
        assert source is not None
        for f in unit.partition.files:
            info = self._file_info(f.path, f.size, f.mtime_ns, source.timestamp_field)
            check_columns(
                view=unit.view.name,
                schema=info.schema,
                where=str(f.path),
                expected=expected,
                timestamps=timestamps,
            )

    def _read(self, group: list[_Unit]) -> pa.Table:
        """One partition's files, columns needed by the group's views, cast to canonical types."""
        wanted: dict[str, pa.DataType | None] = {}
        for unit in group:
            expected, timestamps = view_columns(unit.view)
            for column, vt in expected.items():
                # Scalars get one canonical type (files of a partition may differ in width);
                # anything else (lists, structs, maps, bytes...) stays as the file has it.
                wanted.setdefault(column, _ARROW_FOR_TYPE.get(vt or ""))
            for column in timestamps:
                wanted[column] = _TS_TYPE
        tables = []
        for f in group[0].partition.files:
            t = pq.read_table(f.path, columns=list(wanted))
            tables.append(
                pa.table(
                    {
                        name: t.column(name) if to is None else t.column(name).cast(to)
                        for name, to in wanted.items()
                    }
                )
            )
        return pa.concat_tables(tables, promote_options="permissive")

    def _prepare(self, units: list[_Unit], table: pa.Table) -> pa.Table:
        """Rows of the units' interval, field-mapped, newest per entity, in event-time order.

        ``units`` share a partition, join keys, timestamp columns and interval (see
        :func:`_write_groups`), so one table serves all their views.
        """
        first = units[0]
        source = first.view.batch_source
        assert source is not None
        ts = table.column(source.timestamp_field)
        lo = pa.scalar(first.computation.interval_start, _TS_TYPE)
        hi = pa.scalar(first.computation.interval_end, _TS_TYPE)
        table = table.filter(pc.and_(pc.greater_equal(ts, lo), pc.less(ts, hi)))
        columns: dict[str, pa.ChunkedArray] = {}
        for unit in units:
            assert unit.view.batch_source is not None
            mapping = unit.view.batch_source.field_mapping or {}
            expected, _ = view_columns(unit.view)
            for column in expected:
                columns[mapping.get(column, column)] = table.column(column)
        columns[EVENT_TS] = table.column(source.timestamp_field)
        if source.created_timestamp_column:
            columns[CREATED_TS] = table.column(source.created_timestamp_column)
        out = pa.table(columns)
        keys = list(first.view.join_keys)
        valid = pc.is_valid(out.column(keys[0]))
        for k in keys[1:]:
            valid = pc.and_(valid, pc.is_valid(out.column(k)))
        dropped = out.num_rows - (pc.sum(pc.cast(valid, pa.int64())).as_py() or 0)
        if dropped:
            log.warning(
                "Feature views %s %s: dropping %d rows with a null join key",
                ", ".join(u.view.name for u in units),
                first.partition.label,
                dropped,
            )
            out = out.filter(valid)
        order = [(EVENT_TS, "ascending")]
        if CREATED_TS in out.column_names:
            order.append((CREATED_TS, "ascending"))
        out = out.sort_by(order)
        out = out.append_column("__row", pa.array(np.arange(out.num_rows, dtype=np.int64)))
        last = out.group_by(keys, use_threads=False).aggregate([("__row", "max")]).column("__row_max")
        newest = np.sort(np.asarray(last.to_numpy(), dtype=np.int64))
        return out.take(pa.array(newest)).drop_columns(["__row"])


def _write_groups(units: list[_Unit]) -> list[list[_Unit]]:
    """Split one partition's units into groups a writer can take at once.

    Views group together when they read the same rows (join keys, timestamp columns and
    interval) and their field mappings never give one feature name two different sources.
    """
    groups: list[tuple[tuple[Any, ...], dict[str, str], list[_Unit]]] = []
    for unit in units:
        source = unit.view.batch_source
        assert source is not None
        signature = (
            id(unit.writer),
            tuple(sorted(unit.view.join_keys)),
            source.timestamp_field,
            source.created_timestamp_column or "",
            unit.computation.interval_start,
            unit.computation.interval_end,
        )
        mapping = source.field_mapping or {}
        expected, _ = view_columns(unit.view)
        names = {mapping.get(c, c): c for c in expected}
        for sig, taken, members in groups:
            if sig == signature and all(taken.get(n, c) == c for n, c in names.items()):
                members.append(unit)
                taken.update(names)
                break
        else:
            groups.append((signature, dict(names), [unit]))
    return [members for _, _, members in groups]


def local_parquet_location(source: Any, repo_path: Path | str | None) -> tuple[str | None, str]:
    """Where a batch source reads local Parquet (existing or not), or None and why it does not."""
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
    from feast.infra.offline_stores.file_source import FileSource

    if isinstance(source, FileSource):
        fmt = source.file_format
        if fmt is not None and type(fmt).__name__ != "ParquetFormat":
            return None, f"holds {type(fmt).__name__} files, not Parquet"
        path = FileSource.get_uri_for_file_path(repo_path, source.path)
    elif isinstance(source, SparkSource):
        if not source.path:
            return None, "reads a table or query, not files"
        if (source.file_format or "").lower() != "parquet":
            return None, f"holds {source.file_format or 'unknown'} files, not Parquet"
        path = str(source.path)
        if not path.startswith(("/", "file:")) and repo_path is not None:
            path = str(Path(repo_path) / path)
    elif type(source).__name__ == "RaySource" and getattr(source, "path", None):
        # Feast's Ray offline store source; matched by name so Ray is not imported for it.
        if str(getattr(source, "reader_type", "")).lower() != "parquet":
            return None, f"reads {getattr(source, 'reader_type', 'unknown')} data, not Parquet"
        path = str(source.path)
    else:
        return None, "is not a file source"
    path = path.removeprefix("file://")
    if "://" in path:
        return None, f"is remote ({path.split('://', 1)[0]}://), not local files"
    return path, ""


def _read_file_info(path: Path, ts_column: str) -> _FileInfo:
    try:
        meta = pq.ParquetFile(path).metadata
        schema = meta.schema.to_arrow_schema()
    except (OSError, pa.ArrowException) as exc:
        raise FeatureStoreError(f"Cannot read the Parquet footer of {path}: {exc}") from exc
    if ts_column not in schema.names:
        return _FileInfo(schema, None, None)
    lows, highs = [], []
    index = schema.get_field_index(ts_column)
    ts_type = schema.field(ts_column).type
    stats_ok = pa.types.is_timestamp(ts_type) and meta.num_row_groups > 0
    if stats_ok:
        for rg in range(meta.num_row_groups):
            col = meta.row_group(rg).column(index)
            st = col.statistics
            if meta.row_group(rg).num_rows == 0:
                continue
            if st is None or not st.has_min_max:
                stats_ok = False
                break
            lows.append(_stat_micros(st.min, ts_type))
            highs.append(_stat_micros(st.max, ts_type))
    if not stats_ok:
        # INT96 timestamps (older Spark defaults) carry no usable statistics: read the column.
        column = pq.read_table(path, columns=[ts_column]).column(ts_column)
        if not pa.types.is_timestamp(column.type):
            return _FileInfo(schema, None, None)
        us = column.cast(_TS_TYPE).cast(pa.int64())
        mm = pc.min_max(us)
        lo, hi = mm["min"].as_py(), mm["max"].as_py()
        return _FileInfo(schema, lo, hi)
    if not lows:
        return _FileInfo(schema, None, None)
    return _FileInfo(schema, min(lows), max(highs))


def _stat_micros(value: Any, ts_type: pa.TimestampType) -> int:
    return int(pa.scalar(value, ts_type).cast(_TS_TYPE).cast(pa.int64()).as_py())


def _utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _to_micros(ts: datetime) -> int:
    delta = _utc(ts) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _from_micros(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)
