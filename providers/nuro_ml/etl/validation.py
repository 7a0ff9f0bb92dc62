"""Check drive-log files before the ETL reads them, and quarantine the bad ones.

A file is bad when it is not MCAP, is truncated or corrupt (framing, decompression, CRC, payloads
that do not decode), uses a schema the ETL does not know for one of its topics, or has a topic
whose log times go backwards. Bad files are moved (never deleted) to the quarantine directory,
with a manifest line naming the file, the reason and the byte offset of the problem.

A file without a usable index (a truncated tail cuts the summary and footer off) is read by a
sequential scan, which stops at the damage: when everything before the damage checks out, those
messages are valid and the report lists them as ``salvaged``, so the ETL keeps them before the
file goes to quarantine.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nuro_ml.etl import mcap_io, schemas
from nuro_ml.etl.mcap_io import McapFormatError
from nuro_ml.etl.reader import UnsupportedSchemaError, decoder_for

MANIFEST = "manifest.jsonl"


@dataclass
class FileReport:
    """Outcome of checking one file."""

    file: str
    ok: bool
    bytes: int
    reason: str | None = None
    offset: int | None = None
    indexed: bool = False
    messages: dict[str, int] = field(default_factory=dict)
    schemas: dict[str, str] = field(default_factory=dict)
    #: Messages per topic a sequential read gets before the damage, when all of them are valid.
    salvaged: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Bad(Exception):
    def __init__(self, reason: str, offset: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.offset = offset


def inspect_file(path: str) -> FileReport:
    """Fully check one file: every record, chunk (decompressed, CRC), and message payload."""
    size = os.path.getsize(path)
    report = FileReport(file=path, ok=False, bytes=size)
    if size == 0:
        report.reason, report.offset = "empty file", 0
        return report
    with mcap_io.mapped(path) as buf:
        try:
            _check(buf, report)
            report.ok = True
        except _Bad as bad:
            report.reason, report.offset = bad.reason, bad.offset
        except McapFormatError as err:
            report.reason, report.offset = err.reason, err.offset
    return report


def _check(buf: Any, report: FileReport) -> None:
    summary = mcap_io.read_summary(buf)
    report.indexed = summary is not None and bool(summary.chunks)
    result = mcap_io.scan(buf)
    if result.damage is not None and summary is not None:
        raise result.damage
    chunk_offsets = {c.offset for c in result.chunks}
    if summary is not None:
        missing = [c.offset for c in summary.chunks if c.offset not in chunk_offsets]
        if missing:
            raise _Bad("chunk index points at no chunk", missing[0])
    channels = dict(result.channels)
    found_schemas = dict(result.schemas)
    last_time: dict[int, int] = {}
    counts: dict[int, int] = {}
    runs: list[tuple[int, mcap_io.MessageBatch]] = []
    if result.loose_messages:
        runs.append(
            (
                result.loose_messages[0],
                mcap_io.envelopes(buf, np.asarray(result.loose_messages, dtype=np.int64)),
            )
        )
    for chunk in result.chunks:
        data = mcap_io.load_chunk(buf, chunk, verify_crc=True)
        runs.append((chunk.offset, mcap_io.frame_records(data, chunk.offset, found_schemas, channels)))
        _check_batches(runs, channels, found_schemas, last_time, counts, report)
        runs.clear()
    _check_batches(runs, channels, found_schemas, last_time, counts, report)
    if result.damage is not None:
        # No index to read by, so the ETL scans the file as this check did, up to the damage.
        report.salvaged = {channels[cid].topic: n for cid, n in sorted(counts.items()) if n}
        raise result.damage
    if (
        summary is not None
        and summary.message_count is not None
        and summary.message_count != sum(counts.values())
    ):
        found = sum(counts.values())
        raise _Bad(
            f"summary counts {summary.message_count} messages, the data section has {found}", len(buf) - 8
        )
    report.messages = {channels[cid].topic: n for cid, n in sorted(counts.items())}


def _check_batches(
    runs: list[tuple[int, mcap_io.MessageBatch]],
    channels: dict[int, mcap_io.ChannelInfo],
    found_schemas: dict[int, mcap_io.SchemaInfo],
    last_time: dict[int, int],
    counts: dict[int, int],
    report: FileReport,
) -> None:
    for offset, batch in runs:
        for cid in np.unique(batch.channel_ids).tolist():
            channel = channels.get(cid)
            if channel is None:
                raise _Bad(f"message on undeclared channel {cid}", offset)
            sub = batch.select(batch.channel_ids == cid)
            times = sub.log_time
            prev = last_time.get(cid)
            if (prev is not None and times[0] < prev) or bool(np.any(np.diff(times) < 0)):
                raise _Bad(f"non-monotonic log times on topic {channel.topic}", offset)
            last_time[cid] = int(times[-1])
            counts[cid] = counts.get(cid, 0) + len(sub)
            spec = schemas.TOPICS.get(channel.topic)
            if spec is None:
                continue
            schema = found_schemas.get(channel.schema_id)
            if schema is None or schema.name not in spec.schema_names:
                name = schema.name if schema else "<none>"
                raise _Bad(f"unknown schema {name!r} for topic {channel.topic}", offset)
            report.schemas[channel.topic] = schema.name
            try:
                decoder_for(schema, channel.message_encoding).decode(sub.buf, sub.starts, sub.ends, [])
            except UnsupportedSchemaError as err:
                raise _Bad(str(err), offset) from err
            except Exception as err:
                raise _Bad(f"payload on topic {channel.topic} does not decode: {err}", offset) from err


def quarantine(report: FileReport, raw_root: Path, quarantine_root: Path, run_key: str) -> dict[str, Any]:
    """Move a bad file under ``quarantine_root`` (same relative path) and append to the manifest."""
    src = Path(report.file)
    try:
        rel = src.resolve().relative_to(Path(raw_root).resolve())
    except ValueError:
        rel = Path(src.name)
    dest = Path(quarantine_root) / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        dest = dest.with_name(f"{dest.stem}.{int(time.time())}{dest.suffix}")
    shutil.move(str(src), str(dest))
    entry: dict[str, Any] = {
        "file": report.file,
        "quarantined_to": str(dest),
        "reason": report.reason,
        "offset": report.offset,
        "bytes": report.bytes,
        # Messages before the damage that the run kept in its output.
        "salvaged_messages": report.salvaged,
        "run": run_key,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with open(Path(quarantine_root) / MANIFEST, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")
    return {
        "file": report.file,
        "reason": report.reason,
        "offset": report.offset,
        "salvaged_messages": report.salvaged,
    }
