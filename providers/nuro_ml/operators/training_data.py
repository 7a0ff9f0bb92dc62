"""Stage the ETL output as content-keyed training shards in object storage."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from nuro_ml.exceptions import TrainingDataError
from nuro_ml.hooks.object_storage import ObjectStorageHook

if TYPE_CHECKING:
    from airflow.sdk import Context


class StageTrainingShardsOperator(BaseOperator):
    """
    Cut the ETL's ``ego_motion`` table into training windows and store them as Parquet shards.

    Shards and the manifest are keyed by the SHA-256 of their bytes, and every object is checked
    with HEAD before it is written: staging the same days again uploads nothing, a retry after a
    crash uploads only what is missing, and the manifest (written last) never names a missing
    shard. Drives, never single windows, are held out, so the held-out split measures
    generalisation to drives the model has not seen.

    .. seealso::
        :func:`nuro_ml.training_data.staging.stage_shards`, and
        :func:`nuro_ml.training_data.ray_data.shard_dataset` (Ray Data) and
        :class:`nuro_ml.training_data.loader.ShardLoader` (one process), which read the shards back.

    :param destination: ``s3://bucket/prefix`` the shards and manifests go under; empty stages
        nothing and returns None (a pipeline whose model does not train on shards). (templated)
    :param start: First day, ISO date or timestamp (the date part is used). (templated)
    :param end: Last day included, ISO date or timestamp. (templated)
    :param vehicles: Vehicle ids; empty takes every vehicle found. (templated)
    :param etl_root: Root of the ETL output (``<root>/ego_motion/date=D/vehicle=V``); default: the
        platform's ETL output directory. (templated)
    :param dataset: Further :class:`~nuro_ml.training_data.spec.DatasetSpec` fields
        (``channels``, ``window_ticks``, ``stride_ticks``, ``shard_rows``, ``holdout_fraction``,
        ``label_threshold``, ``seed``). (templated)
    :param aws_conn_id: Connection of the object store (access key as login, secret as password,
        ``endpoint_url`` and ``region_name`` extras); None uses boto3's default chain. (templated)
    :param end_is_exclusive: ``end`` is an instant that is not included (a data interval end):
        the last day staged is the one before it when it falls on midnight.
    """

    template_fields: Sequence[str] = (
        "destination",
        "start",
        "end",
        "vehicles",
        "etl_root",
        "dataset",
        "aws_conn_id",
    )
    template_fields_renderers = {"dataset": "json"}
    ui_color = "#d9f0e3"

    def __init__(
        self,
        *,
        destination: str | None,
        start: str,
        end: str,
        vehicles: Sequence[str] | str | None = None,
        etl_root: str | None = None,
        dataset: dict[str, Any] | None = None,
        aws_conn_id: str | None = ObjectStorageHook.default_conn_name,
        end_is_exclusive: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.destination = destination
        self.start = start
        self.end = end
        self.vehicles = vehicles
        self.etl_root = etl_root
        self.dataset = dataset
        self.aws_conn_id = aws_conn_id
        self.end_is_exclusive = end_is_exclusive

    def build_spec(self) -> Any:
        from datetime import datetime, timedelta

        from nuro_ml.training_data.spec import DatasetSpec, DatasetSpecError

        end = str(self.end)
        if self.end_is_exclusive:
            instant = datetime.fromisoformat(end.replace("Z", "+00:00"))
            last = (instant - timedelta(microseconds=1)).date()
            end = max(last, datetime.fromisoformat(str(self.start).replace("Z", "+00:00")).date()).isoformat()
        vehicles = self.vehicles or ()
        raw = {**(self.dataset or {}), "start": str(self.start), "end": end, "vehicles": vehicles}
        try:
            return DatasetSpec.from_dict(raw)
        except (DatasetSpecError, TypeError) as exc:
            raise TrainingDataError(f"task {self.task_id}: {exc}") from exc

    def execute(self, context: Context) -> dict[str, Any] | None:
        from nuro_ml import settings
        from nuro_ml.training_data.staging import StagingError, stage_shards

        if not self.destination:
            self.log.info("No destination: nothing to stage")
            return None
        spec = self.build_spec()
        etl_root = Path(self.etl_root) if self.etl_root else settings.etl_output_dir()
        hook = ObjectStorageHook(self.aws_conn_id)
        client = hook.get_client()
        self.log.info(
            "Staging %s %s..%s from %s to %s", spec.table, spec.start, spec.end, etl_root, self.destination
        )
        try:
            result = stage_shards(spec, etl_root, self.destination, client)
        except StagingError as exc:
            raise TrainingDataError(f"task {self.task_id}: {exc}") from exc
        # The endpoint is not a secret; the training job needs it next to the connection's keys.
        xcom = {**result.to_xcom(), "endpoint_url": hook.client_kwargs.get("endpoint_url")}
        self.log.info(
            "Manifest %s: %s shards, %s rows, %d uploaded / %d reused (%d bytes uploaded)",
            xcom["manifest_uri"],
            xcom["shards"],
            xcom["rows"],
            xcom["uploaded_shards"],
            xcom["reused_shards"],
            xcom["uploaded_bytes"],
        )
        return xcom
