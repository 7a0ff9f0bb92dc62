"""Reference pages generated from the sources they describe, so the docs cannot drift from them.

Directives:

``.. nuro-cli::``
    Every ``nuro-ml`` sub-command with its arguments, from :func:`nuro_ml.cli.build_parser`.
``.. nuro-pipeline-schema::``
    The YAML pipeline spec, from ``schemas/pipeline.schema.json``.
``.. nuro-connection-fields:: CONN_TYPE``
    A connection type's fields and extras, from ``provider.yaml``.
``.. nuro-feast-settings::``
    The ``NURO_ML_FEAST_*`` variables, from :class:`nuro_ml.features.config.FeastSettings`.
"""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path
from typing import Any

import yaml
from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO_ROOT / "schemas" / "pipeline.schema.json"
PROVIDER_YAML = REPO_ROOT / "providers" / "nuro_ml" / "provider.yaml"


def _inline(text: str) -> str:
    """JSON-schema and help text use Markdown backticks; RST wants double ones for literals."""
    out: list[str] = []
    parts = text.split("``")
    for i, part in enumerate(parts):
        if i % 2:
            out.append("``" + part + "``")
            continue
        # Outside literals, characters that start RST markup are plain text in help strings.
        part = part.replace("\\", "\\\\").replace("*", "\\*").replace("|", "\\|")
        pieces = part.split("`")
        for j, piece in enumerate(pieces):
            out.append(("``" + piece + "``") if j % 2 and piece else piece)
    return " ".join("".join(out).split())


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = [".. list-table::", "   :header-rows: 1", ""]
    for row in [header, *rows]:
        lines.append("   * - " + (row[0] or " "))
        lines.extend("     - " + (cell or " ") for cell in row[1:])
    lines.append("")
    return lines


class _GeneratedDirective(SphinxDirective):
    """Renders the RST lines of :meth:`lines` and records the source file as a dependency."""

    sources: tuple[Path, ...] = ()

    def lines(self) -> list[str]:
        raise NotImplementedError(type(self).__name__)

    def run(self) -> list[nodes.Node]:
        for source in self.sources:
            self.env.note_dependency(str(source))
        return self.parse_text_to_nodes("\n".join(self.lines()), allow_section_headings=True)


# --- CLI -------------------------------------------------------------------------------------------


def _argument_rows(parser: argparse.ArgumentParser) -> list[list[str]]:
    rows = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        if action.option_strings:
            name = ", ".join(action.option_strings)
            if action.nargs != 0:
                name += " " + (action.metavar or action.dest.upper())
        else:
            name = str(action.metavar or action.dest)
        parts = [_inline(action.help or "").rstrip(".")]
        if action.choices:
            parts.append("Choices: " + ", ".join(f"``{c}``" for c in action.choices))
        if action.default not in (None, False, argparse.SUPPRESS) and action.option_strings:
            parts.append(f"Default: ``{action.default}``")
        if action.required and action.option_strings:
            parts.append("Required")
        rows.append([f"``{name}``", " ".join(p + "." for p in parts if p)])
    return rows


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            found.extend((name, helps.get(name, ""), sub) for name, sub in action.choices.items())
    return found


def _cli_lines(parser: argparse.ArgumentParser, title_chars: str, path: str) -> list[str]:
    lines: list[str] = []
    for name, help_text, sub in _subcommands(parser):
        full = f"{path} {name}"
        heading = f"``{full}``"
        lines += [heading, title_chars[0] * len(heading), ""]
        if help_text:
            lines += [_inline(help_text[:1].upper() + help_text[1:]) + ".", ""]
        usage = " ".join(sub.format_usage().replace("usage:", "").split())
        lines += [".. code-block:: text", "", "   " + usage, ""]
        rows = _argument_rows(sub)
        if rows:
            lines += _table(["Argument", "Meaning"], rows)
        lines += _cli_lines(sub, title_chars[1:], full)
    return lines


class CliDirective(_GeneratedDirective):
    sources = (REPO_ROOT / "providers" / "nuro_ml" / "cli.py",)

    def lines(self) -> list[str]:
        from nuro_ml.cli import build_parser

        return _cli_lines(build_parser(), "=-~^", "nuro-ml")


# --- pipeline spec ---------------------------------------------------------------------------------


def _schema_type(prop: dict[str, Any]) -> str:
    if "$ref" in prop:
        target = prop["$ref"].rsplit("/", 1)[-1]
        return f":ref:`{target} <pipeline-spec:{target}>`"
    if "anyOf" in prop:
        return " or ".join(_schema_type(p) for p in prop["anyOf"])
    if "enum" in prop:
        return "one of " + ", ".join(f"``{json.dumps(v)}``" for v in prop["enum"])
    if "const" in prop:
        return f"``{json.dumps(prop['const'])}``"
    kind = prop.get("type", "any")
    if kind == "array" and "items" in prop:
        return "list of " + _schema_type(prop["items"])
    if kind == "object" and isinstance(prop.get("additionalProperties"), dict):
        return "map of name to " + _schema_type(prop["additionalProperties"])
    if isinstance(kind, list):
        return " or ".join(kind)
    return str(kind)


