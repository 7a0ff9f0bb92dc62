"""Date partitions of a Parquet source and the fingerprints that identify their contents.

A source directory is either hive-partitioned by date (``date=YYYY-MM-DD/...``, any deeper
partition levels such as ``vehicle=...`` below it) or a plain file/directory, which is then one
partition covering all time. Hidden and underscore-prefixed files (Spark's ``_SUCCESS``,
``.crc``, temporary files of an atomic write) are not data, exactly as Arrow datasets skip them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Literal

_DATE_DIR = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")

FingerprintMode = Literal["stat", "content"]


def _is_data_file(name: str) -> bool:
    return not name.startswith((".", "_")) and name.endswith(".parquet")


@dataclass(frozen=True)
class DataFile:
    path: Path
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Partition:
    """The files of one date partition (``day`` None: an unpartitioned source)."""

    root: Path
    day: date | None
    files: tuple[DataFile, ...]

    @property
    def label(self) -> str:
        return f"date={self.day:%Y-%m-%d}" if self.day else "all"

    @property
    def start(self) -> datetime | None:
        return datetime(self.day.year, self.day.month, self.day.day, tzinfo=UTC) if self.day else None

    def fingerprint(self, mode: FingerprintMode = "stat") -> str:
        """Identity of the partition's contents: paths + sizes + mtimes, or content hashes."""
        entries: list[tuple[str, int, str]] = []
        for f in self.files:
            rel = str(f.path.relative_to(self.root))
            if mode == "content":
                entries.append((rel, f.size, _file_digest(f.path)))
            else:
                entries.append((rel, f.size, str(f.mtime_ns)))
        blob = json.dumps(entries, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()


def _file_digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=20)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _walk_files(directory: Path) -> Iterator[DataFile]:
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "_")))
        for name in sorted(filenames):
            if _is_data_file(name):
                path = Path(dirpath) / name
                try:
                    st = path.stat()
                except FileNotFoundError:
                    # Replaced between listing and stat (an ETL rewrite); the next run sees it.
                    continue
                yield DataFile(path, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class PartitionedSource:
    """A Parquet source on the local file system."""

    root: Path
    by_date: bool

    @classmethod
    def at(cls, path: str | Path) -> PartitionedSource:
        root = Path(path)
        by_date = root.is_dir() and any(_DATE_DIR.match(p.name) for p in root.iterdir() if p.is_dir())
        return cls(root, by_date)

    def dates(self) -> list[date]:
        if not self.by_date:
            return []
        out = []
        for p in self.root.iterdir():
            m = _DATE_DIR.match(p.name)
            if m and p.is_dir():
                out.append(date.fromisoformat(m.group(1)))
        return sorted(out)

    def partition(self, day: date | None) -> Partition:
        if day is None:
            if self.root.is_file():
                st = self.root.stat()
                return Partition(self.root.parent, None, (DataFile(self.root, st.st_size, st.st_mtime_ns),))
            files = tuple(_walk_files(self.root)) if self.root.is_dir() else ()
            return Partition(self.root, None, files)
        directory = self.root / f"date={day:%Y-%m-%d}"
        files = tuple(_walk_files(directory)) if directory.is_dir() else ()
        return Partition(self.root, day, files)

    def partitions_for(self, start: datetime, end: datetime, window: timedelta) -> list[Partition]:
        """Partitions that can hold rows with event time in ``[start, end)``.

        A partition ``date=D`` holds rows from ``[D, D + window)``; only existing, non-empty
        partitions are returned.
        """
        if not self.by_date:
            whole = self.partition(None)
            return [whole] if whole.files else []
        first = (start - window).date()
        out = []
        for day in self.dates():
            day_start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            if day < first or day_start + window <= start or day_start >= end:
                continue
            part = self.partition(day)
            if part.files:
                out.append(part)
        return out

    def newest_files(self, partitions: int) -> list[Path]:
        if not self.by_date:
            return [f.path for f in self.partition(None).files]
        files: list[Path] = []
        for day in self.dates()[-partitions:]:
            files.extend(f.path for f in self.partition(day).files)
        return files
