"""Which date/vehicle partitions are already up to date with their drive logs.

Each published partition gets a record under ``<output>/_inputs/date=D/vehicle=V.json``: a
fingerprint of the drive logs it was built from (names, sizes, modification times) and of the job
settings that shape its rows, plus the message and row counts of that build. A later run over the
same interval skips a partition whose fingerprint is unchanged and whose tables still hold the
recorded rows, so re-running a day (a retry, a second backfill, a second demo) neither rewrites
its Parquet files nor changes what the feature cache keys on. New, changed or removed logs, other
settings, or output that was deleted or altered make the partition stale again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nuro_ml.etl import publish

INPUTS_DIR = "_inputs"
#: Bumped whenever the job writes different rows from the same logs, so older output is rebuilt.
OUTPUT_VERSION = 3


def fingerprint(files: Iterable[str], settings: Mapping[str, Any]) -> str:
    """A digest of the logs (name, size, mtime) and of the settings that shape the output."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"version": OUTPUT_VERSION, **settings}, sort_keys=True).encode())
    for path in sorted(files):
        st = os.stat(path)
        digest.update(f"\0{Path(path).name}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return digest.hexdigest()


def record_path(root: Path, day: str, vehicle: str) -> Path:
    return root / INPUTS_DIR / f"date={day}" / f"vehicle={vehicle}.json"


@dataclass
class PartitionRecord:
    """What one build of a date/vehicle partition consumed and produced."""

    fingerprint: str
    drives: list[str]
    messages: dict[str, int] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)

    @classmethod
    def read(cls, root: Path, day: str, vehicle: str) -> PartitionRecord | None:
        path = record_path(root, day, vehicle)
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            # Missing or unreadable: the partition is simply rebuilt.
            return None

    def write(self, root: Path, day: str, vehicle: str) -> None:
        path = record_path(root, day, vehicle)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.__dict__, sort_keys=True))
        os.replace(tmp, path)

    def matches_output(self, root: Path, tables: Iterable[str], day: str, vehicle: str) -> bool:
        """The published tables still hold exactly the recorded rows (Parquet footers only)."""
        for table in tables:
            directory = publish.partition_dir(root, table, day, vehicle)
            have = publish.count_rows(directory) if directory.is_dir() else 0
            if have != self.rows.get(table, 0):
                return False
        return True


def forget(root: Path, partitions: Iterable[tuple[str, str]]) -> None:
    """Drop the records of partitions about to be rebuilt, so a crash mid-publish leaves them stale."""
    for day, vehicle in partitions:
        record_path(root, day, vehicle).unlink(missing_ok=True)
