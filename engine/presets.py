"""Saving a config into a preset's text: the values that changed are rewritten where they stand, so the file keeps
its comments, its order and the keys it leaves at their defaults.

PyYAML drops comments, and a config written whole spells out every default. Here the file is composed into nodes
(which know their line and column), each changed value's text is replaced in place, a key the file lacks is
added at the end of its section, and the result is read back: it must give the config being saved, or the caller
writes the config whole."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import yaml

from engine.config import ConfigError, RunConfig, config_path, from_dict, parse_yaml, save_config
from engine.files import atomic_write_text

Path_ = tuple[str, ...]


def save_preset(cfg: RunConfig, path: str | os.PathLike[str], like: str | None) -> None:
    """Write ``cfg`` to ``path`` into ``like``, the text of the preset it was loaded from, where its changes can
    be made in place; else whole."""
    text = edit_config_text(like, cfg) if like is not None else None
    if text is None:
        save_config(cfg, path)
    else:
        atomic_write_text(config_path(path), text)


def edit_config_text(text: str, cfg: RunConfig) -> str | None:
    """``text`` (a config file) with the values where it differs from ``cfg`` rewritten in place; None when the
    text is no valid config or a change cannot be made in place (a flow-style section, a value over several
    lines): then the config is written whole."""
    newline = "\r\n" if "\r\n" in text else "\n"  # lines added take the file's own ending
    if text and not text.endswith("\n"):
        text += newline
    try:
        changes = _changes(from_dict(parse_yaml(text)).to_dict(), cfg.to_dict())
        for path, value in changes:  # one at a time, on the text as the last one left it
            root = yaml.compose(text, Loader=yaml.SafeLoader)
            if not isinstance(root, yaml.MappingNode) or root.flow_style:
                return None
            edited = _edit(root, text, path, value, newline)
            if edited is None:
                return None
            text = edited
        return text if from_dict(parse_yaml(text)) == cfg else None
    except (ConfigError, yaml.YAMLError, RecursionError):
        return None


def _changes(old: dict[str, Any], new: dict[str, Any], path: Path_ = ()) -> list[tuple[Path_, Any]]:
    """The key paths whose values differ, as deep as both sides are mappings."""
    out: list[tuple[Path_, Any]] = []
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            out += _changes(before, value, (*path, key))
        elif value != before:
            out.append(((*path, key), value))
    return out


def _edit(root: yaml.MappingNode, text: str, path: Path_, value: Any, newline: str) -> str | None:
    """``text`` with ``path`` set to ``value``: the value's text replaced, or the key's line (under the sections
    it lacks) added; None where that cannot be done."""
    node: yaml.Node = root
    key_node: yaml.Node | None = None
    for depth, key in enumerate(path):
        if _is_null(node) and key_node is not None:  # "train:" with nothing under it: the keys go under it
            return _under(key_node, node, text, path[depth:], value, newline)
        if not isinstance(node, yaml.MappingNode) or node.flow_style:
            return None
        found = _child(node, key)
        if found is None:
            return _insert(node, text, path[depth:], value, newline)
        key_node, node = found
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and not node.flow_style:
        assert key_node is not None
        # A block (lora's keys, a list one item a line) becomes the one line of its new value.
        end = text.find("\n", _last_scalar(node).end_mark.index)
        end = len(text) if end < 0 else end + 1
        return text[: key_node.end_mark.index] + f": {_flow(value)}{newline}" + text[end:]
    start, end_mark = node.start_mark, node.end_mark
    if start.line != end_mark.line:
        return None
    new = _flow(value)
    if start.index == end_mark.index and not text[start.index - 1].isspace():
        new = " " + new  # "key:" with no value: its empty value starts right after the colon
    return text[: start.index] + new + text[end_mark.index :]


def _child(node: yaml.MappingNode, key: str) -> tuple[yaml.Node, yaml.Node] | None:
    for key_node, value_node in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
            return key_node, value_node
    return None


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def _last_scalar(node: yaml.Node) -> yaml.Node:
    """The last value written in a block: where its last line is."""
    while isinstance(node, yaml.MappingNode | yaml.SequenceNode) and node.value:
        last = node.value[-1]
        node = last[1] if isinstance(node, yaml.MappingNode) else last
    return node


def _lines(keys: Path_, value: Any, indent: int, newline: str) -> list[str]:
    """``keys[0]:`` … ``keys[-1]: value``, each key under the one before it."""
    added = [f"{' ' * indent}{'  ' * i}{key}:{newline}" for i, key in enumerate(keys[:-1])]
    added.append(f"{' ' * indent}{'  ' * (len(keys) - 1)}{keys[-1]}: {_flow(value)}{newline}")
    return added


def _under(key_node: yaml.Node, null: yaml.Node, text: str, keys: Path_, value: Any, newline: str) -> str:
    """``text`` with the lines for ``keys`` under a key whose value is null (``train:``, ``train: null``)."""
    cut = text[: null.start_mark.index].rstrip(" ") + text[null.end_mark.index :]  # "train: null" -> "train:"
    lines = cut.splitlines(keepends=True)
    at = key_node.start_mark.line + 1
    return "".join(lines[:at] + _lines(keys, value, key_node.start_mark.column + 2, newline) + lines[at:])


def _insert(parent: yaml.MappingNode, text: str, keys: Path_, value: Any, newline: str) -> str:
    """``text`` with lines for ``keys`` (a missing key, perhaps under missing sections) after ``parent``'s last."""
    lines = text.splitlines(keepends=True)
    if parent.value:
        indent = parent.value[0][0].start_mark.column
        last = parent.value[-1][1].end_mark
        at = last.line + (1 if last.column else 0)  # a block ends at the start of the line after it
    else:
        indent, at = 0, len(lines)

    def outside(line: str) -> bool:
        """A blank line, or a comment less indented than the keys: the next section's heading."""
        stripped = line.strip()
        return not stripped or (stripped.startswith("#") and len(line) - len(line.lstrip()) < indent)

    while at > parent.start_mark.line + 1 and outside(lines[at - 1]):
        at -= 1  # above the blank lines and comments that end the block
    return "".join(lines[:at] + _lines(keys, value, indent, newline) + lines[at:])


def _flow(value: Any) -> str:
    """``value`` as one line of YAML."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    dumped = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=2**16, allow_unicode=True)
    return dumped.removesuffix("\n").removesuffix("\n...").strip()
