"""``shardkit train``: config file + overrides -> a run, and clear errors."""

import json

import pytest

from tests.trainers.conftest import make_records
from shardkit.cli import main
from shardkit.commands.train import parse_overrides


def test_train_sft_from_toml_with_overrides(tmp_path, capsys):
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in make_records("prompt_completion", 8)) + "\n")
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(f'[model]\npreset = "tiny"\n[tokenizer]\nname = "char"\n[data]\ntrain = "{data}"\n'
                   f'[trainer]\nlearning_rate = 0.01\noptim = "adamw_torch"\nmax_steps = 50\n'
                   f'output_dir = "{tmp_path / "out"}"\ndisable_tqdm = true\n')
    assert main(["train", "sft", "--config", str(cfg), "--max_steps", "3", "--logging_steps=1",
                 "--trainer.per_device_train_batch_size", "2"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["step"] == 3 and last["epoch"] == 0.75  # 3 steps of 2 out of 8 examples
    assert (tmp_path / "out" / "checkpoint-3" / "model.safetensors").is_file()
    assert len((tmp_path / "out" / "metrics.jsonl").read_text().splitlines()) == 3


def test_cli_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="expected --key value"):
        parse_overrides(["learning_rate", "1"])
    with pytest.raises(ValueError, match="has no value"):
        parse_overrides(["--learning_rate"])
    cfg = tmp_path / "cfg.toml"
    cfg.write_text('[model]\npreset = "tiny"\n[tokenizer]\nname = "char"\n')
    with pytest.raises(ValueError, match=r"\[data\] needs train"):
        main(["train", "dpo", "--config", str(cfg)])
    with pytest.raises(ValueError, match="section must be"):
        main(["train", "dpo", "--config", str(cfg), "--optimizer.lr", "1"])
