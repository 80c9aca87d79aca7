"""Presets, TOML overrides and their errors."""

import pytest

from shardkit.speedrun import config


def test_presets_resolve_and_build_trainer_configs():
    for name in config.PRESETS:
        settings = config.resolve(name)
        for stage in config.TRAINING_STAGES:
            args = config.trainer_args(settings, stage, "/tmp/x")
            assert args.output_dir == "/tmp/x" and args.seed == settings["run"]["seed"]
            assert args.max_length == settings["data"]["seq_len"]


def test_toml_overrides_apply(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[pretrain]\nmax_steps = 7\nlearning_rate = 1e-2\n[model]\nnum_layers = 3\n[sft]\nmax_length = 40\n")
    settings = config.resolve("micro", config.load_toml(path))
    assert settings["model"]["num_layers"] == 3
    args = config.trainer_args(settings, "pretrain", str(tmp_path))
    assert args.max_steps == 7 and args.learning_rate == 1e-2
    assert config.trainer_args(settings, "sft", str(tmp_path)).max_length == 40
    assert config.resolve("micro")["model"]["num_layers"] == 2  # the preset itself is untouched


@pytest.mark.parametrize("overrides, message", [
    ({"pretrian": {"max_steps": 1}}, r"unknown section \[pretrian\]"),
    ({"pretrain": {"max_step": 1}}, r"unknown keys \['max_step'\] in \[pretrain\]"),
    ({"pretrain": {"output_dir": "x"}}, "unknown keys"),
    ({"model": {"vocab_size": 9}}, "unknown keys"),
    ({"sft": {"compute_dtype": "float16"}}, "compute_dtype"),
    ({"data": {"held_out": 0.9}}, "held_out"),
    ({"arithmetic": {"ops": "*"}}, "ops"),
    ({"run": {"precision": "fp8"}}, "precision"),
    ({"pretrain": 3}, "must be a table"),
])
def test_bad_settings_name_what_is_wrong(overrides, message):
    with pytest.raises(ValueError, match=message):
        config.resolve("tiny", overrides)


def test_unknown_preset_and_bad_toml(tmp_path):
    with pytest.raises(ValueError, match="preset"):
        config.resolve("huge")
    path = tmp_path / "bad.toml"
    path.write_text("[pretrain\n")
    with pytest.raises(ValueError, match="invalid TOML"):
        config.load_toml(path)
