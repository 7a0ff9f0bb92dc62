"""Reading a spec file: libyaml speed, plus the node tree for pointing at lines and columns.

The document is composed by libyaml (``CSafeLoader``) and constructed from that node tree,
which is kept: when a later check finds a problem at a field path such as
``stages.train.args.gpus``, the path is walked through the nodes to find its line and
column. Nothing extra is computed for files that are valid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

_MERGE_TAG = "tag:yaml.org,2002:merge"


class _SpecLoader(yaml.CSafeLoader):
    """Safe loader that rejects duplicate keys (plain PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == _MERGE_TAG:
                continue
            if key_node.value in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key_node.value!r}",
                    key_node.start_mark,
                )
            seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


@dataclass(frozen=True)
class Position:
    """1-based line and column of a YAML node."""

    line: int
    column: int


@dataclass(frozen=True)
class Located:
    """Where a field path lands in the document."""

    #: Position of the key of the deepest mapping entry reached (where a reader looks for a field).
    key: Position | None
    #: Position of the deepest node reached (the offending value, for type errors).
    value: Position | None
    #: Path components that matched nodes, in order.
    matched: tuple[str | int, ...]
    #: Intermediate components with no node (pydantic's union and validator tags).
    skipped: tuple[str | int, ...]
    #: The last component when it has no node: a missing field's name, or a trailing tag.
    unmatched: str | int | None


@dataclass(frozen=True)
class Document:
    """A parsed spec file: its data and the node tree the data was built from."""

    data: Any
    root: Node | None
    #: The source text, for positions inside block strings.
    text: str = field(default="", repr=False)

    def locate(self, loc: Sequence[str | int]) -> Located:
        """Walk a field path (``("stages", "train", "args", "gpus")``) through the node tree."""
        node = self.root
        if node is None:
            return Located(
                key=None, value=None, matched=(), skipped=tuple(loc[:-1]), unmatched=loc[-1] if loc else None
            )
        matched: list[str | int] = []
        skipped: list[str | int] = []
        unmatched: str | int | None = None
        key_position: Position | None = None
        for index, part in enumerate(loc):
            child = _child(node, part)
            if child is None:
                if index == len(loc) - 1:
                    unmatched = part
                else:
                    skipped.append(part)
                continue
            key_node, node = child
            matched.append(part)
            key_position = _position(key_node) if key_node is not None else _position(node)
        return Located(
            key=key_position or _position(node),
            value=_position(node),
            matched=tuple(matched),
            skipped=tuple(skipped),
            unmatched=unmatched,
        )

    def line_in_scalar(self, loc: Sequence[str | int], line: int) -> Position | None:
        """Where line ``line`` (1-based) of a literal block string (``key: |``) starts.

        Only literal blocks keep the file's line breaks; in other scalars lines are folded,
        so there is no such position (None).
        """
        node = self.root
        for part in loc:
            child = _child(node, part) if node is not None else None
            if child is None:
                return None
            node = child[1]
        if not isinstance(node, ScalarNode) or node.style != "|":
            return None
        # The text starts on the line after the `|` indicator (0-based line numbers here).
        index = node.start_mark.line + line
        lines = self.text.splitlines()
        if index >= len(lines):
            return None
        source = lines[index]
        return Position(line=index + 1, column=len(source) - len(source.lstrip()) + 1)


def _position(node: Node) -> Position:
    return Position(line=node.start_mark.line + 1, column=node.start_mark.column + 1)


def _child(node: Node, part: str | int) -> tuple[Node | None, Node] | None:
    if isinstance(node, MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.value == str(part):
                return key_node, value_node
        return None
    if isinstance(node, SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
        return None, node.value[part]
    return None


def parse(text: str) -> Document:
    """Parse YAML text; raises ``yaml.YAMLError`` (with a mark) when it is not valid YAML."""
    loader = _SpecLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    finally:
        loader.dispose()
    return Document(data=data, root=root, text=text)


def read(path: Path) -> Document:
    """Parse a spec file (UTF-8)."""
    return parse(path.read_text(encoding="utf-8"))
