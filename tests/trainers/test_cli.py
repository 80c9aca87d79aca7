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


@pytest.mark.native
@pytest.mark.distributed
@pytest.mark.parametrize("kind,data_kind", [("dpo", "preference"), ("kto", "unpaired_preference")])
def test_train_nproc_2_through_torchrun_logs_what_one_process_logs(tmp_path, monkeypatch, kind, data_kind):
    pytest.importorskip("transformers")
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in make_records(data_kind, 8)) + "\n")
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(f'[model]\npreset = "tiny"\n[tokenizer]\nname = "char"\n[data]\ntrain = "{data}"\n'
                   f'[trainer]\nlearning_rate = 0.001\nmax_steps = 2\nlogging_steps = 1\ndisable_tqdm = true\n')
    # torchrun's children inherit this environment (and so find the same shardkit).
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert main(["train", kind, "--config", str(cfg), "--nproc", "2", "--per_device_train_batch_size", "2",
                 f"--output_dir={tmp_path / 'two'}"]) == 0
    ckpt = tmp_path / "two" / "checkpoint-2"
    assert sorted(p.name for p in ckpt.glob("shard-*")) == ["shard-00000-of-00002.safetensors",
                                                            "shard-00001-of-00002.safetensors"]
    # The same global batches in one process: 4 examples per micro-batch.
    assert main(["train", kind, "--config", str(cfg), "--per_device_train_batch_size", "4",
                 f"--output_dir={tmp_path / 'one'}"]) == 0
    two, one = ([json.loads(line) for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
                for d in ("two", "one"))
    assert len(two) == len(one) == 2  # rank 0 alone writes the metrics
    for a, b in zip(two, one):
        assert list(a) == list(b)
        for key, value in b.items():
            assert a[key] == pytest.approx(value, rel=1e-5, abs=1e-6), (key, a[key], value)
