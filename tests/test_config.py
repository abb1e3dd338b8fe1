"""Config: defaults, YAML + flag precedence, one-line errors for unknown keys and bad values."""

from __future__ import annotations

import pytest

from edgekd.config import build_config, dump_config, parse_set_option
from edgekd.errors import EdgekdError


def test_defaults_follow_repdistiller():
    cfg = build_config()
    assert cfg.distill.ce_weight == 0.1
    assert [(m.name, m.weight, m.params["T"]) for m in cfg.distill.methods] == [("kd", 0.9, 4.0)]
    assert cfg.distill.lr == 0.05 and cfg.distill.weight_decay == 5e-4


def test_yaml_then_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("distill:\n  epochs: 7\n  lr: 0.2\nseed: 3\n")
    cfg = build_config(path, {"distill.epochs": 2, "bench.runs": 80})
    assert cfg.distill.epochs == 2  # flag wins
    assert cfg.distill.lr == 0.2  # yaml kept
    assert cfg.seed == 3 and cfg.bench.runs == 80


def test_unknown_key_names_field_and_allowed(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("distill:\n  lrr: 0.1\n")
    with pytest.raises(EdgekdError) as err:
        build_config(path)
    msg = str(err.value)
    assert "distill.lrr" in msg and "lr" in msg.split("allowed keys here:")[1]
    assert "\n" not in msg


def test_bad_literal_lists_choices():
    with pytest.raises(EdgekdError, match=r"distill.optimizer: 'adam' is not allowed; choose one of 'sgd' or 'adamw'"):
        build_config(None, {"distill.optimizer": "adam"})


def test_unknown_method_lists_methods():
    with pytest.raises(EdgekdError, match=r"unknown method 'kdd'; choose one of .*\bkd\b"):
        build_config(None, {"distill.methods": [{"name": "kdd"}]})


def test_malformed_yaml_one_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("distill: [epochs: 3\n")
    with pytest.raises(EdgekdError, match="not valid YAML at line") as err:
        build_config(path)
    assert "\n" not in str(err.value)


def test_set_option_parses_yaml_values():
    assert parse_set_option("distill.lr=0.1") == ("distill.lr", 0.1)
    assert parse_set_option("distill.baseline=true") == ("distill.baseline", True)
    assert parse_set_option("student.arch=tv:resnet18") == ("student.arch", "tv:resnet18")
    with pytest.raises(EdgekdError, match="KEY=VALUE"):
        parse_set_option("distill.lr")


def test_dump_round_trip(tmp_path):
    cfg = build_config(None, {"distill.epochs": 5, "target": "t4"})
    path = tmp_path / "config.yaml"
    path.write_text(dump_config(cfg))
    assert build_config(path) == cfg
