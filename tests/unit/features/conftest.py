from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from nuro_ml.hooks.feast import FeastHook


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh NURO_ML_DATA_DIR: sources, registry, online store and cache of one test."""
    directory = tmp_path / "data"
    monkeypatch.setenv("NURO_ML_DATA_DIR", str(directory))
    for name in ("ONLINE_STORE", "REDIS_CONNECTION_STRING", "REGISTRY_URL", "CACHE_URL"):
        monkeypatch.delenv(f"NURO_ML_FEAST_{name}", raising=False)
    return directory


@pytest.fixture
def sqlite_hook(data_dir: Path) -> Iterator[FeastHook]:
    """A hook on the embedded defaults (file registry, SQLite online store) in ``data_dir``."""
    hook = FeastHook(feast_conn_id=None)
    yield hook
    hook.close()
