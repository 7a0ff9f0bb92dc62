"""The Spark file sink's metadata log: which files of a stream table are committed.

Spark's file sink (``writeStream.format("parquet")``) records every committed micro-batch in
``<table>/_spark_metadata/<batch>`` (and periodic ``<batch>.compact`` files that carry the log so
far). A file in the table folder that no entry lists was written by a batch that never committed,
for instance when the driver died mid-batch; Spark rewrites that batch under new file names on
restart, so such a file is a duplicate of rows that will land (or have landed) again.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from urllib.parse import unquote, urlparse

log = logging.getLogger(__name__)

METADATA_DIR = "_spark_metadata"


def _local(path: str) -> Path:
    parsed = urlparse(path)
    return Path(unquote(parsed.path) if parsed.scheme == "file" else path)


def committed_files(table_dir: str | Path) -> set[Path] | None:
    """Files the sink committed under ``table_dir``; ``None`` when it has no metadata log."""
    meta = Path(table_dir) / METADATA_DIR
    if not meta.is_dir():
        return None
    batches: list[tuple[int, Path]] = []
    for entry in meta.iterdir():
        stem = entry.name.removesuffix(".compact")
        if stem.isdigit():
            batches.append((int(stem), entry))
    batches.sort()
    # Only the newest compact file and the batches after it are needed, but reading every
    # entry gives the same set (a compact file repeats what came before it).
    files: set[Path] = set()
    for _, entry in batches:
        lines = entry.read_text().splitlines()
        for line in lines[1:]:  # the first line is the log's version, "v1"
            if not line.strip():
                continue
            record = json.loads(line)
            path = _local(record["path"])
            if record.get("action", "add") == "delete":
                files.discard(path)
            else:
                files.add(path)
    return files


def uncommitted_files(table_dir: str | Path) -> list[Path]:
    """Data files under ``table_dir`` that the sink never committed (see the module docstring)."""
    committed = committed_files(table_dir)
    if committed is None:
        return []
    root = Path(table_dir)
    resolved = {p.resolve() for p in committed}
    return sorted(
        p
        for p in root.rglob("*.parquet")
        if not any(part.startswith(("_", ".")) for part in p.relative_to(root).parts)
        and p.resolve() not in resolved
    )


def remove_uncommitted(table_dir: str | Path) -> list[Path]:
    """Delete the files an interrupted batch left behind; only safe while no query writes here."""
    removed = uncommitted_files(table_dir)
    for path in removed:
        path.unlink(missing_ok=True)
    if removed:
        log.info("Removed %d files of uncommitted batches under %s", len(removed), table_dir)
    return removed
