"""Register Terraform secrets with Airflow's secrets masker and redact text before it is logged.

``mask_secret`` on a dict only masks keys with sensitive-looking names, so a sensitive Terraform output
that is an object would leak its other fields; :func:`mask_value` masks every leaf instead.
"""

from __future__ import annotations

import json
from typing import Any

from airflow.sdk.log import mask_secret, redact


def mask_value(value: Any) -> None:
    """Mask ``value`` and, for lists and objects, each scalar inside it."""
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, dict):
        for item in value.values():
            mask_value(item)
        mask_secret(json.dumps(value, sort_keys=True))
        return
    if isinstance(value, list | tuple | set):
        for item in value:
            mask_value(item)
        return
    mask_secret(str(value))


def redact_text(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    redacted = redact(text)
    return redacted if isinstance(redacted, str) else str(redacted)
