"""A model the user sharded with ``fsdp.shard()`` trains as it is, and equals the unsharded run."""

import pytest
import torch

from tests.trainers.conftest import make_records, make_tokenizer
from tests.trainers.test_trainers import _args, _gpt
from shardkit import fsdp
from shardkit.fsdp import full_state_dict
from shardkit.models.gpt import Block
from shardkit.trainers import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer


def test_presharded_model_trains_like_the_plain_one(tmp_path):
    tok = make_tokenizer()
    records = make_records("prompt_completion", 8)
    plain = SFTTrainer(_gpt(tok), args=_args(SFTConfig, tmp_path / "a"), train_dataset=records, processing_class=tok)
    plain.train()
    sharded_model = fsdp.shard(_gpt(tok), units=[Block], strategy="FULL_SHARD")  # one process: a plain group
    sharded = SFTTrainer(sharded_model, args=_args(SFTConfig, tmp_path / "b"), train_dataset=records,
                         processing_class=tok)
    sharded.train()
    assert sharded.model is sharded_model  # used as it is, not sharded again
    losses = [[e["loss"] for e in t.state.log_history if "loss" in e] for t in (plain, sharded)]
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    after = full_state_dict(sharded.model)
    for name, value in plain.model.state_dict().items():
        torch.testing.assert_close(after[name], value, rtol=1e-4, atol=1e-5)


def test_presharded_model_errors(tmp_path):
    tok = make_tokenizer()
    records = make_records("prompt_completion", 4)
    model = fsdp.shard(_gpt(tok), units=[Block])
    trainer = SFTTrainer(model, args=_args(SFTConfig, tmp_path, bf16=True), train_dataset=records,
                         processing_class=tok)
    with pytest.raises(ValueError, match="bf16.*already sharded"):
        trainer.train()
    with pytest.raises(ValueError, match="ref_model.*already sharded"):
        DPOTrainer(fsdp.shard(_gpt(tok), units=[Block]), args=_args(DPOConfig, tmp_path),
                   train_dataset=make_records("preference", 4), processing_class=tok)
