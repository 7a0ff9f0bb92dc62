"""Regenerate ``get_provider_info.py`` from ``provider.yaml``, the provider's source of truth.

Run ``python -m nuro_ml.provider_yaml`` after editing provider.yaml; a unit test fails when
the two disagree, so the entry point Airflow reads never drifts from the declaration.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

PACKAGE_DIR = Path(__file__).resolve().parent
PROVIDER_YAML = PACKAGE_DIR / "provider.yaml"
GENERATED = PACKAGE_DIR / "get_provider_info.py"

HEADER = """# Generated from provider.yaml by `python -m nuro_ml.provider_yaml`; do not edit by hand.
from __future__ import annotations

from typing import Any


def get_provider_info() -> dict[str, Any]:
    return """


def load_provider_yaml() -> dict[str, Any]:
    with PROVIDER_YAML.open() as fh:
        data: dict[str, Any] = yaml.safe_load(fh)
    return data


def _literal(value: Any, indent: int) -> str:
    """Python source for ``value``, one key or item per line, as a formatter would lay it out."""
    pad = " " * (indent + 4)
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{pad}{_literal(k, indent + 4)}: {_literal(v, indent + 4)},\n" for k, v in value.items()]
        return "{\n" + "".join(items) + " " * indent + "}"
    if isinstance(value, list):
        if not value:
            return "[]"
        items = [f"{pad}{_literal(v, indent + 4)},\n" for v in value]
        return "[\n" + "".join(items) + " " * indent + "]"
    return repr(value)


def render() -> str:
    return HEADER + _literal(load_provider_yaml(), 4) + "\n"


def main() -> int:
    GENERATED.write_text(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
