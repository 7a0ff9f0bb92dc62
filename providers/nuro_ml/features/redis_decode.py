"""Column-at-a-time decoding of the Feast ``Value`` protobufs an HMGET pipeline returns.

The online reader transposes the per-entity replies into one tuple per feature and decodes
each tuple here. When every value of a column is present and shares one encoding (one tag
byte, one width: always the case for DOUBLE and FLOAT, and for integers of similar magnitude)
numpy decodes the whole column at once. Anything else (missing entities, nulls, values written
under another type, strings) goes value by value through :func:`redis_format.decoder_for`, so
both paths answer exactly what ``FeatureStore.get_online_features`` answers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from nuro_ml.features import redis_format as fmt

ColumnDecoder = Callable[[Sequence[bytes | None]], list[Any]]

# Below this many values numpy's per-call overhead costs more than decoding one by one.
VECTOR_MIN = 12

_DOUBLE_ROW = np.dtype([("tag", "u1"), ("value", "<f8")])
_FLOAT_ROW = np.dtype([("tag", "u1"), ("value", "<f4")])
_VARINT_TYPES = ("INT64", "INT32", "BOOL")


def _uniform(raws: Sequence[bytes | None], tag: int) -> tuple[bytes, int] | None:
    """The values joined and their common width, if all are present, equally long and tagged ``tag``."""
    n = len(raws)
    try:
        blob = b"".join(raws)  # type: ignore[arg-type]
    except TypeError:  # a None: the entity or the field is absent
        return None
    width, rem = divmod(len(blob), n)
    # Equal total and equal minimum length mean every value has exactly ``width`` bytes.
    if rem or width < 2 or min(map(len, raws)) != width:  # type: ignore[arg-type]
        return None
    if blob[::width] != bytes((tag,)) * n:
        return None
    return blob, width


def _fixed(row: np.dtype, tag: int, width: int, scalar: Callable[[bytes | None], Any]) -> ColumnDecoder:
    def decode(raws: Sequence[bytes | None]) -> list[Any]:
        if len(raws) < VECTOR_MIN:
            return [scalar(r) for r in raws]
        found = _uniform(raws, tag)
        if found is None or found[1] != width:
            return [scalar(r) for r in raws]
        values: list[Any] = np.frombuffer(found[0], dtype=row)["value"].tolist()
        return values

    return decode


def _varint_column(blob: bytes, n: int, width: int) -> list[int] | None:
    """Unsigned values of ``n`` Values of ``width`` bytes, each a tag and exactly one varint."""
    digits = width - 1
    if digits == 1:
        return list(blob[1::2])  # every value below 128: the byte is the value
    if digits > 10:
        return None
    mat = np.frombuffer(blob, dtype=np.uint8).reshape(n, width)
    last = mat[:, width - 1]
    # Continuation bit on every byte but the last; a tenth byte may only carry bit 63.
    if (mat[:, 1 : width - 1] < 0x80).any() or (last >= (2 if digits == 10 else 0x80)).any():
        return None
    values = last.astype(np.uint64) << np.uint64(7 * (digits - 1))
    for j in range(1, digits):
        values |= (mat[:, j] & 0x7F).astype(np.uint64) << np.uint64(7 * (j - 1))
    result: list[int] = values.tolist()
    return result


def _varint(value_type: str, scalar: Callable[[bytes | None], Any]) -> ColumnDecoder:
    tag = fmt.VALUE_TAGS[value_type]
    # Up to this width (tag + 9 or 4 digits) a varint is below 2**63 or 2**28: already the answer.
    unsigned_width, to_signed = {"INT64": (10, fmt.signed64), "INT32": (5, fmt.signed32)}.get(
        value_type, (0, None)
    )

    def decode(raws: Sequence[bytes | None]) -> list[Any]:
        n = len(raws)
        if n < VECTOR_MIN:
            return [scalar(r) for r in raws]
        found = _uniform(raws, tag)
        if found is None:
            return [scalar(r) for r in raws]
        blob, width = found
        values = _varint_column(blob, n, width)
        if values is None:
            return [scalar(r) for r in raws]
        if to_signed is None:  # BOOL
            return [v != 0 for v in values]
        if width <= unsigned_width:
            return values
        return [to_signed(v) for v in values]

    return decode


def column_decoder_for(value_type: str) -> ColumnDecoder:
    """A function turning one feature's stored Values (one per entity) into SDK answers."""
    scalar = fmt.decoder_for(value_type)
    if value_type == "DOUBLE":
        return _fixed(_DOUBLE_ROW, fmt.VALUE_TAGS["DOUBLE"], 9, scalar)
    if value_type == "FLOAT":
        return _fixed(_FLOAT_ROW, fmt.VALUE_TAGS["FLOAT"], 5, scalar)
    if value_type in _VARINT_TYPES:
        return _varint(value_type, scalar)
    return lambda raws: [scalar(r) for r in raws]
