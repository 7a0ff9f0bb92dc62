# This file is generated from provider.yaml by `python -m nuro_ml.provider_yaml`; do not edit it by hand.
from __future__ import annotations

from typing import Any


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "nuro-ml-platform",
        "name": "nuro-ml",
        "description": "Autonomous-vehicle ML pipelines on Airflow.",
        "versions": ["0.1.0"],
    }
