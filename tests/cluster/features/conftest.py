from __future__ import annotations

from tests.unit.features.conftest import data_dir, sqlite_hook

__all__ = ["data_dir", "sqlite_hook"]
