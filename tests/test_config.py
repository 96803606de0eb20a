"""Config parsing: round trip, strict keys and types, registry-backed validation."""
from pathlib import Path

import pytest

from robustq_deploy.config import RunConfig, config_from_json, from_dict, replace, to_dict
from robustq_deploy.validation import load_config, validate
from robustq_deploy.errors import ConfigError
from robustq_deploy.pipeline import demo_config


def test_demo_config_round_trips():
    cfg = demo_config()
    assert cfg.data.dataset == "digits" and cfg.train.method == "pgd-at"
    assert config_from_json(to_dict(cfg)) == cfg


def test_unknown_key_names_section_and_key(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[train]\nepochs = 2\nepohcs = 3\n")
    with pytest.raises(ConfigError, match=r"unknown key 'epohcs' in \[train\]"):
        load_config(p)


@pytest.mark.parametrize("text, match", [
    ("[train]\nepochs = 'two'\n", "train.epochs: expected an integer"),
    ("[train]\nmethod = 'sgd-magic'\n", "train.method: unknown value"),
    ("[quant]\nweight_bits = 3\n", "quant.weight_bits: unsupported bit width 3"),
    ("[data]\ndataset = 'imagenet'\n", "data.dataset: unknown value 'imagenet'"),
    ("[compile]\ntarget = 'riscv'\n", "compile.target: unknown target 'riscv'"),
    ("[train.params]\nclean_weight = 'x'\n", "train.params.clean_weight: expected a number"),
    ("[train.params]\nbogus = 1\n", "unknown key 'bogus' in \\[train.params\\]"),
    ("version = 7\n", "config version 7"),
    ("[train\n", "not valid TOML"),
])
def test_bad_values_give_one_line_errors(tmp_path, text, match):
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match) as exc:
        load_config(p)
    assert "\n" not in str(exc.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.toml")


def test_nested_replace_and_layer_overrides():
    cfg = replace(RunConfig(), **{"train.epochs": 3, "quant.weight_bits": 4})
    assert cfg.train.epochs == 3 and cfg.quant.weight_bits == 4
    cfg = from_dict(RunConfig, {"quant": {"layers": {"conv1": {"weight_bits": 8}}, "weight_bits": "ternary"}})
    validate(cfg)
    assert cfg.quant.layers["conv1"].weight_bits == 8


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.toml")),
                         ids=lambda p: p.name)
def test_every_example_config_validates(path):
    cfg = load_config(path)
    assert cfg.name == path.stem