def _constraints(prop: dict[str, Any]) -> str:
    keys = ("pattern", "minimum", "maximum", "exclusiveMinimum", "minLength", "maxLength", "minItems")
    found = [f"{k} ``{prop[k]}``" for k in keys if k in prop]
    return "; ".join(found)


def _object_lines(schema: dict[str, Any]) -> list[str]:
    required = set(schema.get("required", []))
    rows = []
    for name, prop in schema.get("properties", {}).items():
        default = "required" if name in required else f"``{json.dumps(prop.get('default'))}``"
        meaning = _inline(prop.get("description", ""))
        limits = _constraints(prop)
        if limits:
            meaning += f" ({limits})"
        rows.append([f"``{name}``", _schema_type(prop), default, meaning])
    lines = _table(["Field", "Type", "Default", "Meaning"], rows)
    if schema.get("additionalProperties") is False:
        lines += ["Any other field is an error that names the file, line and field.", ""]
    return lines


class PipelineSchemaDirective(_GeneratedDirective):
    sources = (SCHEMA_PATH,)

    def lines(self) -> list[str]:
        schema = json.loads(SCHEMA_PATH.read_text())
        lines = [_inline(schema.get("description", "")), "", "Top level", "---------", ""]
        lines += _object_lines(schema)
        for name, definition in sorted(schema.get("$defs", {}).items()):
            lines += [f".. _pipeline-spec:{name}:", "", name, "-" * len(name), ""]
            if definition.get("description"):
                lines += [_inline(definition["description"]), ""]
            if "properties" in definition:
                lines += _object_lines(definition)
            else:
                lines += [f"Type: {_schema_type(definition)}.", ""]
        return lines


# --- connections -----------------------------------------------------------------------------------


class ConnectionFieldsDirective(_GeneratedDirective):
    required_arguments = 1
    sources = (PROVIDER_YAML,)

    def lines(self) -> list[str]:
        conn_type = self.arguments[0]
        provider = yaml.safe_load(PROVIDER_YAML.read_text())
        entry = next(
            (c for c in provider.get("connection-types", []) if c["connection-type"] == conn_type), None
        )
        if entry is None:
            raise self.error(f"provider.yaml declares no connection type {conn_type!r}")
        behaviour = entry.get("ui-field-behaviour", {})
        hidden = set(behaviour.get("hidden-fields", []))
        relabel = behaviour.get("relabeling", {})
        rows = [
            [f"``{field}``", "standard field", relabel.get(field, field.capitalize())]
            for field in ("host", "schema", "login", "password", "port")
            if field not in hidden
        ]
        for name, spec in entry.get("conn-fields", {}).items():
            schema = spec.get("schema", {})
            kinds = [k for k in schema.get("type", ["string"]) if k != "null"]
            kind = " or ".join(kinds) + (", secret (masked)" if schema.get("format") == "password" else "")
            rows.append([f"``{name}``", f"extra, {kind}", _inline(spec.get("label", ""))])
        lines = [
            f"Connection type ``{conn_type}`` (hook ``{entry['hook-class-name']}``).",
            "",
        ]
        return lines + _table(["Field", "Kind", "Meaning"], rows)


# --- Feast settings --------------------------------------------------------------------------------


def _attribute_docstrings(path: Path, class_name: str) -> dict[str, str]:
    """The string under each annotated attribute of ``class_name`` (pydantic does not keep them)."""
    tree = ast.parse(path.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name)
    docs: dict[str, str] = {}
    for stmt, following in zip(cls.body, cls.body[1:], strict=False):
        if (
            isinstance(stmt, ast.AnnAssign)
            and isinstance(stmt.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[stmt.target.id] = following.value.value
    return docs


class FeastSettingsDirective(_GeneratedDirective):
    sources = (REPO_ROOT / "providers" / "nuro_ml" / "features" / "config.py",)

    def lines(self) -> list[str]:
        from nuro_ml.features.config import ENV_PREFIX, FeastSettings

        docs = _attribute_docstrings(self.sources[0], "FeastSettings")
        rows = []
        for name, field in FeastSettings.model_fields.items():
            rows.append(
                [
                    f"``{ENV_PREFIX}{name.upper()}``",
                    f"``{json.dumps(field.get_default(call_default_factory=True))}``",
                    _inline(docs.get(name, "")),
                ]
            )
        return _table(["Variable", "Default", "Meaning"], rows)


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("nuro-cli", CliDirective)
    app.add_directive("nuro-pipeline-schema", PipelineSchemaDirective)
    app.add_directive("nuro-connection-fields", ConnectionFieldsDirective)
    app.add_directive("nuro-feast-settings", FeastSettingsDirective)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
