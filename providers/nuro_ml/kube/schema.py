"""Validate objects against a CRD's structural ``openAPIV3Schema`` the way the API server does.

jsonschema (draft 4, the dialect OpenAPI v3.0 builds on) does the core checks; the
Kubernetes extensions are added as keywords:

* ``x-kubernetes-int-or-string``: an integer or a string (quantities, ports);
* ``x-kubernetes-list-type`` ``map`` / ``set``: list items unique by their map keys / value;
* ``x-kubernetes-validations``: CEL rules, evaluated by :mod:`nuro_ml.kube.cel`; transition
  rules (those using ``oldSelf``) run only when an old object is given (updates);
* ``x-kubernetes-preserve-unknown-fields`` / ``x-kubernetes-embedded-resource``: fields the
  schema does not declare are kept.

Like the API server, defaults are applied before validation and nulls in non-nullable
fields are dropped. Fields the schema does not declare are pruned by the API server (with a
warning); with ``strict=True`` they are reported instead, which is what a client wants to
catch a typo before it silently disappears.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from jsonschema import Draft4Validator, FormatChecker, ValidationError, validators

from nuro_ml.kube.cel import CelError, evaluate, uses_old_self
from nuro_ml.kube.crds import CrdVersion

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")

#: StatusCause ``reason`` values the API server uses, keyed by the failing keyword.
_CAUSE_REASON = {
    "type": "FieldValueTypeInvalid",
    "x-kubernetes-int-or-string": "FieldValueTypeInvalid",
    "required": "FieldValueRequired",
    "enum": "FieldValueNotSupported",
    "maxLength": "FieldValueTooLong",
    "maxItems": "FieldValueTooMany",
    "maxProperties": "FieldValueTooMany",
    "x-kubernetes-list-type": "FieldValueDuplicate",
    "unknown": "FieldValueUnknown",
}


@dataclass(frozen=True)
class SchemaViolation:
    """One reason an object does not match its schema, located by a Kubernetes field path."""

    #: Field path as the API server prints it, e.g. ``spec.rayClusterSpec.workerGroupSpecs[0].replicas``.
    path: str
    #: StatusCause reason (``FieldValueTypeInvalid``, ``FieldValueRequired``, ...).
    reason: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def field_path(parts: Sequence[Any]) -> str:
    """``["spec", "workerGroupSpecs", 0, "replicas"]`` -> ``spec.workerGroupSpecs[0].replicas``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "<root>"


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null" if value is None else type(value).__name__


_format_checker = FormatChecker(formats=())


@_format_checker.checks("int32")
def _is_int32(value: Any) -> bool:
    return not isinstance(value, int) or isinstance(value, bool) or _INT32[0] <= value <= _INT32[1]


@_format_checker.checks("int64")
def _is_int64(value: Any) -> bool:
    return not isinstance(value, int) or isinstance(value, bool) or _INT64[0] <= value <= _INT64[1]


@_format_checker.checks("date-time")
def _is_datetime(value: Any) -> bool:
    if not isinstance(value, str):
        return True
    if not _RFC3339.match(value):
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return False
    return True


def _keeps_unknown(schema: Mapping[str, Any]) -> bool:
    return bool(schema.get("x-kubernetes-preserve-unknown-fields")) or "additionalProperties" in schema


