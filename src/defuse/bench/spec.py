"""The bench config: a grid of scenarios x defenses x seeds, read from YAML and checked before any training.

::

    name: demo                          # optional; default: the file's stem
    seeds: [0, 1, 2]                    # every scenario runs once per seed (replacing the attack's seed)
    scenarios:
      - name: marker                    # letters, digits, '.', '_', '-'; unique in the file
        config: attack-marker-word.yaml # optional; read like `defuse attack --config` (its `scenario:` key
                                        # picks backdoor / fjattack / encoder)
        attack: {train: {epochs: 8}}    # optional nested settings, applied like command-line flags
        set: {rate: 0.1}                # optional dotted settings, applied like flags after `attack`
        defenses:
          - osft                        # a method name with its defaults
          - method: clean-ft            # or a mapping
            name: clean-ft-long         # optional label (default: the method), unique in the scenario
            config: defense.yaml        # optional; read like `defuse defend --config`
            settings: {train: {epochs: 20}}   # applied like `defuse defend` flags (unset keys keep defaults)

Paths in the bench file (``config:``) are relative to the bench file's folder; paths inside the attack and
defense settings (data files, models) are relative to the working directory, as for ``defuse attack``.
The "no defense" row of every scenario is its attack run itself.

:func:`load_bench` resolves every config to its dataclass, validates it, checks that each defense applies to
its scenario and that the attack can give it what it needs, and loads or builds each scenario's data, all
before any training. Every problem is a one-line :class:`~defuse.errors.ConfigError` naming the bench file
and the key path (``scenarios[1].defenses[0].method``).
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from defuse.config import (
    apply_overrides,
    config_from_dict,
    config_to_dict,
    nested_overrides,
    validate_config,
)
from defuse.config_file import read_config_mapping
from defuse.errors import ConfigError, DefuseError
from defuse.scenarios import DEFAULT_SCENARIO, check_defense_needs, defense_config_class, get_scenario

NO_DEFENSE = "none"
"""The label of a scenario's attack row ("no defense") in cells, results and tables."""
_RESERVED = (NO_DEFENSE, "attack")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_TOP_KEYS = ("name", "seeds", "scenarios")
_SCENARIO_KEYS = ("name", "config", "attack", "set", "defenses")
_DEFENSE_KEYS = ("method", "name", "config", "settings")


@dataclass(frozen=True)
class DefenseSpec:
    """One defense column of a scenario: its label, method and resolved config."""

    label: str
    method: str
    config: Any


@dataclass(frozen=True)
class ScenarioSpec:
    """One scenario of the grid: its name, kind (``backdoor``/``fjattack``/``encoder``), resolved attack
    config and defense columns."""

    name: str
    kind: str
    attack: Any
    defenses: tuple[DefenseSpec, ...]

    def attack_for(self, seed: int) -> Any:
        """The attack config of one seed (a deep copy)."""
        return dataclasses.replace(copy.deepcopy(self.attack), seed=seed)


@dataclass(frozen=True)
class BenchSpec:
    """A resolved, validated bench config."""

    name: str
    source: str | None
    seeds: tuple[int, ...]
    scenarios: tuple[ScenarioSpec, ...]
    given: dict

    def to_dict(self) -> dict:
        """JSON-ready: the file as given and every resolved config (recorded in cells.json and results)."""
        resolved = [
            {
                "name": s.name,
                "scenario": s.kind,
                "attack": config_to_dict(s.attack),
                "defenses": [
                    {"name": d.label, "method": d.method, "settings": config_to_dict(d.config)}
                    for d in s.defenses
                ],
            }
            for s in self.scenarios
        ]
        return {
            "name": self.name,
            "source": self.source,
            "seeds": list(self.seeds),
            "given": self.given,
            "scenarios": resolved,
        }


