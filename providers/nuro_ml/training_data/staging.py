"""Stage the ETL output as content-keyed training shards in object storage.

Every shard is a Parquet file of windows (see :mod:`nuro_ml.training_data.windows`) stored as
``<prefix>/shards/<sha256 of its bytes>.parquet``; the manifest that lists the shards, their split
and row counts and the input normalisation is itself stored under the hash of its content,
``<prefix>/manifests/<sha256>.json``. Staging the same data again therefore writes nothing new
(each object is checked with HEAD first), a retried task after a crash re-uploads only what is
missing, and the manifest, written last, never names a shard that is not there yet.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from nuro_ml.training_data.spec import DatasetSpec
from nuro_ml.training_data.windows import build_windows, to_arrays

log = logging.getLogger(__name__)

MANIFEST_VERSION = 1
TRAIN, HOLDOUT = "train", "holdout"


class StagingError(ValueError):
    """The ETL output cannot be staged as asked; the message names the partition or field."""


@dataclass
class StagingResult:
    manifest_uri: str
    manifest: dict[str, Any]
    uploaded_shards: int
    reused_shards: int
    uploaded_bytes: int

    def to_xcom(self) -> dict[str, Any]:
        splits = self.manifest["splits"]
        return {
            "manifest_uri": self.manifest_uri,
            "spec_fingerprint": self.manifest["spec_fingerprint"],
            "shards": {name: len(s["shards"]) for name, s in splits.items()},
            "rows": {name: s["rows"] for name, s in splits.items()},
            "positive_rate": {name: s["positive_rate"] for name, s in splits.items()},
            "holdout_drives": splits[HOLDOUT]["drives"],
            "uploaded_shards": self.uploaded_shards,
            "reused_shards": self.reused_shards,
            "uploaded_bytes": self.uploaded_bytes,
            "total_bytes": sum(s["bytes"] for split in splits.values() for s in split["shards"]),
        }


def split_s3_uri(uri: str) -> tuple[str, str]:
    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc:
        raise StagingError(f"not an s3://bucket/prefix URI: {uri!r}")
    return parts.netloc, parts.path.strip("/")


def partition_files(etl_root: str | Path, spec: DatasetSpec) -> list[Path]:
    """The Parquet files of the spec's days and vehicles, ``<root>/<table>/date=D/vehicle=V/*.parquet``."""
    table_dir = Path(etl_root) / spec.table
    files: list[Path] = []
    for day in spec.days():
        day_dir = table_dir / f"date={day.isoformat()}"
        if spec.vehicles:
            vehicle_dirs = [day_dir / f"vehicle={v}" for v in spec.vehicles]
        else:
            vehicle_dirs = sorted(day_dir.glob("vehicle=*")) if day_dir.is_dir() else []
        for vdir in vehicle_dirs:
            files.extend(sorted(vdir.glob("*.parquet")))
    if not files:
        raise StagingError(
            f"no {spec.table} partitions under {table_dir} for {spec.start}..{spec.end}"
            + (f" and vehicles {list(spec.vehicles)}" if spec.vehicles else "")
        )
    return files


def read_source(files: list[Path], spec: DatasetSpec) -> pa.Table:
    columns = ["vehicle_id", "drive_id", "t_ns", spec.label_column, *spec.channels]
    tables = []
    for path in files:
        try:
            tables.append(pq.read_table(path, columns=columns))
        except (pa.ArrowInvalid, KeyError) as exc:
            raise StagingError(f"{path}: cannot read columns {columns}: {exc}") from exc
    return pa.concat_tables(tables, promote_options="permissive")


def split_drives(drives: list[str], spec: DatasetSpec) -> tuple[list[str], list[str]]:
    """(train, holdout) drives: a stable hash order, so adding a day does not reshuffle old drives."""
    if len(drives) < 2:
        raise StagingError(
            f"{len(drives)} drive(s) for {spec.start}..{spec.end}: "
            "a held-out split by drive needs two or more"
        )
    ranked = sorted(drives, key=lambda d: hashlib.sha256(f"{spec.seed}:{d}".encode()).hexdigest())
    n_holdout = min(len(drives) - 1, max(1, round(len(drives) * spec.holdout_fraction)))
    return sorted(ranked[n_holdout:]), sorted(ranked[:n_holdout])


def shard_bytes(table: pa.Table) -> bytes:
    """Parquet bytes of a shard; the same rows always give the same bytes (hence the same key).

    Uncompressed: sensor floats barely compress (zstd saves about 1%), and decoding is what a
    training input pipeline spends its time on once shards are local.
    """
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="none", write_statistics=False, store_schema=True)
    return buf.getvalue()


