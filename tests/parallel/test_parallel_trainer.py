"""``shardkit train pretrain --nproc 2`` with a [parallel] table logs what one process logs."""

import json

import pytest
from shardkit.cli import main
from shardkit.trainers.toy import toy_records

pytestmark = [pytest.mark.distributed]


def _cfg(tmp_path, parallel: str = "") -> str:
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in toy_records("text", 8)) + "\n")
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(
        f'[model]\npreset = "tiny"\nvocab_size = 64\ntie_word_embeddings = false\n'
        f'[tokenizer]\nname = "char"\n[data]\ntrain = "{data}"\n'
        f'[trainer]\nlearning_rate = 0.5\noptim = "sgd"\nmax_steps = 2\nlogging_steps = 1\npacking = false\n'
        f"shuffle = false\ndisable_tqdm = true\n{parallel}"
    )
    return str(cfg)


def _metrics(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_parallel_table_and_overrides_train_like_one_process(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cfg = _cfg(tmp_path, "[parallel]\nmicrobatches = 1\n")
    # dp_shard=2 (from the override): 2 examples per replica = 4 per step, as one process with 4.
    argv = [
        "train",
        "pretrain",
        "--config",
        cfg,
        "--nproc",
        "2",
        "--parallel.dp_shard=2",
        "--per_device_train_batch_size",
        "2",
        f"--output_dir={tmp_path / 'two'}",
    ]
    assert main(argv) == 0
    assert (
        main(
            [
                "train",
                "pretrain",
                "--config",
                _cfg(tmp_path),
                "--per_device_train_batch_size",
                "4",
                f"--output_dir={tmp_path / 'one'}",
            ]
        )
        == 0
    )
    two, one = (
        _metrics(tmp_path / "two" / "metrics.jsonl"),
        _metrics(tmp_path / "one" / "metrics.jsonl"),
    )
    assert [e["step"] for e in two] == [1, 2]
    for a, b in zip(two, one, strict=True):
        for key in ("loss", "grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-4), key
        assert a["num_tokens"] == b["num_tokens"]
    assert (tmp_path / "two" / "checkpoint-2" / "model.safetensors").is_file()


def test_bad_parallel_table_is_refused_before_training(tmp_path):
    with pytest.raises(ValueError, match=r"unknown keys \['tpp'\]"):
        main(["train", "pretrain", "--config", _cfg(tmp_path), "--parallel.tpp=2"])
    with pytest.raises(ValueError, match="world size is 1"):
        main(
            [
                "train",
                "pretrain",
                "--config",
                _cfg(tmp_path),
                "--parallel.tp=2",
                f"--output_dir={tmp_path / 'x'}",
            ]
        )