class _Where:
    """Builds one-line errors naming the bench file and a key path."""

    def __init__(self, source: Path):
        self.source = source

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(key, problem, self.source)

    def wrap(self, key: str, exc: DefuseError) -> ConfigError:
        """Re-key an error raised while resolving the part of the file at ``key``."""
        if isinstance(exc, ConfigError) and exc.source in (None, "command line", str(self.source)):
            return ConfigError(f"{key}.{exc.key}" if key else exc.key, exc.problem, self.source)
        return ConfigError(key, str(exc), self.source)


def _mapping(where: _Where, key: str, value: Any, known: tuple[str, ...]) -> dict:
    if not isinstance(value, Mapping):
        raise where.fail(key or "<top level>", f"expected a mapping, got {type(value).__name__}")
    for name in value:
        if name not in known:
            full = f"{key}.{name}" if key else str(name)
            raise where.fail(full, f"unknown setting (known: {', '.join(known)})")
    return dict(value)


def _name(where: _Where, key: str, value: Any) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise where.fail(key, f"expected a name of letters, digits, '.', '_' or '-', got {value!r}")
    return value


def _seeds(where: _Where, value: Any) -> tuple[int, ...]:
    ok = (
        isinstance(value, list)
        and value
        and all(isinstance(s, int) and not isinstance(s, bool) for s in value)
    )
    if not ok or min(value) < 0:
        raise where.fail("seeds", f"expected a non-empty list of integers >= 0, got {value!r}")
    if len(set(value)) != len(value):
        raise where.fail("seeds", f"repeated seed in {value}")
    return tuple(value)


def _config_file(where: _Where, key: str, value: Any) -> tuple[Path, dict]:
    if not isinstance(value, str) or not value:
        raise where.fail(key, f"expected a file path, got {value!r}")
    path = Path(value) if Path(value).is_absolute() else where.source.parent / value
    if not path.is_file():
        raise where.fail(key, f"file not found: {path}")
    try:
        return path, read_config_mapping(path)
    except ConfigError as exc:
        raise where.fail(key, str(exc)) from None


