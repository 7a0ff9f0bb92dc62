"""Cut per-drive sliding windows out of the ETL's 10 Hz ``ego_motion`` table.

A window is ``window_ticks`` consecutive grid ticks of one drive, flattened tick-major into
``ticks x channels`` little-endian float32 values and stored as one fixed-size binary value
(Parquet FIXED_LEN_BYTE_ARRAY: decoding is a copy, about three times faster than a nested list
column of the same floats, and a third smaller); its label is 1 when the label column exceeds the spec's
threshold at any tick of the window. Windows never span two drives.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nuro_ml.training_data.spec import DatasetSpec

FEATURES_COLUMN = "x"
LABEL_COLUMN = "y"


def window_schema(spec: DatasetSpec) -> pa.Schema:
    width = spec.window_ticks * len(spec.channels)
    return pa.schema(
        [
            ("vehicle_id", pa.string()),
            ("drive_id", pa.string()),
            ("t_end_ns", pa.int64()),
            (FEATURES_COLUMN, pa.binary(4 * width)),
            (LABEL_COLUMN, pa.int8()),
        ]
    )


def _drive_windows(table: pa.Table, spec: DatasetSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.argsort(table.column("t_ns").to_numpy(), kind="stable")
    t = table.column("t_ns").to_numpy()[order]
    n = t.shape[0]
    w, s = spec.window_ticks, spec.stride_ticks
    if n < w:
        empty = np.empty((0, w * len(spec.channels)), np.float32)
        return empty, np.empty(0, np.int8), np.empty(0, np.int64)
    values = np.stack(
        [table.column(c).to_numpy(zero_copy_only=False).astype(np.float32)[order] for c in spec.channels],
        axis=1,
    )
    # Missing signals (a drive without IMU or GNSS) are NaN in the ETL output; the model sees 0.
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    label_src = np.nan_to_num(
        table.column(spec.label_column).to_numpy(zero_copy_only=False).astype(np.float64)[order], nan=0.0
    )
    starts = np.arange(0, n - w + 1, s)
    idx = starts[:, None] + np.arange(w)[None, :]
    x = values[idx].reshape(len(starts), -1)
    y = (label_src[idx].max(axis=1) > spec.label_threshold).astype(np.int8)
    return x, y, t[starts + w - 1]


def build_windows(table: pa.Table, spec: DatasetSpec) -> pa.Table:
    """Windows of every drive in ``table`` (columns of ``ego_motion``), drives in sorted order."""
    needed = {"vehicle_id", "drive_id", "t_ns", spec.label_column, *spec.channels}
    missing = sorted(needed - set(table.column_names))
    if missing:
        raise ValueError(f"{spec.table}: column(s) {missing} missing (have {table.column_names})")
    schema = window_schema(spec)
    pieces: list[pa.Table] = []
    keys = table.select(["vehicle_id", "drive_id"]).group_by(["vehicle_id", "drive_id"]).aggregate([])
    for vehicle, drive in sorted(
        zip(keys["vehicle_id"].to_pylist(), keys["drive_id"].to_pylist(), strict=True)
    ):
        mask = pc.and_(pc.equal(table["vehicle_id"], vehicle), pc.equal(table["drive_id"], drive))
        x, y, t_end = _drive_windows(table.filter(mask), spec)
        if not len(y):
            continue
        flat = np.ascontiguousarray(x, dtype="<f4")
        pieces.append(
            pa.table(
                [
                    pa.array([vehicle] * len(y), pa.string()),
                    pa.array([drive] * len(y), pa.string()),
                    pa.array(t_end, pa.int64()),
                    pa.FixedSizeBinaryArray.from_buffers(
                        pa.binary(4 * x.shape[1]), len(y), [None, pa.py_buffer(flat.tobytes())]
                    ),
                    pa.array(y, pa.int8()),
                ],
                schema=schema,
            )
        )
    return pa.concat_tables(pieces) if pieces else schema.empty_table()


def to_arrays(
    table: pa.Table, spec_channels: int, *, writable: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """``(x [rows, ticks, channels] float32, y [rows] float32)`` of a window table or shard.

    :param writable: copy the features once into a fresh array (what torch wants); otherwise
        ``x`` is a read-only view of the Arrow buffer when the column is one chunk.
    """
    column = table.column(FEATURES_COLUMN)
    width = column.type.byte_width // 4
    rows = len(table)
    chunks = [chunk for chunk in column.chunks if len(chunk)]
    if len(chunks) == 1 and not writable:
        flat = _chunk_view(chunks[0], width)
    else:
        # One copy straight from each chunk (combine_chunks would copy once more).
        flat = np.empty((rows, width), dtype="<f4")
        start = 0
        for chunk in chunks:
            flat[start : start + len(chunk)] = _chunk_view(chunk, width)
            start += len(chunk)
    x = flat.reshape(rows, width // spec_channels, spec_channels)
    y = table.column(LABEL_COLUMN).to_numpy(zero_copy_only=False).astype(np.float32)
    return x, y


def _chunk_view(chunk: pa.FixedSizeBinaryArray, width: int) -> np.ndarray:
    # A zero-copy view of the Arrow buffer (read-only).
    values = np.frombuffer(
        chunk.buffers()[1], dtype="<f4", count=len(chunk) * width, offset=chunk.offset * width * 4
    )
    return values.reshape(len(chunk), width)
