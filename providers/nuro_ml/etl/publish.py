"""Publish staged partitions over the live tables, one atomic directory swap per partition.

A run writes every table under ``<root>/_staging/<run>/<table>/date=D/vehicle=V``. Publishing
replaces ``<root>/<table>/date=D/vehicle=V`` by the staged directory with ``renameat2``'s
``RENAME_EXCHANGE`` (one atomic step on Linux; two renames elsewhere), so readers see either the
old or the new partition, never a mix, and a killed run leaves the previous data in place.
Rows of drives that this run did not process (their file was quarantined or is gone) are carried
over from the old partition: a partition's data is replaced drive by drive, never lost.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_libc: ctypes.CDLL | None = None


def _renameat2() -> ctypes.CDLL | None:
    global _libc
    if _libc is None:
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            lib.renameat2  # noqa: B018
            _libc = lib
        except (OSError, AttributeError):
            return None
    return _libc


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing directories; ``False`` if the platform cannot."""
    lib = _renameat2()
    if lib is None:
        return False
    rc = lib.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc != 0:
        err = ctypes.get_errno()
        if err in (22, 38, 95):  # EINVAL / ENOSYS / EOPNOTSUPP: filesystem without exchange
            return False
        raise OSError(err, os.strerror(err), str(a))
    return True


def partition_dir(root: Path, table: str, day: str, vehicle: str) -> Path:
    return root / table / f"date={day}" / f"vehicle={vehicle}"


def parquet_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(
        p for p in directory.iterdir() if p.suffix == ".parquet" and not p.name.startswith((".", "_"))
    )


def count_rows(directory: Path) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for p in parquet_files(directory))


def _carry_over(old: Path, staged: Path, processed_drives: set[str]) -> int:
    """Copy rows of drives not processed in this run from ``old`` into ``staged``."""
    files = parquet_files(old)
    if not files:
        return 0
    keep_tables = []
    for f in files:
        pf = pq.ParquetFile(f)
        if "drive_id" not in pf.schema_arrow.names:
            continue
        drives = pc.unique(pf.read(columns=["drive_id"]).column("drive_id")).to_pylist()
        if not set(drives) - processed_drives:
            continue
        table = pf.read()
        mask = pc.invert(
            pc.is_in(table.column("drive_id"), value_set=pa.array(sorted(processed_drives), pa.string()))
        )
        keep_tables.append(table.filter(mask))
    rows = 0
    staged.mkdir(parents=True, exist_ok=True)
    for i, t in enumerate(keep_tables):
        if t.num_rows:
            pq.write_table(t, staged / f"part-retained-{i:05d}.parquet")
            rows += t.num_rows
    return rows


def publish(
    root: Path,
    staging: Path,
    tables: Iterable[str],
    partitions: dict[tuple[str, str], set[str]],
) -> list[str]:
    """Swap every processed (table, date, vehicle) partition from ``staging`` into ``root``.

    :param partitions: ``{(date, vehicle): drive ids processed by this run}``.
    :return: the published partition paths relative to ``root``.
    """
    published: list[str] = []
    for table in tables:
        for (day, vehicle), drives in sorted(partitions.items()):
            staged = partition_dir(staging, table, day, vehicle)
            final = partition_dir(root, table, day, vehicle)
            retained = _carry_over(final, staged, drives) if final.exists() else 0
            if retained:
                log.warning(
                    "Kept %d rows of unprocessed drives in %s/date=%s/vehicle=%s",
                    retained,
                    table,
                    day,
                    vehicle,
                )
            if not staged.exists():
                if final.exists():
                    # Nothing of this partition survives the run: retire it the same atomic way.
                    staged.mkdir(parents=True)
                else:
                    continue
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.exists():
                if not exchange(staged, final):
                    trash = final.with_name(f".{final.name}.old")
                    shutil.rmtree(trash, ignore_errors=True)
                    os.rename(final, trash)
                    os.rename(staged, final)
                    staged = trash
                shutil.rmtree(staged, ignore_errors=True)
            else:
                os.rename(staged, final)
            if not parquet_files(final):
                shutil.rmtree(final, ignore_errors=True)
            published.append(f"{table}/date={day}/vehicle={vehicle}")
    return published
