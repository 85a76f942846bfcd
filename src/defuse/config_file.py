"""Reading a YAML config file strictly: safe loading only, a key repeated within one mapping refused (PyYAML
keeps the last silently), every problem a one-line :class:`~defuse.errors.ConfigError` naming the file and the
line. :mod:`defuse.config` turns the mapping into settings."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from defuse.errors import ConfigError


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, first: int, second: int):
        self.key, self.first, self.second = key, first, second


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key repeated in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    if key in seen:
                        raise _DuplicateKey(key, seen[key], line)
                    seen[key] = line
                except TypeError:  # an unhashable key: SafeLoader refuses it itself
                    continue
        return super().construct_mapping(node, deep=deep)


def read_config_mapping(path: str | Path) -> dict:
    """The top-level mapping of a YAML config file (an empty file: ``{}``).

    Raises:
        ConfigError: a missing file or a directory, unreadable or malformed YAML (naming the line), a key
            repeated within one mapping (naming the key and both lines), or a top level that is not a
            mapping.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError("config", "file not found", path)
    if path.is_dir():
        raise ConfigError("config", "is a directory, expected a YAML file", path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=StrictLoader)  # noqa: S506 - safe loader
    except _DuplicateKey as dup:
        problem = f"key {dup.key!r} appears twice (lines {dup.first} and {dup.second}); keep one"
        raise ConfigError(str(dup.key), problem, path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("config", f"cannot read the file: {exc}", path) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError("config", f"malformed YAML{where}: {problem}", path) from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError("config", f"top level must be a mapping, got {type(data).__name__}", path)
    return dict(data)
