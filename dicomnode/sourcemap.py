"""Line numbers for keys in YAML documents, so errors can say where a mistake is."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import yaml


@dataclass(frozen=True, slots=True)
class SourceMap:
    """Maps a key path such as ``("node", "port")`` or ``(0, "match")`` to a 1-based line."""

    lines: dict[tuple[str | int, ...], int]

    def line_of(self, path: Sequence[str | int]) -> int | None:
        """The line of ``path``, or of its nearest ancestor the document has."""
        key = tuple(path)
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key[:-1]
        return self.lines.get((), None)


def build_source_map(text: str) -> SourceMap:
    """Index every mapping key and sequence item of ``text`` by its path."""
    lines: dict[tuple[str | int, ...], int] = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return SourceMap(lines)
    if root is None:
        return SourceMap(lines)
    lines[()] = root.start_mark.line + 1
    _walk(root, (), lines)
    return SourceMap(lines)


def _walk(
    node: yaml.Node, path: tuple[str | int, ...], lines: dict[tuple[str | int, ...], int]
) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = (*path, str(key_node.value))
            lines[child] = key_node.start_mark.line + 1
            _walk(value_node, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            child = (*path, index)
            lines[child] = item.start_mark.line + 1
            _walk(item, child, lines)