def _overrides(where: _Where, key: str, value: Any, cls: type, dotted: bool) -> list[tuple[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, Mapping):
        raise where.fail(key, f"expected a mapping of settings, got {type(value).__name__}")
    return [(str(k), v) for k, v in value.items()] if dotted else nested_overrides(cls, value)


def _build(where: _Where, key: str, cls: type, file: tuple[Path, dict] | None, layers) -> Any:
    """``cls`` from ``file`` (or defaults), then each ``(key, overrides)`` layer, then validated."""
    try:
        cfg = config_from_dict(cls, file[1], source=file[0]) if file else cls()
    except ConfigError as exc:
        raise where.fail(f"{key}.config", str(exc)) from None
    for layer_key, pairs in layers:
        try:
            cfg = apply_overrides(cfg, pairs, source=str(where.source))
        except ConfigError as exc:
            raise where.wrap(layer_key, exc) from None
    return cfg


def _scenario(where: _Where, i: int, raw: Any, seeds: tuple[int, ...]) -> ScenarioSpec:
    at = f"scenarios[{i}]"
    entry = _mapping(where, at, raw, _SCENARIO_KEYS)
    if "name" not in entry:
        raise where.fail(f"{at}.name", "missing required setting")
    name = _name(where, f"{at}.name", entry["name"])
    file = _config_file(where, f"{at}.config", entry["config"]) if "config" in entry else None
    inline, dotted = entry.get("attack"), entry.get("set")
    kind = (file[1] if file else {}).get("scenario", DEFAULT_SCENARIO)
    kind_key = f"{at}.config"
    for layer_key, layer in ((f"{at}.attack", inline), (f"{at}.set", dotted)):
        if isinstance(layer, Mapping) and "scenario" in layer:
            kind, kind_key = layer["scenario"], f"{layer_key}.scenario"
    try:
        cls = get_scenario(kind).config_class()
    except ConfigError as exc:
        raise where.fail(kind_key, exc.problem) from None
    layers = [
        (f"{at}.attack", _overrides(where, f"{at}.attack", inline, cls, dotted=False)),
        (f"{at}.set", _overrides(where, f"{at}.set", dotted, cls, dotted=True)),
    ]
    attack = dataclasses.replace(_build(where, at, cls, file, layers), seed=seeds[0])
    try:
        get_scenario(kind).preflight(attack)
    except DefuseError as exc:
        raise where.wrap(f"{at}.attack", exc) from None
    defenses = entry.get("defenses", [])
    if not isinstance(defenses, list):
        raise where.fail(f"{at}.defenses", f"expected a list, got {type(defenses).__name__}")
    specs: list[DefenseSpec] = []
    for j, item in enumerate(defenses):
        spec = _defense(where, f"{at}.defenses[{j}]", item, kind, attack)
        if spec.label in [s.label for s in specs]:
            raise where.fail(f"{at}.defenses[{j}].name", f"'{spec.label}' twice; give each a distinct name")
        specs.append(spec)
    return ScenarioSpec(name, kind, attack, tuple(specs))


def _defense(where: _Where, at: str, raw: Any, kind: str, attack: Any) -> DefenseSpec:
    entry = {"method": raw} if isinstance(raw, str) else _mapping(where, at, raw, _DEFENSE_KEYS)
    method_key = f"{at}.method" if not isinstance(raw, str) else at
    method = entry.get("method")
    if not isinstance(method, str) or not method:
        raise where.fail(method_key, f"expected a defense name, got {method!r}")
    try:
        cls = defense_config_class(method, kind)
    except ConfigError as exc:
        raise where.fail(method_key, exc.problem) from None
    label = _name(where, f"{at}.name", entry.get("name", method))
    if label in _RESERVED:
        raise where.fail(f"{at}.name", f"'{label}' is reserved (the attack row); choose another name")
    file = _config_file(where, f"{at}.config", entry["config"]) if "config" in entry else None
    pairs = _overrides(where, f"{at}.settings", entry.get("settings"), cls, dotted=False)
    cfg = _build(where, at, cls, file, [(f"{at}.settings", pairs)])
    try:
        validate_config(cfg)
    except DefuseError as exc:
        raise where.wrap(f"{at}.settings", exc) from None
    try:
        check_defense_needs(kind, method, cfg, attack)
    except DefuseError as exc:
        raise where.fail(method_key, str(exc)) from None
    return DefenseSpec(label, method, cfg)


def load_bench(path: str | Path) -> BenchSpec:
    """Read, resolve and check the bench config at ``path`` (see the module docstring); writes nothing.

    Raises:
        ConfigError: one line naming ``path`` and the key path of the first problem: an unknown key, a bad
            value, an unknown defense or one that does not fit its scenario, a missing or bad config or data
            file.
    """
    path = Path(path)
    raw = read_config_mapping(path)
    where = _Where(path)
    top = _mapping(where, "", raw, _TOP_KEYS)
    name = _name(where, "name", top.get("name", path.stem))
    if "seeds" not in top:
        raise where.fail("seeds", "missing required setting (a list, e.g. [0, 1, 2])")
    seeds = _seeds(where, top["seeds"])
    scenarios = top.get("scenarios")
    if not isinstance(scenarios, list) or not scenarios:
        raise where.fail("scenarios", "expected a non-empty list of scenarios")
    specs: list[ScenarioSpec] = []
    for i, item in enumerate(scenarios):
        spec = _scenario(where, i, item, seeds)
        if spec.name in [s.name for s in specs]:
            raise where.fail(f"scenarios[{i}].name", f"'{spec.name}' twice; scenario names must be unique")
        specs.append(spec)
    return BenchSpec(name, str(path), seeds, tuple(specs), _plain(raw))


def _plain(value: Any) -> Any:
    """``value`` as JSON-ready data (YAML dates and other scalars become their text)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
