"""Dataclasses are the config: build them from YAML, override them from the command line, dump them back.

Every stage's settings are a (nested) dataclass. :func:`load_config` reads a YAML file into one,
:func:`apply_overrides` applies dotted ``--key value`` overrides on top, and :func:`validate_config` runs
every ``validate()`` method. :func:`dump_config_yaml` writes the resolved config that goes into each run
directory; loading that YAML back gives an equal config.

Values are checked and coerced by the field's annotation (resolved with :func:`typing.get_type_hints`, so
dataclasses must live at module level):

* ``int``: ints, integral floats and int-looking strings; never ``bool``.
* ``float``: numbers (not ``bool``) and float-looking strings (YAML 1.1 reads ``1e-3`` as a string).
* ``bool``: booleans, ``0``/``1`` and the strings true/false/yes/no/on/off/1/0 (any case).
* ``str``: strings; ints and floats become their text; ``bool`` and ``None`` are refused.
* ``X | Y``: a value that already is one member's type keeps that type, else the first member that
  coerces it wins; ``None`` only where ``None`` is a member.
* ``list[T]``, ``tuple[T, ...]``: a list (never a scalar wrapped silently), coerced element-wise;
  tuple fields become tuples.
* ``dict`` / ``dict[K, V]``: a mapping; ``Literal[...]``: one of the listed values.
* a dataclass (or ``Dataclass | None``): a mapping of its fields, recursively; unset fields keep defaults.

Every problem is a one-line :class:`~defuse.errors.ConfigError` naming the dotted key (``train.lora.r``)
and, where known, the file or ``command line``.
"""

from __future__ import annotations

import collections.abc as cabc
import copy
import dataclasses
import functools
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from defuse.config_file import StrictLoader, read_config_mapping
from defuse.errors import ConfigError

T = TypeVar("T")
Overrides = Mapping[str, str] | Sequence[tuple[str, str]]

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_SCALARS: dict[Any, tuple[type, ...]] = {
    int: (int, float, str),
    float: (int, float, str),
    str: (str, int, float),
    Path: (str, Path),
}
"""Scalar annotation -> the value types it accepts (never ``bool``), converted by calling the annotation."""


class _Mismatch(Exception):
    """Internal: the value does not fit the annotation (turned into a ConfigError by the caller)."""


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _init_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.init]


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _dataclass_in(tp: Any) -> type | None:
    """The dataclass type of ``tp`` when it is ``D`` or ``D | None``, else ``None``."""
    members = [a for a in typing.get_args(tp) if a is not type(None)] if _is_union(tp) else [tp]
    return members[0] if len(members) == 1 and _is_dataclass_type(members[0]) else None


