"""``ema_decay``: the trainer's EMA against ``torch.optim.swa_utils.AveragedModel`` fed the checkpointed weights."""

import pytest
import torch
from safetensors.torch import load_model
from shardkit.trainers import SFTConfig, SFTTrainer
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from tests.trainers.conftest import make_gpt, make_records, make_tokenizer

DECAY = 0.8


def _gpt(tok, seed=0):
    return make_gpt(len(tok), seed)


def _trainer(tok, out, **kw):
    args = SFTConfig(
        output_dir=str(out),
        learning_rate=1e-2,
        per_device_train_batch_size=4,
        max_steps=5,
        lr_scheduler_type="constant",
        logging_steps=1,
        optim="adamw_torch",
        report_to=[],
        disable_tqdm=True,
        max_length=64,
        seed=0,
        **kw,
    )
    data = make_records("prompt_completion", 12)
    return SFTTrainer(_gpt(tok), args=args, train_dataset=data, eval_dataset=data[:4], processing_class=tok)


def test_ema_matches_averaged_model_and_is_used_for_eval(tmp_path):
    tok = make_tokenizer()
    # Reference: the same run without EMA, one checkpoint per step, fed to torch's AveragedModel in order.
    plain = _trainer(tok, tmp_path / "plain", save_steps=1)
    plain.train()
    model = _gpt(tok)
    reference = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(DECAY), use_buffers=False)
    for step in range(1, 6):
        load_model(model, str(tmp_path / "plain" / f"checkpoint-{step}" / "model.safetensors"))
        reference.update_parameters(model)

    trainer = _trainer(tok, tmp_path / "ema", ema_decay=DECAY)
    trainer.train()
    ema_model = _gpt(tok, seed=1)
    load_model(ema_model, str(tmp_path / "ema" / "model_ema.safetensors"))
    for (name, p), q in zip(ema_model.named_parameters(), reference.module.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-6, msg=name)
    # Training is untouched by the EMA: the trained weights equal the plain run's.
    for p, q in zip(trainer.model.parameters(), plain.model.parameters()):
        assert torch.equal(p, q)
    moved = max(
        float((p.detach() - q.detach()).abs().max()) for p, q in zip(ema_model.parameters(), trainer.model.parameters())
    )
    assert moved > 1e-4, "the EMA equals the last weights: the test could not tell them apart"

    # evaluate() runs on the EMA weights and leaves the trained ones in place afterwards.
    with_ema = trainer.evaluate()["eval_loss"]
    trained = [p.detach().clone() for p in trainer.model.parameters()]
    assert all(torch.equal(p, q) for p, q in zip(trainer.model.parameters(), trained))
    trainer.ema, saved_ema = None, trainer.ema
    without = trainer.evaluate()["eval_loss"]
    with saved_ema.applied():
        by_hand = trainer.evaluate()["eval_loss"]
    assert by_hand == pytest.approx(with_ema, abs=1e-7) and abs(with_ema - without) > 1e-6


def test_ema_resumes_exactly(tmp_path):
    tok = make_tokenizer()
    full = _trainer(tok, tmp_path / "a", ema_decay=DECAY, save_steps=2)
    full.train()
    resumed = _trainer(tok, tmp_path / "b", ema_decay=DECAY)
    resumed.train(resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-2"))
    for s, t in zip(full.ema.shadow, resumed.ema.shadow):
        assert torch.equal(s, t)
    assert resumed.ema.num_updates == 5
    without = _trainer(tok, tmp_path / "c", ema_decay=DECAY)
    plain_ckpt = _trainer(tok, tmp_path / "d", save_steps=2)
    plain_ckpt.train()
    with pytest.raises(FileNotFoundError, match="ema.safetensors"):
        without.train(resume_from_checkpoint=str(tmp_path / "d" / "checkpoint-2"))


def test_ema_decay_is_validated(tmp_path):
    with pytest.raises(ValueError, match="ema_decay"):
        SFTConfig(output_dir=str(tmp_path), ema_decay=1.0)
    with pytest.raises(ValueError, match="ema_decay"):
        SFTConfig(output_dir=str(tmp_path), ema_decay=-0.1)
