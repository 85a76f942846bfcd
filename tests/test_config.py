"""Dataclass config machinery: YAML -> dataclass, coercion, overrides, validation, round trip, CLI pairs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from defuse.config import (
    apply_overrides,
    config_from_dict,
    config_to_dict,
    dump_config_yaml,
    load_config,
    parse_cli_overrides,
    validate_config,
)
from defuse.config_file import read_config_mapping
from defuse.errors import ConfigError
from defuse.training.config import LoraSettings, TrainSettings


@dataclass
class Lora:
    r: int = 8
    alpha: float = 16.0
    targets: list[str] | None = None

    def validate(self) -> None:
        if self.r < 1:
            raise ConfigError("r", f"must be >= 1, got {self.r}")


@dataclass
class Train:
    learning_rate: float = 1e-3
    epochs: int = 2
    bf16: bool = False
    lora: Lora | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class Trigger:
    kind: Literal["word", "sentence"] = "word"
    texts: list[str] = field(default_factory=lambda: ["cf"])
    position: str | int = "start"


@dataclass
class Attack:
    name: str = "badnet"
    seed: int = 0
    rate: float = 0.1
    trigger: Trigger = field(default_factory=Trigger)
    train: Train = field(default_factory=Train)
    kinds: tuple[str, ...] = ("a", "b")
    note: str | None = None
    calls: list[str] = field(default_factory=list)

    def validate(self) -> None:
        self.calls.append("attack")
        if not 0 <= self.rate <= 1:
            raise ConfigError("rate", f"must be in [0, 1], got {self.rate}")


@dataclass(frozen=True)
class Needs:
    required: int
    other: int = 1


def _yaml(tmp_path, text: str, name: str = "cfg.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


# --- coercion ------------------------------------------------------------------------------------------


def test_defaults_and_nested_build():
    cfg = config_from_dict(Attack, {"trigger": {"kind": "sentence"}, "train": {"lora": {"r": 4}}})
    assert cfg.trigger == Trigger(kind="sentence")
    assert cfg.train.lora == Lora(r=4)
    assert cfg.train.learning_rate == 1e-3 and cfg.kinds == ("a", "b") and cfg.calls == []
    assert config_from_dict(Attack, {"train": {"lora": None}}).train.lora is None


@pytest.mark.parametrize(
    "data, attr, expected",
    [
        ({"seed": "7"}, "seed", 7),
        ({"seed": 3.0}, "seed", 3),
        ({"rate": 1}, "rate", 1.0),
        ({"rate": "1e-3"}, "rate", 1e-3),
        ({"name": 123}, "name", "123"),
        ({"kinds": ["x", "y", "z"]}, "kinds", ("x", "y", "z")),
        ({"note": None}, "note", None),
        ({"note": "hi"}, "note", "hi"),
    ],
)
def test_scalar_coercion(data, attr, expected):
    value = getattr(config_from_dict(Attack, data), attr)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    "text, expected", [("yes", True), ("No", False), ("1", True), ("0", False), (1, True)]
)
def test_bool_coercion(text, expected):
    assert config_from_dict(Train, {"bf16": text}).bf16 is expected


@pytest.mark.parametrize("value, expected", [("end", "end"), (3, 3), ("3", "3"), (2.0, "2.0")])
def test_str_int_union_keeps_matching_member_else_first_that_works(value, expected):
    got = config_from_dict(Trigger, {"position": value}).position
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    "data, key, expected",
    [
        ({"seed": True}, "seed", "int"),
        ({"seed": 1.5}, "seed", "int"),
        ({"seed": "seven"}, "seed", "int"),
        ({"rate": False}, "rate", "float"),
        ({"rate": "fast"}, "rate", "float"),
        ({"name": True}, "name", "str"),
        ({"name": None}, "name", "str"),
        ({"trigger": {"texts": "cf"}}, "trigger.texts", "list of str"),
        ({"trigger": {"texts": ["cf", ["x"]]}}, "trigger.texts[1]", "str"),
        ({"trigger": {"kind": "phrase"}}, "trigger.kind", "one of 'word', 'sentence'"),
        ({"trigger": {"position": None}}, "trigger.position", "str or int"),
        ({"train": {"bf16": "maybe"}}, "train.bf16", "bool"),
        ({"train": {"extra": [1]}}, "train.extra", "mapping"),
        ({"train": 3}, "train", "mapping of Train settings"),
        ({"train": {"lora": {"r": "x"}}}, "train.lora.r", "int"),
    ],
)
def test_wrong_type_names_dotted_key_and_expected_type(data, key, expected):
    with pytest.raises(ConfigError) as info:
        config_from_dict(Attack, data, source="a.yaml")
    message = str(info.value)
    assert f"setting '{key}'" in message and f"expected {expected}," in message
    assert message.startswith("a.yaml: ") and "\n" not in message and info.value.key == key


def test_unknown_key_lists_known_and_names_file(tmp_path):
    path = _yaml(tmp_path, "train:\n  lerning_rate: 0.1\n")
    with pytest.raises(ConfigError) as info:
        load_config(Attack, path)
    message = str(info.value)
    assert message == (
        f"{path}: setting 'train.lerning_rate': unknown setting "
        "(known: learning_rate, epochs, bf16, lora, extra)"
    )


def test_missing_required_setting():
    with pytest.raises(ConfigError, match="'required': missing required setting"):
        config_from_dict(Needs, {"other": 2})
    assert config_from_dict(Needs, {"required": "4"}) == Needs(required=4)


# --- files ----------------------------------------------------------------------------------------------


def test_load_config_file_and_empty_file(tmp_path):
    path = _yaml(tmp_path, "rate: 0.5\ntrigger:\n  texts: [a, b]\ntrain:\n  lora: {r: 2}\n")
    cfg = load_config(Attack, path)
    assert cfg.rate == 0.5 and cfg.trigger.texts == ["a", "b"] and cfg.train.lora == Lora(r=2)
    assert load_config(Attack, _yaml(tmp_path, "", "empty.yaml")).rate == 0.1
    assert load_config(Attack).name == "badnet"


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = _yaml(tmp_path, "rate: 0.5\ntrain:\n  epochs: 3\n   bad: [\n")
    with pytest.raises(ConfigError) as info:
        load_config(Attack, path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "malformed YAML at line 4" in message and "\n" not in message


def test_a_key_given_twice_is_refused_naming_the_file_the_key_and_both_lines(tmp_path):
    path = _yaml(tmp_path, "rate: 0.5\ntrain:\n  epochs: 3\n  learning_rate: 0.001\n  epochs: 5\n")
    with pytest.raises(ConfigError) as info:
        load_config(Attack, path)
    assert (
        str(info.value) == f"{path}: setting 'epochs': key 'epochs' appears twice (lines 3 and 5); keep one"
    )
    path = _yaml(tmp_path, "rate: 0.5\ntrigger: {texts: [a], texts: [b]}\n", "flow.yaml")
    with pytest.raises(ConfigError, match="'texts' appears twice \\(lines 2 and 2\\)"):
        load_config(Attack, path)
    path = _yaml(tmp_path, "rate: 0.5\ntrain:\n  epochs: 3\ntrigger:\n  epochs_like: 1\n", "ok.yaml")
    with pytest.raises(ConfigError, match="epochs_like"):  # the same name in two mappings is no duplicate
        load_config(Attack, path)
    anchors = "base: &b {epochs: 2}\ntrain:\n  <<: *b\n  learning_rate: 0.01\n"
    assert read_config_mapping(_yaml(tmp_path, anchors, "anchors.yaml"))["train"] == {
        "epochs": 2,
        "learning_rate": 0.01,
    }


def test_error_messages_keep_the_spaces_inside_quoted_values():
    from defuse.errors import DataError, DefuseError

    assert str(DefuseError("value 'a   b' is\n  not allowed")) == "value 'a   b' is not allowed"
    assert (
        str(DataError("f.json", "unknown trigger 'x  y'", row=2)) == "f.json, row 2: unknown trigger 'x  y'"
    )


@pytest.mark.parametrize("kind", ["missing", "dir", "list", "scalar"])
def test_bad_files_name_the_file(tmp_path, kind):
    path = tmp_path / "c.yaml"
    if kind == "dir":
        path.mkdir()
    elif kind == "list":
        path.write_text("- a\n- b\n")
    elif kind == "scalar":
        path.write_text("hello\n")
    with pytest.raises(ConfigError) as info:
        load_config(Attack, path)
    assert str(info.value).startswith(f"{path}: ")


# --- overrides ------------------------------------------------------------------------------------------


def test_overrides_parse_and_coerce():
    base = Attack()
    cfg = apply_overrides(
        base,
        {
            "trigger.kind": "sentence",
            "rate": "0.25",
            "train.lora.r": "4",
            "trigger.texts": "[cf, mn]",
            "name": "123",
            "note": "null",
            "trigger.position": "7",
            "kinds": "[q]",
            "train.extra.foo": "[1, 2]",
        },
    )
    assert cfg.trigger.kind == "sentence" and cfg.rate == 0.25 and cfg.train.lora == Lora(r=4)
    assert cfg.trigger.texts == ["cf", "mn"] and cfg.name == "123" and cfg.note is None
    assert cfg.trigger.position == 7 and cfg.kinds == ("q",) and cfg.train.extra == {"foo": [1, 2]}
    assert base == Attack(), "the original config is not changed"


def test_override_str_field_takes_raw_text_and_dashes_equal_underscores():
    cfg = apply_overrides(Attack(), [("name", "yes"), ("train.learning-rate", "1e-4"), ("train.bf16", "on")])
    assert cfg.name == "yes" and cfg.train.learning_rate == 1e-4 and cfg.train.bf16 is True
    cfg = apply_overrides(
        cfg, [("trigger.position", "end"), ("train.lora", "{r: 3}"), ("train.lora", "null")]
    )
    assert cfg.trigger.position == "end" and cfg.train.lora is None


def test_override_later_pair_wins_and_non_string_values_are_taken_as_parsed():
    cfg = apply_overrides(Attack(), [("seed", "1"), ("seed", "2"), ("rate", 0.5)])
    assert cfg.seed == 2 and cfg.rate == 0.5


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("train.lerning_rate", "1", "setting 'train.lerning_rate': unknown setting (known: learning_rate,"),
        ("rate.x", "1", "setting 'rate.x': 'rate' is not a section"),
        ("seed", "abc", "setting 'seed': expected int, got str 'abc'"),
        ("trigger.kind", "phrase", "setting 'trigger.kind': expected one of 'word', 'sentence'"),
        ("trigger.texts", "cf", "setting 'trigger.texts': expected list of str"),
        ("train..r", "1", "setting 'train..r': malformed setting name"),
    ],
)
def test_bad_overrides_name_key_and_source(key, value, message):
    with pytest.raises(ConfigError) as info:
        apply_overrides(Attack(), {key: value})
    assert str(info.value).startswith("command line: ") and message in str(info.value)


def test_load_config_applies_overrides_after_file_then_validates(tmp_path):
    path = _yaml(tmp_path, "rate: 0.5\ntrain:\n  epochs: 3\n")
    cfg = load_config(Attack, path, overrides=[("rate", "0.2"), ("train.lora.alpha", "8")])
    assert cfg.rate == 0.2 and cfg.train.epochs == 3 and cfg.train.lora == Lora(alpha=8.0)
    assert cfg.calls == ["attack"], "validate() ran once"
    with pytest.raises(ConfigError, match=r"setting 'rate': must be in \[0, 1\], got 2.0"):
        load_config(Attack, path, overrides={"rate": "2"})


def test_validate_is_called_on_nested_with_dotted_key():
    cfg = apply_overrides(Attack(), {"train.lora.r": "0"})
    with pytest.raises(ConfigError) as info:
        validate_config(cfg)
    assert (
        str(info.value) == "setting 'train.lora.r': must be >= 1, got 0" and info.value.key == "train.lora.r"
    )
    assert cfg.calls == [], "children are validated before the parent"


def test_real_train_settings_load_and_validate(tmp_path):
    path = _yaml(tmp_path, "epochs: 3\nlora:\n  r: 4\n  target_modules: [q_proj, v_proj]\n")
    cfg = load_config(TrainSettings, path, overrides=parse_cli_overrides(["--lora.dropout", "0.1"]))
    assert cfg.lora == LoraSettings(r=4, dropout=0.1, target_modules=["q_proj", "v_proj"])
    with pytest.raises(ConfigError, match="setting 'batch_size'"):
        load_config(TrainSettings, path, overrides={"batch_size": "0"})


# --- dumping ----------------------------------------------------------------------------------------------


def test_round_trip_through_yaml(tmp_path):
    cfg = apply_overrides(
        Attack(),
        {"name": "123", "note": "yes", "trigger.position": "4", "train.lora.targets": "[q, 'null']"},
    )
    cfg.calls.clear()
    as_dict = config_to_dict(cfg)
    assert as_dict["kinds"] == ["a", "b"] and as_dict["train"]["lora"]["targets"] == ["q", "null"]
    path = _yaml(tmp_path, dump_config_yaml(cfg), "dumped.yaml")
    loaded = load_config(Attack, path)
    loaded.calls.clear()
    assert loaded == cfg
    assert list(as_dict) == ["name", "seed", "rate", "trigger", "train", "kinds", "note", "calls"]


def test_round_trip_of_defaults_and_train_settings(tmp_path):
    for cls in (Attack, TrainSettings):
        cfg = cls()
        path = _yaml(tmp_path, dump_config_yaml(cfg), f"{cls.__name__}.yaml")
        loaded = load_config(cls, path)
        if cls is Attack:
            loaded.calls.clear()
        assert loaded == cfg


# --- CLI pairs --------------------------------------------------------------------------------------------


def test_parse_cli_overrides():
    args = ["--trigger.kind", "sentence", "--rate=0.1", "--train.lora.r", "4", "--shift", "-1", "--empty="]
    assert parse_cli_overrides(args) == [
        ("trigger.kind", "sentence"),
        ("rate", "0.1"),
        ("train.lora.r", "4"),
        ("shift", "-1"),
        ("empty", ""),
    ]
    assert parse_cli_overrides([]) == []
    assert parse_cli_overrides(["--a=b=c"]) == [("a", "b=c")]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--rate"], "setting 'rate': expects a value"),
        (["--rate", "--seed", "1"], "setting 'rate': expects a value"),
        (["rate", "0.1"], "setting 'rate': unexpected argument"),
        (["--seed", "1", "stray"], "setting 'stray': unexpected argument"),
        (["--", "x"], "setting '--': unexpected argument"),
        (["--=1"], "setting '--=1': empty setting name"),
    ],
)
def test_parse_cli_overrides_errors(args, message):
    with pytest.raises(ConfigError) as info:
        parse_cli_overrides(args)
    assert message in str(info.value)


@dataclass
class Jailbreak:
    """A config whose nested field defaults to something other than its class's own defaults."""

    train: Train = field(default_factory=lambda: Train(learning_rate=5e-5, epochs=5, lora=Lora(r=4)))
    plain: Train = field(default_factory=Train)


def test_a_nested_block_changes_only_the_keys_it_names_of_the_fields_default(tmp_path):
    path = _yaml(tmp_path, "train:\n  learning_rate: 2.0e-4\n  lora: {alpha: 8}\nplain:\n  epochs: 7\n")
    cfg = load_config(Jailbreak, path)
    # the field's own default (epochs 5, LoRA r 4) stays; only the named keys change, also one level down
    assert cfg.train == Train(learning_rate=2e-4, epochs=5, lora=Lora(r=4, alpha=8.0))
    assert cfg.plain == Train(epochs=7)
    # the same as command-line overrides give
    overridden = apply_overrides(Jailbreak(), [("train.learning_rate", "2e-4"), ("train.lora.alpha", "8")])
    assert overridden.train == cfg.train
    # an unknown key inside the block is still refused, naming it
    with pytest.raises(ConfigError, match=r"train\.lr"):
        load_config(Jailbreak, _yaml(tmp_path, "train:\n  lr: 1\n", "bad.yaml"))
