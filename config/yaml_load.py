"""YAML for config files: safe (never constructs objects) and strict about
duplicate keys, which plain YAML lets the last one silently win."""

from __future__ import annotations

from typing import Any

import yaml


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping with the same key twice."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *base` keys may be overridden: that is what merging is for
        key = loader.construct_object(key_node)
        try:
            duplicate = key in seen
        except TypeError:  # an unhashable key: the default constructor reports it
            break
        if duplicate:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark,
                f"found duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node)  # merges, and reports unhashable keys


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def safe_load_unique(text: str) -> Any:
    """``yaml.safe_load`` that raises :class:`yaml.YAMLError` on a duplicate key."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


Path = tuple[str | int, ...]
_MAX_LINES = 100_000  # marks kept per document; a config has a few hundred


def line_map(text: str) -> dict[Path, int]:
    """The 1-based line of every key (and sequence item) of a YAML document,
    by its path of keys and indexes: errors can then say where they are.
    Empty when the text is not YAML (the loader reports that)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    lines: dict[Path, int] = {}
    if root is not None:
        lines[()] = root.start_mark.line + 1
        _walk(root, (), lines, depth=0)
    return lines


def _walk(node: yaml.Node, path: Path, lines: dict[Path, int], depth: int) -> None:
    if depth > 64 or len(lines) > _MAX_LINES:  # aliases can nest exponentially
        return
    if isinstance(node, yaml.MappingNode):
        merges = [v for k, v in node.value if k.tag == "tag:yaml.org,2002:merge"]
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or \
                    not isinstance(key_node, yaml.ScalarNode):
                continue
            key: str | int = key_node.value
            child = (*path, key)
            lines.setdefault(child, key_node.start_mark.line + 1)
            _walk(value_node, child, lines, depth + 1)
        for merged in merges:  # keys written here win over merged ones (`<<: *base`)
            _walk(merged, path, lines, depth + 1)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            child = (*path, index)
            lines.setdefault(child, item.start_mark.line + 1)
            _walk(item, child, lines, depth + 1)


def line_of(lines: dict[Path, int], path: Path) -> int | None:
    """The line of ``path``, or of its nearest ancestor that has one."""
    for end in range(len(path), -1, -1):
        found = lines.get(path[:end])
        if found is not None:
            return found
    return None
