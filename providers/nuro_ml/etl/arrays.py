"""Arrow helpers shared by the reader, the file worker and the transforms."""

from __future__ import annotations

import pyarrow as pa


def one_array(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A column as one array, without a copy when it already is one chunk.

    ``ChunkedArray.combine_chunks`` copies even a single chunk, which for payload columns means
    copying every image or point cloud again.
    """
    if isinstance(column, pa.ChunkedArray):
        return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    return column
