"""Helpers shared by the pipeline-spec tests."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _private_spec_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own on-disk spec cache, so no test sees another's entries."""
    directory = tmp_path_factory.mktemp("spec-cache")
    monkeypatch.setenv("NURO_ML_PIPELINE_CACHE_DIR", str(directory))
    return directory


@pytest.fixture
def write_spec(tmp_path: Path) -> Callable[..., Path]:
    """Write a spec (dedented) into the test's folder and return its path."""

    def write(text: str, name: str = "pipeline.yaml", folder: Path | None = None) -> Path:
        path = (folder or tmp_path) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path

    return write
