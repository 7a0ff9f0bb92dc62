"""Client-side validation of a whole RayJob manifest, before anything is sent to the cluster."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nuro_ml.exceptions import RayJobSpecInvalidError
from nuro_ml.kube.crds import RAYJOB_KIND, rayjob_crd
from nuro_ml.kube.schema import SchemaViolation, schema_for
from nuro_ml.kube.topology import validate_kueue_topology
from nuro_ml.kube.validation import (
    validate_kueue_constraints,
    validate_object_meta,
    validate_rayjob_semantics,
)


def rayjob_violations(
    manifest: Mapping[str, Any], *, strict: bool = True
) -> tuple[dict[str, Any], list[SchemaViolation]]:
    """The normalized (defaulted) manifest and every problem with it, sorted by field path."""
    crd = rayjob_crd()
    schema = schema_for(crd)
    found: list[SchemaViolation] = []
    if manifest.get("apiVersion") != crd.api_version:
        found.append(
            SchemaViolation(
                "apiVersion",
                "FieldValueNotSupported",
                f"Unsupported value: {manifest.get('apiVersion')!r}: expected {crd.api_version!r}",
            )
        )
    if manifest.get("kind") != RAYJOB_KIND:
        found.append(
            SchemaViolation(
                "kind",
                "FieldValueNotSupported",
                f"Unsupported value: {manifest.get('kind')!r}: expected {RAYJOB_KIND!r}",
            )
        )
    normalized = schema.normalize(manifest)
    found.extend(schema.validate(normalized, strict=strict))
    found.extend(validate_object_meta(normalized.get("metadata") or {}))
    found.extend(validate_rayjob_semantics(normalized))
    found.extend(validate_kueue_constraints(normalized))
    found.extend(validate_kueue_topology(normalized))
    unique = {(v.path, v.message): v for v in found}
    return normalized, sorted(unique.values(), key=lambda v: (v.path, v.message))


def validate_rayjob_manifest(manifest: Mapping[str, Any], *, strict: bool = True) -> dict[str, Any]:
    """Return the defaulted manifest, or raise :class:`RayJobSpecInvalidError` naming each bad field.

    :param manifest: a complete ``ray.io/v1`` RayJob object.
    :param strict: report fields the CRD does not declare (the API server would silently drop them).
    """
    normalized, found = rayjob_violations(manifest, strict=strict)
    if found:
        metadata = manifest.get("metadata") or {}
        where = f"{metadata.get('namespace') or '<default namespace>'}/{metadata.get('name') or '<unnamed>'}"
        lines = [str(v) for v in found]
        raise RayJobSpecInvalidError(
            f"RayJob {where} is invalid ({len(lines)} problem{'s' if len(lines) > 1 else ''}): "
            + "; ".join(lines),
            lines,
        )
    return normalized
