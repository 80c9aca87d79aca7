"""A speedrun training stage rerun after it had trained (stopped before its result was written) reports
the throughput of the steps it trained, not 0 tokens/s."""

import pytest
import torch

from shardkit.speedrun import config, corpus_data, files, worker
from shardkit.speedrun.pipeline import Speedrun

pytestmark = [pytest.mark.native]


def test_a_stage_resumed_from_its_final_checkpoint_keeps_its_tokens_per_second(tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)  # one rank, in this process
    threads = torch.get_num_threads()
    settings = config.resolve("micro", {"pretrain": {"max_steps": 4, "logging_steps": 2},
                                        "tokenizer": {"vocab_size": 300}})
    run = Speedrun(tmp_path, settings, preset="micro", nproc=1)
    run._run_tokenizer()
    train_texts, _ = run._texts()
    records = corpus_data.pretrain_records(run.tokenizer, train_texts, settings["data"]["seq_len"])
    directory = files.stage_dir(tmp_path, "pretrain")
    files.write_jsonl(directory / "train.jsonl", records[:64])
    try:
        worker.run_stage("pretrain", tmp_path)
        first = files.read_json(directory / "result.json")
        (directory / "result.json").unlink()  # stopped during evaluation: the stage runs again
        worker.run_stage("pretrain", tmp_path)
        again = files.read_json(directory / "result.json")
    finally:
        torch.set_num_threads(threads)
    assert first["resumed_from"] is None and again["resumed_from"] == "checkpoint-4"
    assert first["tokens_per_second"] > 0
    assert again["tokens_per_second"] == first["tokens_per_second"]
    assert again["num_tokens"] == first["num_tokens"] and again["seconds"] == first["seconds"]