def _describe(tp: Any) -> str:
    """A short human name for an annotation, for error messages."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is type(None):
        return "null"
    if _is_union(tp):
        return " or ".join(_describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (list, tuple, cabc.Sequence) and args:
        return f"list of {_describe(args[0])}"
    if origin in (dict, cabc.Mapping) or tp in (dict, cabc.Mapping):
        return "mapping"
    if _is_dataclass_type(tp):
        return f"mapping of {tp.__name__} settings"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str, source: Any, raw: str | None = None) -> Any:
    """Check and coerce ``value`` to annotation ``tp``; ``raw`` is the unparsed command-line text, if any."""
    try:
        return _coerce_inner(value, tp, key, source, raw)
    except _Mismatch:
        shown = raw if raw is not None else value
        hint = "; quote it to mean text" if isinstance(value, bool) and "str" in _describe(tp) else ""
        raise ConfigError(
            key, f"expected {_describe(tp)}, got {type(value).__name__} {shown!r}{hint}", source
        ) from None


def _coerce_inner(value: Any, tp: Any, key: str, source: Any, raw: str | None) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is object:
        return value
    if _is_union(tp):  # a member that takes the value unchanged wins, else the first that coerces it
        working, nested = [], None
        for member in args:
            try:
                coerced = _coerce_inner(value, member, key, source, raw)
            except _Mismatch:
                continue
            except ConfigError as exc:  # the value has the member's shape but is wrong deeper down
                nested = nested or exc
                continue
            if type(coerced) is type(value) and coerced == value:
                return coerced
            working.append(coerced)
        if working:
            return working[0]
        raise nested or _Mismatch()
    if tp is type(None):
        if value is None:
            return None
        raise _Mismatch
    if origin is Literal:
        for choice in args:
            if value == choice and type(value) is type(choice):
                return choice
            if raw is not None and raw == choice:
                return choice
        raise _Mismatch
    if _is_dataclass_type(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return config_from_dict(tp, value, source, prefix=key)
        raise _Mismatch
    if origin in (list, tuple, cabc.Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise ConfigError(key, f"expected {len(args)} items, got {len(value)}", source)
            return tuple(
                _coerce(v, a, f"{key}[{i}]", source) for i, (v, a) in enumerate(zip(value, args, strict=True))
            )
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{key}[{i}]", source) for i, v in enumerate(value)]
        return tuple(items) if (origin or tp) is tuple else items
    if origin in (dict, cabc.Mapping) or tp in (dict, cabc.Mapping):
        if not isinstance(value, Mapping):
            raise _Mismatch
        kt, vt = args if len(args) == 2 else (Any, Any)
        return {_coerce(k, kt, key, source): _coerce(v, vt, f"{key}.{k}", source) for k, v in value.items()}
    return _scalar(value, tp, raw)


def _scalar(value: Any, tp: Any, raw: str | None) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower() if isinstance(value, (int, str)) else ""
        if text in _TRUE | _FALSE:
            return text in _TRUE
        raise _Mismatch
    if tp in (str, Path) and raw is not None:
        return tp(raw)
    allowed = _SCALARS.get(tp)
    if allowed is None:
        if isinstance(tp, type) and isinstance(value, tp):
            return value
        raise _Mismatch
    if isinstance(value, bool) or not isinstance(value, allowed):
        raise _Mismatch
    if tp is int and isinstance(value, float) and not value.is_integer():
        raise _Mismatch
    try:
        return tp(value.strip() if isinstance(value, str) and tp is not str else value)
    except ValueError:
        raise _Mismatch from None


def _field_default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def config_from_dict(
    cls: type[T], data: Mapping, source: str | Path | None = None, prefix: str = "", base: T | None = None
) -> T:
    """Build dataclass ``cls`` from ``data``, recursing into nested dataclass fields.

    A nested block changes only the settings it names of that field's default: a ``train:`` block of two
    keys in a jailbreak config keeps the rest of the jailbreak's own training recipe (its field's default),
    not the plain :class:`TrainSettings` defaults, exactly as ``--train.key value`` overrides do.

    Args:
        cls: A dataclass type (module level, so its annotations resolve).
        data: Setting name -> value; unset fields keep their defaults (``base``'s values when given).
        source: Where ``data`` came from (a file), named in errors.
        prefix: Dotted key of ``cls`` inside the whole config (``"train"``), for error messages.
        base: An instance of ``cls`` whose values the unset fields keep.

    Raises:
        ConfigError: an unknown key (listing the known ones), a value of the wrong type, or a missing
            required setting; each names the dotted key and ``source``.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(prefix or "<top level>", f"expected a mapping, got {type(data).__name__}", source)
    hints = _hints(cls)
    known = {f.name: f for f in _init_fields(cls)}
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else str(name)
        if name not in known:
            raise ConfigError(key, f"unknown setting (known: {', '.join(known)})", source)
        sub = _dataclass_in(hints[name])
        current = None
        if sub is not None and isinstance(value, Mapping):
            current = getattr(base, name) if base is not None else _field_default(known[name])
        if isinstance(current, sub or ()):
            kwargs[name] = config_from_dict(sub, value, source, prefix=key, base=current)
        else:
            kwargs[name] = _coerce(value, hints[name], key, source)
    if base is not None:
        return dataclasses.replace(base, **kwargs)
    for name, f in known.items():
        if (
            name not in kwargs
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ):
            raise ConfigError(f"{prefix}.{name}" if prefix else name, "missing required setting", source)
    return cls(**kwargs)


def _parse_value(raw: str) -> Any:
    try:
        return yaml.load(raw, Loader=StrictLoader) if raw.strip() else raw  # noqa: S506 - safe loader
    except yaml.YAMLError:
        return raw


def _set_in_dict(d: Any, parts: list[str], value: Any) -> dict:
    out = dict(d) if isinstance(d, Mapping) else {}
    out[parts[0]] = value if len(parts) == 1 else _set_in_dict(out.get(parts[0]), parts[1:], value)
    return out


def _override(obj: Any, parts: list[str], done: list[str], raw: Any, source: str) -> Any:
    """Set ``parts`` below ``obj`` to ``raw`` (command-line text, or an already-parsed non-string value)."""
    cls = type(obj)
    known = [f.name for f in _init_fields(cls)]
    name = parts[0]
    key = ".".join([*done, name])
    if name not in known:
        raise ConfigError(key, f"unknown setting (known: {', '.join(known)})", source)
    tp = _hints(cls)[name]
    text = raw if isinstance(raw, str) else None
    value = _parse_value(raw) if text is not None else raw
    if len(parts) == 1:
        new = _coerce(value, tp, key, source, raw=text)
    elif (sub := _dataclass_in(tp)) is not None:
        current = getattr(obj, name)
        if current is None:
            try:
                current = sub()
            except TypeError:
                raise ConfigError(key, "has required settings; set it as a whole", source) from None
        new = _override(current, parts[1:], [*done, name], raw, source)
    elif typing.get_origin(tp) in (dict, cabc.Mapping) or tp in (dict, cabc.Mapping):
        new = _coerce(_set_in_dict(getattr(obj, name), parts[1:], value), tp, key, source)
    else:
        raise ConfigError(".".join([*done, *parts]), f"'{key}' is not a section", source)
    return dataclasses.replace(obj, **{name: new})


def apply_overrides(cfg: T, overrides: Overrides | None, source: str = "command line") -> T:
    """Return a new config with dotted-key overrides applied in order (``cfg`` is not changed).

    Values are parsed with ``yaml.safe_load`` (``"0.1"`` -> 0.1, ``"[a, b]"`` -> list, ``"null"`` ->
    None) and then coerced by the field's annotation; a ``str`` field takes the raw text (``"123"`` stays
    ``"123"``); a value that is not a string is taken as already parsed. Dashes in keys equal underscores.
    Setting a field of a ``None`` sub-config first builds it from its defaults; a key below a ``dict``
    field sets an entry of the dict.

    Raises:
        ConfigError: an unknown or malformed key, or a value of the wrong type, naming key and ``source``.
    """
    pairs = list(overrides.items()) if isinstance(overrides, Mapping) else list(overrides or [])
    out = copy.deepcopy(cfg)
    for key, raw in pairs:
        parts = str(key).replace("-", "_").split(".")
        if not all(parts):
            raise ConfigError(str(key), "malformed setting name", source)
        out = _override(out, parts, [], raw, source)
    return out


def nested_overrides(cls: type, mapping: Mapping, prefix: str = "") -> list[tuple[str, Any]]:
    """Turn a nested settings mapping into dotted ``(key, value)`` overrides for :func:`apply_overrides`.

    A mapping under a field that is a dataclass (or ``Dataclass | None``) becomes dotted keys, so unset
    fields keep the config's own defaults (``{"train": {"epochs": 2}}`` -> ``[("train.epochs", 2)]``, where
    :func:`config_from_dict` would rebuild ``train`` from its class defaults); a mapping under any other
    field (a ``dict`` setting) stays one value. Unknown names pass through, for :func:`apply_overrides` to
    refuse.
    """
    hints = _hints(cls) if _is_dataclass_type(cls) else {}
    pairs: list[tuple[str, Any]] = []
    for name, value in mapping.items():
        key = f"{prefix}{name}"
        sub = _dataclass_in(hints[name]) if name in hints else None
        if sub is not None and isinstance(value, Mapping) and value:
            pairs.extend(nested_overrides(sub, value, f"{key}."))
        else:
            pairs.append((key, value))
    return pairs


def peek_setting(path: str | Path | None, overrides: Overrides | None, key: str, default: Any) -> Any:
    """The value of top-level ``key`` as :func:`load_config` would see it (override, else file, else
    ``default``), read before knowing which config class applies (e.g. ``scenario``)."""
    value = read_config_mapping(path).get(key, default) if path is not None else default
    items = overrides.items() if isinstance(overrides, Mapping) else (overrides or [])
    for k, v in items:
        if k == key:
            value = _parse_value(v) if isinstance(v, str) else v
    return value


def load_config(cls: type[T], path: str | Path | None = None, overrides: Overrides | None = None) -> T:
    """Load ``cls`` from a YAML file (or its defaults), apply ``overrides``, then validate.

    An empty file means all defaults.

    Raises:
        ConfigError: a missing file or a directory, unreadable or malformed YAML (naming the line), a top
            level that is not a mapping, an unknown or ill-typed setting, or a failed ``validate()``.
    """
    if path is None:
        cfg = config_from_dict(cls, {})
    else:
        cfg = config_from_dict(cls, read_config_mapping(path), source=Path(path))
    cfg = apply_overrides(cfg, overrides)
    validate_config(cfg)
    return cfg


def validate_config(cfg: Any, prefix: str = "") -> None:
    """Call ``validate()`` on ``cfg`` and every nested dataclass that has one, children first.

    A nested :class:`ConfigError` is re-raised with its key prefixed by the sub-config's dotted path (a key
    that already starts with the sub-config's own name, such as ``por.lam`` under ``por``, is not doubled).
    """
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        return
    for f in dataclasses.fields(cfg):
        key = f"{prefix}.{f.name}" if prefix else f.name
        value = getattr(cfg, f.name)
        children = value if isinstance(value, (list, tuple)) else [value]
        for child in children:
            validate_config(child, key)
    if callable(getattr(cfg, "validate", None)):
        try:
            cfg.validate()
        except ConfigError as exc:
            if not prefix:
                raise
            before, marker, problem = str(exc).partition(f"setting '{exc.key}': ")
            if not marker:
                raise
            source = before[:-2] if before.endswith(": ") else None
            last = prefix.rpartition(".")[2]
            # a sub-config that already names itself ("por.lam" under "por") is not prefixed twice
            key = prefix + exc.key[len(last) :] if exc.key.startswith(f"{last}.") else f"{prefix}.{exc.key}"
            raise ConfigError(key, problem, source) from None


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def config_to_dict(cfg: Any) -> dict:
    """The config as plain dicts, lists and scalars (tuples become lists, paths strings)."""
    return _plain(dataclasses.asdict(cfg))


def dump_config_yaml(cfg: Any) -> str:
    """The config as YAML in field order; :func:`load_config` reads it back to an equal config."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, allow_unicode=True)


def parse_cli_overrides(args: Sequence[str]) -> list[tuple[str, str]]:
    """Turn extra CLI arguments into ``(key, value)`` pairs.

    Accepts ``--key value`` and ``--key=value`` (``value`` may start with a single dash, e.g. ``-1``).

    Raises:
        ConfigError: an argument where a ``--key`` is expected, an empty key, or a key without a value
            (at the end, or followed by another ``--key``).
    """
    pairs: list[tuple[str, str]] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or arg == "--":
            raise ConfigError(arg, "unexpected argument; overrides look like --key value", "command line")
        key, eq, value = arg[2:].partition("=")
        if not key:
            raise ConfigError(arg, "empty setting name", "command line")
        if not eq:
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                raise ConfigError(key, "expects a value", "command line")
            value = args[i + 1]
            i += 1
        pairs.append((key, value))
        i += 1
    return pairs