def normalisation(windows: pa.Table, channels: int) -> dict[str, list[float]]:
    x, _ = to_arrays(windows, channels)
    flat = x.reshape(-1, channels).astype(np.float64)
    std = flat.std(axis=0)
    return {
        "mean": flat.mean(axis=0).round(6).tolist(),
        "std": np.where(std > 1e-6, std, 1.0).round(6).tolist(),
    }


def _object_exists(s3: Any, bucket: str, key: str, size: int) -> bool:
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except Exception as exc:
        code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
        if code in {"404", "NoSuchKey", "NotFound"}:
            return False
        raise
    return int(head.get("ContentLength", -1)) == size


def stage_shards(spec: DatasetSpec, etl_root: str | Path, destination: str, s3_client: Any) -> StagingResult:
    """Cut, shard and upload the spec's windows under ``destination`` (``s3://bucket/prefix``)."""
    bucket, prefix = split_s3_uri(destination)
    files = partition_files(etl_root, spec)
    windows = build_windows(read_source(files, spec), spec)
    keys = [
        f"{v}/{d}"
        for v, d in zip(windows["vehicle_id"].to_pylist(), windows["drive_id"].to_pylist(), strict=True)
    ]
    drives = sorted(set(keys))
    train_drives, holdout_drives = split_drives(drives, spec)
    key_array = np.array(keys, dtype=object)
    is_holdout = np.isin(key_array, holdout_drives)
    rng = np.random.default_rng(spec.seed)
    train_idx = rng.permutation(np.flatnonzero(~is_holdout))
    holdout_idx = np.flatnonzero(is_holdout)
    norm = normalisation(windows.take(pa.array(train_idx)), len(spec.channels))

    uploaded = reused = uploaded_bytes = 0
    splits: dict[str, Any] = {}
    for name, idx, split_drives_ in (
        (TRAIN, train_idx, train_drives),
        (HOLDOUT, holdout_idx, holdout_drives),
    ):
        shards = []
        positives = 0
        for lo in range(0, len(idx), spec.shard_rows):
            part = windows.take(pa.array(idx[lo : lo + spec.shard_rows]))
            payload = shard_bytes(part)
            digest = hashlib.sha256(payload).hexdigest()
            key = f"{prefix}/shards/{digest}.parquet" if prefix else f"shards/{digest}.parquet"
            if _object_exists(s3_client, bucket, key, len(payload)):
                reused += 1
            else:
                s3_client.put_object(Bucket=bucket, Key=key, Body=payload)
                uploaded += 1
                uploaded_bytes += len(payload)
            n_pos = int(np.asarray(part["y"].to_numpy(zero_copy_only=False)).sum())
            positives += n_pos
            shards.append(
                {
                    "uri": f"s3://{bucket}/{key}",
                    "rows": part.num_rows,
                    "bytes": len(payload),
                    "positives": n_pos,
                }
            )
        rows = len(idx)
        splits[name] = {
            "drives": split_drives_,
            "rows": rows,
            "positive_rate": round(positives / rows, 6) if rows else 0.0,
            "shards": shards,
        }
    manifest = {
        "version": MANIFEST_VERSION,
        "spec": spec.to_dict(),
        "spec_fingerprint": spec.fingerprint(),
        "sources": [str(f) for f in files],
        "window_ticks": spec.window_ticks,
        "channels": list(spec.channels),
        "normalisation": norm,
        "splits": splits,
    }
    body = json.dumps(manifest, sort_keys=True, indent=1).encode()
    digest = hashlib.sha256(body).hexdigest()
    manifest_key = f"{prefix}/manifests/{digest}.json" if prefix else f"manifests/{digest}.json"
    if not _object_exists(s3_client, bucket, manifest_key, len(body)):
        s3_client.put_object(Bucket=bucket, Key=manifest_key, Body=body, ContentType="application/json")
    result = StagingResult(f"s3://{bucket}/{manifest_key}", manifest, uploaded, reused, uploaded_bytes)
    log.info(
        "Staged %d train / %d holdout windows of %d drives as %d shards "
        "(%d uploaded, %d reused, %d bytes) -> %s",
        splits[TRAIN]["rows"],
        splits[HOLDOUT]["rows"],
        len(drives),
        len(splits[TRAIN]["shards"]) + len(splits[HOLDOUT]["shards"]),
        uploaded,
        reused,
        uploaded_bytes,
        result.manifest_uri,
    )
    return result


def load_manifest(uri: str, s3_client: Any = None) -> dict[str, Any]:
    """A manifest from ``s3://`` (with ``s3_client``) or a local path."""
    if uri.startswith("s3://"):
        bucket, key = split_s3_uri(uri)
        body = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
    else:
        body = Path(uri).read_bytes()
    manifest: dict[str, Any] = json.loads(body)
    if manifest.get("version") != MANIFEST_VERSION:
        raise StagingError(
            f"{uri}: manifest version {manifest.get('version')!r}, expected {MANIFEST_VERSION}"
        )
    return manifest
