"""Read a Terraform module's declarations (variables, outputs, resources, backend) with python-hcl2.

Used to pick backend defaults and to check secret variable names before Terraform runs (Terraform
silently ignores ``TF_VAR_`` values for undeclared variables), and by the static checks of
configurations whose providers cannot be installed here. A file that does not parse is reported by
Terraform itself with its own diagnostic, so parse failures are recorded here, never raised.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2


def unquote(value: Any) -> Any:
    """python-hcl2 keeps the quotes of string literals and block labels; drop them."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def blocks(document: Mapping[str, Any], kind: str) -> Iterator[dict[str, Any]]:
    """The bodies of every ``kind`` block in a parsed file (python-hcl2 wraps each in a list)."""
    for entry in document.get(kind, ()) or ():
        if isinstance(entry, dict):
            yield entry


def labelled(document: Mapping[str, Any], kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(label, body)`` for blocks with one label (variable, output, module)."""
    for entry in blocks(document, kind):
        for label, body in entry.items():
            if label.startswith("__"):
                continue
            yield unquote(label), body if isinstance(body, dict) else {}


def double_labelled(document: Mapping[str, Any], kind: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """``(type, name, body)`` for blocks with two labels (resource, data)."""
    for type_label, inner in labelled(document, kind):
        for name, body in inner.items():
            if name.startswith("__"):
                continue
            yield type_label, unquote(name), body if isinstance(body, dict) else {}


@dataclass
class ModuleConfig:
    """What one directory of ``.tf`` files declares."""

    directory: Path
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    parse_errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, directory: str | Path) -> ModuleConfig:
        config = cls(directory=Path(directory))
        for path in sorted(config.directory.glob("*.tf")):
            try:
                with path.open(encoding="utf-8") as handle:
                    config.files[path.name] = hcl2.load(handle)
            except Exception as err:
                # Any python-hcl2 failure (lark errors have no common public base class).
                config.parse_errors[path.name] = str(err).splitlines()[0] if str(err) else type(err).__name__
        return config

    def _each(self, kind: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
        for filename, document in self.files.items():
            for label, body in labelled(document, kind):
                yield filename, label, body

    @property
    def variables(self) -> dict[str, dict[str, Any]]:
        return {name: body for _, name, body in self._each("variable")}

    @property
    def outputs(self) -> dict[str, dict[str, Any]]:
        return {name: body for _, name, body in self._each("output")}

    @property
    def modules(self) -> dict[str, dict[str, Any]]:
        return {name: body for _, name, body in self._each("module")}

    @property
    def locals(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for document in self.files.values():
            for body in blocks(document, "locals"):
                merged.update({k: v for k, v in body.items() if not k.startswith("__")})
        return merged

    def _typed(self, kind: str) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for document in self.files.values():
            for type_label, name, body in double_labelled(document, kind):
                found[f"{type_label}.{name}"] = body
        return found

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        """``type.name`` -> body for every managed resource."""
        return self._typed("resource")

    @property
    def data_sources(self) -> dict[str, dict[str, Any]]:
        """``type.name`` -> body for every data source (referenced as ``data.type.name``)."""
        return self._typed("data")

    @property
    def backend_type(self) -> str | None:
        for document in self.files.values():
            for terraform in blocks(document, "terraform"):
                for backend in terraform.get("backend", ()) or ():
                    for label in backend:
                        if not label.startswith("__"):
                            return str(unquote(label))
        return None

    def required_variables(self) -> set[str]:
        return {name for name, body in self.variables.items() if "default" not in body}
