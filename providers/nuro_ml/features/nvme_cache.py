"""Read-through cache of remote training shards (S3) on local NVMe, shared by processes.

Layout under the cache root::

    data/<key>          complete shards only (a fill is written to tmp/ and renamed in)
    meta/<key>.json     uri, size, sha256 and ETag of the cached shard
    tmp/                fills in progress (a crashed fill leaves garbage here, never in data/)
    locks/<key>.lock    one filler per shard across processes (flock)
    .evict.lock         one evictor at a time

Readers open ``data/<key>`` directly: a rename is atomic, so they see a whole shard or none, and
an eviction that unlinks a file being read does not disturb the open handle. Every fill checks
the byte count and, for single-part uploads, the MD5 ETag, before the shard becomes visible.
The cache is bounded in bytes; when a fill pushes it over, least-recently-read shards go first
(a hit touches the file's mtime).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from nuro_ml.features.file_lock import file_lock

try:
    from nuro_ml.exceptions import ShardCacheError
except ImportError:  # a bare training box (PyTorch and pyarrow, no Airflow) still gets the cache

    class ShardCacheError(RuntimeError):  # type: ignore[no-redef]
        """A training shard could not be fetched into the local cache or failed its checksum."""


log = logging.getLogger(__name__)

_CHUNK = 8 << 20


@dataclass
class CacheStats:
    """Counters of one :class:`ShardCache` instance (this process)."""

    hits: int = 0
    misses: int = 0
    bytes_from_cache: int = 0
    bytes_from_remote: int = 0
    evictions: int = 0
    evicted_bytes: int = 0
    checksum_failures: int = 0

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "hit_rate": round(self.hit_rate, 4)}


def _split_s3(uri: str) -> tuple[str, str]:
    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc or not parts.path.strip("/"):
        raise ShardCacheError(f"Not an s3://bucket/key URI: {uri!r}")
    return parts.netloc, parts.path.lstrip("/")


class ShardCache:
    """Byte-bounded, checksummed, multi-process read-through cache of S3 objects.

    :param root: cache directory on local disk (NVMe).
    :param capacity_bytes: upper bound of cached bytes; shards beyond it are evicted LRU.
    :param s3_client: a boto3 S3 client (its endpoint and credentials are used as given).
    :param verify_on_read: re-hash a cached shard on every read (catches disk corruption).
    """

    def __init__(
        self, root: str | Path, *, capacity_bytes: int, s3_client: Any, verify_on_read: bool = False
    ) -> None:
        if capacity_bytes <= 0:
            raise ValueError(f"capacity_bytes must be positive, got {capacity_bytes}")
        self.root = Path(root)
        self.capacity_bytes = capacity_bytes
        self.s3 = s3_client
        self.verify_on_read = verify_on_read
        self.stats = CacheStats()
        for sub in ("data", "meta", "tmp", "locks"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(uri: str) -> str:
        return hashlib.sha256(uri.encode()).hexdigest()

    def _data(self, key: str) -> Path:
        return self.root / "data" / key

    def _meta(self, key: str) -> Path:
        return self.root / "meta" / f"{key}.json"

    # ------------------------------------------------------------------ reading

    def open(self, uri: str) -> IO[bytes]:
        """An open binary file with the shard's bytes (fetched first on a miss)."""
        key = self.key(uri)
        fh = self._open_cached(key)
        if fh is not None:
            self.stats.hits += 1
            return fh
        with file_lock(self.root / "locks" / f"{key}.lock"):
            # Another process may have filled it while this one waited for the lock.
            fh = self._open_cached(key)
            if fh is not None:
                self.stats.hits += 1
                return fh
            self.stats.misses += 1
            # The handle is opened before the shard becomes visible, so a concurrent eviction
            # cannot take it away between the fill and this read.
            fh = self._fill(uri, key)
        self._evict(keep=key, incoming=os.fstat(fh.fileno()).st_size)
        return fh

    def read_bytes(self, uri: str) -> bytes:
        with self.open(uri) as fh:
            data = fh.read()
        return data

    def _open_cached(self, key: str) -> IO[bytes] | None:
        try:
            fh = self._data(key).open("rb")
        except FileNotFoundError:
            return None
        size = os.fstat(fh.fileno()).st_size
        if self.verify_on_read and not self._verify(key, fh, size):
            fh.close()
            return None
        # Recency for LRU; a concurrent eviction may have unlinked the file, but our open
        # handle still reads the whole shard.
        with contextlib.suppress(FileNotFoundError):
            os.utime(self._data(key))
        self.stats.bytes_from_cache += size
        return fh

    def _verify(self, key: str, fh: IO[bytes], size: int) -> bool:
        try:
            meta = json.loads(self._meta(key).read_text())
        except (FileNotFoundError, ValueError):
            return False
        digest = hashlib.sha256()
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
        fh.seek(0)
        if meta.get("size") == size and meta.get("sha256") == digest.hexdigest():
            return True
        self.stats.checksum_failures += 1
        log.warning("Cached shard %s failed its checksum; fetching it again", meta.get("uri", key))
        self._remove(key)
        return False

    # ------------------------------------------------------------------ filling

    def _fill(self, uri: str, key: str) -> IO[bytes]:
        bucket, object_key = _split_s3(uri)
        try:
            response = self.s3.get_object(Bucket=bucket, Key=object_key)
        except Exception as exc:
            raise ShardCacheError(f"Cannot fetch shard {uri}: {exc}") from exc
        expected = int(response.get("ContentLength", -1))
        etag = str(response.get("ETag", "")).strip('"')
        sha = hashlib.sha256()
        md5 = hashlib.md5(usedforsecurity=False)
        size = 0
        fd, tmp_name = tempfile.mkstemp(dir=self.root / "tmp", prefix=f"{key}.")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                body = response["Body"]
                for chunk in iter(lambda: body.read(_CHUNK), b""):
                    out.write(chunk)
                    sha.update(chunk)
                    md5.update(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            if expected >= 0 and size != expected:
                raise ShardCacheError(f"Shard {uri}: received {size} bytes, S3 announced {expected}")
            if etag and "-" not in etag and etag != md5.hexdigest():
                self.stats.checksum_failures += 1
                raise ShardCacheError(f"Shard {uri}: MD5 {md5.hexdigest()} does not match ETag {etag}")
            meta = {
                "uri": uri,
                "size": size,
                "sha256": sha.hexdigest(),
                "etag": etag,
                "fetched_at": time.time(),
            }
            meta_tmp = self.root / "tmp" / f"{key}.json.{os.getpid()}"
            meta_tmp.write_text(json.dumps(meta))
            os.replace(meta_tmp, self._meta(key))
            reader = tmp.open("rb")
            try:
                os.replace(tmp, self._data(key))
            except BaseException:
                reader.close()
                raise
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self.stats.bytes_from_remote += size
        log.info("Cached shard %s (%d bytes)", uri, size)
        return reader

    # ------------------------------------------------------------------ eviction

    def _entries(self) -> list[tuple[float, int, str]]:
        out = []
        with os.scandir(self.root / "data") as it:
            for entry in it:
                try:
                    st = entry.stat()
                except FileNotFoundError:
                    continue
                out.append((st.st_mtime, st.st_size, entry.name))
        return out

    def used_bytes(self) -> int:
        return sum(size for _, size, _ in self._entries())

    def _evict(self, *, keep: str, incoming: int) -> None:
        with file_lock(self.root / ".evict.lock"):
            entries = self._entries()
            used = sum(size for _, size, _ in entries)
            if used <= self.capacity_bytes:
                return
            for _, size, name in sorted(entries):
                if used <= self.capacity_bytes:
                    break
                if name == keep:
                    continue
                self._remove(name)
                used -= size
                self.stats.evictions += 1
                self.stats.evicted_bytes += size
            if used > self.capacity_bytes:
                log.warning(
                    "Shard cache %s holds %d bytes over its %d-byte capacity (a shard of %d bytes "
                    "is larger than the free space)",
                    self.root,
                    used,
                    self.capacity_bytes,
                    incoming,
                )

    def _remove(self, key: str) -> None:
        self._data(key).unlink(missing_ok=True)
        self._meta(key).unlink(missing_ok=True)
