"""A directory that answers the few S3 calls staging and the shard cache make.

``s3://bucket/key`` lives at ``<root>/bucket/key``. It stands for shared storage mounted on the
training nodes (NFS, Lustre, a FUSE-mounted bucket): the NVMe cache then copies shards from the
mount to local disk exactly as it does from S3. It also lets a box without boto3 (a bare GPU
machine) stage and read shards with the same code.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any


class ObjectNotFound(FileNotFoundError):
    """No object under that key; carries the S3 error code the callers check."""

    def __init__(self, bucket: str, key: str) -> None:
        super().__init__(f"s3://{bucket}/{key}: no such object")
        self.response = {"Error": {"Code": "404"}}


class DirectoryObjectStore:
    """``head_object``, ``get_object`` and ``put_object`` (boto3's keyword names) over a directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, bucket: str, key: str) -> Path:
        path = (self.root / bucket / key).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"s3://{bucket}/{key} points outside {self.root}")
        return path

    def head_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:
        try:
            return {"ContentLength": self._path(Bucket, Key).stat().st_size}
        except FileNotFoundError:
            raise ObjectNotFound(Bucket, Key) from None

    def get_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:
        try:
            fh = self._path(Bucket, Key).open("rb")
        except FileNotFoundError:
            raise ObjectNotFound(Bucket, Key) from None
        return {"Body": fh, "ContentLength": os.fstat(fh.fileno()).st_size}

    def put_object(self, *, Bucket: str, Key: str, Body: bytes, **_: Any) -> dict[str, Any]:
        path = self._path(Bucket, Key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "wb") as out:
            out.write(Body)
        os.replace(tmp, path)
        return {}
