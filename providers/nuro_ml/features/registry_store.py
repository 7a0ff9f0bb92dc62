"""Feast's file registry, safe for several processes: atomic writes and serialised updates.

Feast's ``FileRegistryStore`` rewrites the registry file in place (open, truncate, write). A
process reading it meanwhile (every task refreshes its registry) sees a truncated file: a
``DecodeError``, or a prefix that parses as a registry without some feature views. And
Feast's registries commit their whole cached copy, so two processes updating at once (two
materializations of a backfill recording their intervals, an apply) each write what they
read, and the later one drops the other's change.

:class:`LockedFileRegistryStore` replaces the file with a fully written one (rename), and
:func:`registry_update` makes a read-modify-write exclusive between processes and starts it
from the file, not from a cached copy. The file format is Feast's: ``feast`` and stores
configured with Feast's own file store read and write the same file.

SQL registries update row by row inside transactions and need neither.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from feast.infra.registry.file import FileRegistryStore
from feast.utils import _utc_now

from nuro_ml.features.file_lock import file_lock

if TYPE_CHECKING:
    from feast import FeatureStore

#: ``registry_store_type`` of a file registry in the configurations the platform builds.
LOCKED_FILE_STORE_TYPE = f"{__name__}.LockedFileRegistryStore"


class LockedFileRegistryStore(FileRegistryStore):  # type: ignore[misc]
    """Feast's file registry store whose writes replace the file whole, with an update lock."""

    @property
    def path(self) -> Path:
        return Path(self._filepath)

    def _write_registry(self, registry_proto: Any) -> None:
        registry_proto.version_id = str(uuid.uuid4())
        registry_proto.last_updated.FromDatetime(_utc_now())
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=directory)
        try:
            # mkstemp creates 0600; readers under other users (an API server) need the file's mode.
            try:
                mode = self.path.stat().st_mode & 0o777
            except FileNotFoundError:
                mode = 0o644
            os.fchmod(fd, mode)
            with os.fdopen(fd, "wb") as out:
                out.write(registry_proto.SerializeToString())
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        # The rename itself survives a crash only once the directory entry is on disk.
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    @contextmanager
    def update_lock(self) -> Iterator[None]:
        """Exclusive between processes updating this registry (a lock file beside it)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(self.path.with_name(f"{self.path.name}.lock")):
            yield


@contextmanager
def registry_update(store: FeatureStore) -> Iterator[None]:
    """Run a change to ``store``'s registry as one read-modify-write no other process interleaves.

    On a :class:`LockedFileRegistryStore` the block holds the update lock and starts from a fresh
    read of the file; on any other registry it runs as it is.
    """
    registry_store = getattr(store.registry, "_registry_store", None)
    if not isinstance(registry_store, LockedFileRegistryStore):
        yield
        return
    with registry_store.update_lock():
        store.refresh_registry()
        yield
