from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).resolve().parent / "data"


def load_json(name: str) -> Any:
    return json.loads((DATA / name).read_text())


def load_events(name: str) -> list[str]:
    return [line for line in (DATA / name).read_text().splitlines() if line.strip()]


@pytest.fixture
def show_changes() -> dict[str, Any]:
    return load_json("show_plan_changes.json")


@pytest.fixture
def show_no_changes() -> dict[str, Any]:
    return load_json("show_plan_no_changes.json")
