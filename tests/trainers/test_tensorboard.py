"""``report_to=["tensorboard"]``: the event file holds every logged scalar at its step, as the log history has it."""

import pytest
import torch

from tests.trainers.conftest import make_records, make_tokenizer
from shardkit.models import GPT, GPTConfig
from shardkit.trainers import SFTConfig, SFTTrainer

pytest.importorskip("tensorboard")


def test_tensorboard_event_file_holds_the_logged_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tok = make_tokenizer()
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                          num_kv_heads=2, max_position_embeddings=256))
    args = SFTConfig(output_dir=str(tmp_path), learning_rate=1e-2, per_device_train_batch_size=4, max_steps=4,
                     logging_steps=2, eval_steps=4, optim="adamw_torch", report_to=["tensorboard"],
                     disable_tqdm=True, max_length=64, seed=0)
    trainer = SFTTrainer(model, args=args, train_dataset=make_records("prompt_completion", 8),
                         eval_dataset=make_records("prompt_completion", 4, seed=9), processing_class=tok)
    history = trainer.train().log_history

    events = EventAccumulator(str(tmp_path / "runs"))
    events.Reload()
    expected: dict[str, list[tuple[int, float]]] = {}
    for entry in history:
        for key, value in entry.items():
            if key != "step":
                expected.setdefault(key, []).append((entry["step"], float(value)))
    assert {"loss", "grad_norm", "learning_rate", "num_tokens", "mean_token_accuracy", "eval_loss"} <= set(expected)
    assert sorted(events.Tags()["scalars"]) == sorted(expected)
    for key, points in expected.items():
        logged = [(e.step, e.value) for e in events.Scalars(key)]
        assert [s for s, _ in logged] == [s for s, _ in points], key
        for (_, ours), (_, theirs) in zip(logged, points):
            assert ours == pytest.approx(theirs, rel=1e-6), key  # stored as float32
