"""Regenerate ``get_provider_info.py`` from ``provider.yaml``, the provider's source of truth.

Run ``python -m nuro_ml.provider_yaml`` after editing provider.yaml; a unit test fails when
the two disagree, so the entry point Airflow reads never drifts from the declaration.
"""

from __future__ import annotations

import pprint
import sys
from pathlib import Path
from typing import Any

import yaml

PACKAGE_DIR = Path(__file__).resolve().parent
PROVIDER_YAML = PACKAGE_DIR / "provider.yaml"
GENERATED = PACKAGE_DIR / "get_provider_info.py"

HEADER = '''# This file is generated from provider.yaml by `python -m nuro_ml.provider_yaml`; do not edit it by hand.
from __future__ import annotations

from typing import Any


def get_provider_info() -> dict[str, Any]:
    return '''


def load_provider_yaml() -> dict[str, Any]:
    with PROVIDER_YAML.open() as fh:
        data: dict[str, Any] = yaml.safe_load(fh)
    return data


def render() -> str:
    body = pprint.pformat(load_provider_yaml(), indent=4, width=100, sort_dicts=False)
    indented = "\n".join(("        " + line if i else line) for i, line in enumerate(body.splitlines()))
    return HEADER + indented + "\n"


def main() -> int:
    GENERATED.write_text(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