def _build_validator_class(strict: bool) -> type[Any]:
    base_properties = Draft4Validator.VALIDATORS["properties"]
    base_type = Draft4Validator.VALIDATORS["type"]
    base_any_of = Draft4Validator.VALIDATORS["anyOf"]

    def properties(validator: Any, props: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
        yield from base_properties(validator, props, instance, schema)
        if strict and isinstance(instance, dict) and not _keeps_unknown(schema):
            embedded = schema.get("x-kubernetes-embedded-resource")
            for key in instance:
                if key in props or (embedded and key in {"apiVersion", "kind", "metadata"}):
                    continue
                yield ValidationError(
                    "unknown field (not declared in the schema)", path=[key], validator="unknown"
                )

    def required(validator: Any, names: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
        if isinstance(instance, dict):
            for name in names:
                if name not in instance:
                    yield ValidationError("Required value", path=[name], validator="required")

    def type_(validator: Any, types: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
        for error in base_type(validator, types, instance, schema):
            error.message = f"must be of type {types}, got {_describe(instance)} {instance!r}"
            yield error
        closed = "properties" not in schema and not _keeps_unknown(schema)
        if strict and types == "object" and isinstance(instance, dict) and closed:
            for key in instance:
                yield ValidationError(
                    "unknown field (the schema declares no fields here)", path=[key], validator="unknown"
                )

    def any_of(validator: Any, subschemas: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
        if schema.get("x-kubernetes-int-or-string"):
            if isinstance(instance, bool) or not isinstance(instance, int | str):
                yield ValidationError(
                    f"must be an integer or a string, got {_describe(instance)} {instance!r}",
                    validator="x-kubernetes-int-or-string",
                )
            return
        yield from base_any_of(validator, subschemas, instance, schema)

    def int_or_string(validator: Any, flag: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
        if (
            flag
            and "anyOf" not in schema
            and (isinstance(instance, bool) or not isinstance(instance, int | str))
        ):
            yield ValidationError(f"must be an integer or a string, got {_describe(instance)} {instance!r}")

    def list_type(validator: Any, kind: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
        if not isinstance(instance, list):
            return
        if kind == "set":
            seen: list[Any] = []
            for index, item in enumerate(instance):
                if item in seen:
                    yield ValidationError(f"Duplicate value: {item!r}", path=[index])
                seen.append(item)
        elif kind == "map":
            keys = schema.get("x-kubernetes-list-map-keys") or []
            seen_keys: set[tuple[Any, ...]] = set()
            for index, item in enumerate(instance):
                if not isinstance(item, dict):
                    continue
                key = tuple(repr(item.get(k)) for k in keys)
                if key in seen_keys:
                    shown = {k: item.get(k) for k in keys}
                    yield ValidationError(f"Duplicate value: {shown!r}", path=[index])
                seen_keys.add(key)

    def cel_rules(validator: Any, rules: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
        for rule in rules:
            expression = rule["rule"]
            if uses_old_self(expression):
                continue  # transition rules need the old object: see StructuralSchema.validate
            try:
                ok = evaluate(expression, instance)
            except CelError as err:
                yield ValidationError(f"Invalid value: rule {expression!r} could not be evaluated: {err}")
                continue
            if not ok:
                yield ValidationError(f"Invalid value: {rule.get('message') or 'failed rule: ' + expression}")

    def format_(validator: Any, fmt: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
        if fmt in _format_checker.checkers and not _format_checker.conforms(instance, fmt):
            limits = {"int32": _INT32, "int64": _INT64}.get(fmt)
            detail = f"must fit in {fmt} [{limits[0]}, {limits[1]}]" if limits else f"must be a valid {fmt}"
            yield ValidationError(f"Invalid value: {instance!r}: {detail}")

    return validators.extend(
        Draft4Validator,
        {
            "properties": properties,
            "required": required,
            "type": type_,
            "anyOf": any_of,
            "format": format_,
            "x-kubernetes-int-or-string": int_or_string,
            "x-kubernetes-list-type": list_type,
            "x-kubernetes-validations": cel_rules,
        },
    )


_STRICT = _build_validator_class(strict=True)
_LENIENT = _build_validator_class(strict=False)


class StructuralSchema:
    """A CRD version's schema with the API server's defaulting, pruning and validation."""

    def __init__(self, schema: Mapping[str, Any], *, kind: str = "") -> None:
        schema = _with_open_metadata(schema)
        self.schema = schema
        self.kind = kind
        self._strict = _STRICT(schema, format_checker=_format_checker)
        self._lenient = _LENIENT(schema, format_checker=_format_checker)

    def normalize(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """A copy with nulls dropped where the schema does not allow them, then defaults applied."""
        result = _drop_nulls(copy.deepcopy(dict(obj)), self.schema)
        return _apply_defaults(result, self.schema)  # type: ignore[no-any-return]

    def prune(self, obj: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """A copy without undeclared fields, and the paths of what was removed."""
        pruned: list[str] = []
        result = _prune(copy.deepcopy(dict(obj)), self.schema, [], pruned)
        return result, pruned

    def validate(
        self,
        obj: Mapping[str, Any],
        *,
        old: Mapping[str, Any] | None = None,
        strict: bool = True,
    ) -> list[SchemaViolation]:
        """Every violation in ``obj`` (already normalized), sorted by path; ``[]`` means valid."""
        validator = self._strict if strict else self._lenient
        found: list[SchemaViolation] = []
        for error in validator.iter_errors(obj):
            found.append(
                SchemaViolation(
                    path=field_path(list(error.absolute_path)),
                    reason=_CAUSE_REASON.get(str(error.validator), "FieldValueInvalid"),
                    message=error.message,
                )
            )
        if old is not None:
            found.extend(_transition_violations(self.schema, obj, old, []))
        unique = {(v.path, v.message): v for v in found}
        return sorted(unique.values(), key=lambda v: (v.path, v.message))


def _with_open_metadata(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The root ``metadata`` is ObjectMeta, checked by the API server itself, not by the CRD schema."""
    root = dict(schema)
    props = dict(root.get("properties") or {})
    if "metadata" in props:
        props["metadata"] = {**props["metadata"], "x-kubernetes-preserve-unknown-fields": True}
        root["properties"] = props
    return root


def _drop_nulls(value: Any, schema: Mapping[str, Any]) -> Any:
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key in list(value):
            sub = props.get(key) or (extra if isinstance(extra, dict) else {})
            if value[key] is None and not sub.get("nullable"):
                del value[key]
            else:
                value[key] = _drop_nulls(value[key], sub)
    elif isinstance(value, list):
        items = schema.get("items") or {}
        return [_drop_nulls(item, items) for item in value]
    return value


def _apply_defaults(value: Any, schema: Mapping[str, Any]) -> Any:
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for key, sub in props.items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                value[key] = _apply_defaults(value[key], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in value:
                if key not in props:
                    value[key] = _apply_defaults(value[key], extra)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_apply_defaults(item, schema["items"]) for item in value]
    return value


def _prune(value: Any, schema: Mapping[str, Any], path: list[Any], pruned: list[str]) -> Any:
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        keeps = _keeps_unknown(schema)
        embedded = schema.get("x-kubernetes-embedded-resource")
        for key in list(value):
            if key in props:
                value[key] = _prune(value[key], props[key], [*path, key], pruned)
            elif isinstance(extra, dict):
                value[key] = _prune(value[key], extra, [*path, key], pruned)
            elif not keeps and not (embedded and key in {"apiVersion", "kind", "metadata"}):
                pruned.append(field_path([*path, key]))
                del value[key]
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_prune(item, schema["items"], [*path, i], pruned) for i, item in enumerate(value)]
    return value


def _transition_violations(
    schema: Mapping[str, Any], new: Any, old: Any, path: list[Any]
) -> list[SchemaViolation]:
    found: list[SchemaViolation] = []
    for rule in schema.get("x-kubernetes-validations") or []:
        expression = rule["rule"]
        if not uses_old_self(expression):
            continue
        try:
            ok = evaluate(expression, new, old)
        except CelError as err:
            found.append(
                SchemaViolation(field_path(path), "FieldValueInvalid", f"rule {expression!r}: {err}")
            )
            continue
        if not ok:
            message = rule.get("message") or f"failed rule: {expression}"
            found.append(SchemaViolation(field_path(path), "FieldValueInvalid", f"Invalid value: {message}"))
    if isinstance(new, dict) and isinstance(old, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key in new and key in old:
                found.extend(_transition_violations(sub, new[key], old[key], [*path, key]))
    return found


@cache
def _schema_for(group: str, version: str, plural: str) -> StructuralSchema:
    from nuro_ml.kube.crds import crd_version

    crd = crd_version(group, version, plural)
    return StructuralSchema(crd.schema, kind=crd.kind)


def schema_for(crd: CrdVersion) -> StructuralSchema:
    """The (cached) validator for a CRD version."""
    return _schema_for(crd.group, crd.version, crd.plural)
