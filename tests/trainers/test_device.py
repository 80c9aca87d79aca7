"""Device-generic training on CPU: which device a rank takes, every batch field moving there (pinned first
for CUDA), and a step loop that never waits for the device per micro-batch or per step.

No GPU runs here; the CUDA side is exercised through the pure resolution function, a fake CUDA target
whose copies are recorded, and the meta device (a real non-CPU target on which every field must land).
"""

import contextlib

import pytest
import torch
from shardkit.trainers import (
    DPOConfig,
    DPOTrainer,
    KTOConfig,
    KTOTrainer,
    PretrainConfig,
    PretrainTrainer,
    SFTConfig,
    SFTTrainer,
)
from shardkit.trainers import device as dev
from shardkit.trainers.toy import char_tokenizer, toy_records

CUDA = torch.device("cuda", 0)


def _gpt(vocab_size: int):
    from shardkit.models import GPT, GPTConfig

    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2,
                         num_kv_heads=1, max_position_embeddings=64, tie_word_embeddings=True))


def _common(tmp_path, **overrides):
    settings = {"output_dir": str(tmp_path), "per_device_train_batch_size": 2, "max_steps": 2, "logging_steps": 2,
                "report_to": [], "disable_tqdm": True, "max_length": 32, "learning_rate": 1e-3}
    settings.update(overrides)
    return settings


def _trainer(kind: str, tmp_path, **overrides):
    tok = char_tokenizer()
    trainer_cls, config_cls, data = {
        "sft": (SFTTrainer, SFTConfig, "prompt_completion"), "sft-packed": (SFTTrainer, SFTConfig, "prompt_completion"),
        "pretrain": (PretrainTrainer, PretrainConfig, "text"), "dpo": (DPOTrainer, DPOConfig, "preference"),
        "kto": (KTOTrainer, KTOConfig, "unpaired_preference")}[kind]
    if kind == "sft-packed":
        overrides.setdefault("packing", True)
    return trainer_cls(_gpt(len(tok)), args=config_cls(**_common(tmp_path, **overrides)),
                       train_dataset=toy_records(data, 12), processing_class=tok)


# -- which device -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, available, count, local_rank, model_on, expected", [
    ("auto", False, 0, None, None, "cpu"),
    ("auto", False, 0, 3, None, "cpu"),  # torchrun on a CPU host: every rank trains on CPU
    ("auto", True, 8, 3, None, "cuda:3"),  # torchrun on a GPU host: cuda:LOCAL_RANK
    ("auto", True, 2, None, None, "cuda:0"),  # one process
    ("auto", True, 4, None, torch.device("cuda", 2), "cuda:2"),  # a model already on a GPU stays there
    ("auto", True, 4, 1, torch.device("cuda", 2), "cuda:1"),  # ... unless torchrun says which GPU is this rank's
    ("cpu", True, 8, 3, None, "cpu"),
    ("cuda", True, 8, 5, None, "cuda:5"),
    ("cuda", True, 8, None, None, "cuda:0"),
    ("cuda:1", True, 2, 0, None, "cuda:1"),
])
def test_device_resolution(spec, available, count, local_rank, model_on, expected):
    got = dev.resolve_device(spec, cuda_available=available, cuda_count=count, local_rank=local_rank,
                             model_device=model_on)
    assert got == torch.device(expected)


@pytest.mark.parametrize("spec, available, count, local_rank, match", [
    ("cuda", False, 0, None, "CUDA is not available"),
    ("cuda:0", False, 0, 0, "CUDA is not available"),
    ("cuda:4", True, 4, None, "needs GPU 4, but this host has 4"),
    ("auto", True, 2, 2, "LOCAL_RANK=2"),  # more ranks than GPUs
])
def test_device_resolution_refuses_what_cannot_run(spec, available, count, local_rank, match):
    with pytest.raises(ValueError, match=match):
        dev.resolve_device(spec, cuda_available=available, cuda_count=count, local_rank=local_rank)


# ids=repr: a bare "gpu" id would read as the gpu marker's keyword and skip the case without CUDA.
@pytest.mark.parametrize("bad", ["gpu", "cuda:", "cuda:-1", "CPU", "cuda:0 ", 0, None, "mps"], ids=repr)
def test_config_device_is_validated(bad, tmp_path):
    with pytest.raises(ValueError, match=r"TrainingConfig\.device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"):
        SFTConfig(output_dir=str(tmp_path), device=bad)
    assert SFTConfig(output_dir=str(tmp_path)).device == "auto"


def test_select_device_reads_local_rank_and_sets_the_cuda_device(monkeypatch):
    current = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert dev.select_device("auto") == torch.device("cuda", 2)
    assert current == [torch.device("cuda", 2)]
    monkeypatch.setenv("LOCAL_RANK", "x")
    with pytest.raises(ValueError, match="LOCAL_RANK"):
        dev.select_device("auto")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert dev.select_device("auto") == torch.device("cpu") and len(current) == 1


# -- batches to the device -------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind, overrides", [
    ("sft", {}), ("sft-packed", {}), ("pretrain", {}), ("dpo", {}), ("kto", {}),
    ("dpo", {"precompute_ref_log_probs": True}), ("kto", {"precompute_ref_log_probs": True})])
def test_every_field_of_every_collate_moves_to_the_device(kind, overrides, tmp_path):
    trainer = _trainer(kind, tmp_path, **overrides)
    if overrides.get("precompute_ref_log_probs"):
        for e in trainer.train_examples:  # what before_train stores on every example
            e.update({key: -1.5 for key in trainer.reference_keys})
    host = trainer.micro_batch(0)
    if overrides:
        assert set(trainer.reference_keys) <= set(host), "the precomputed fields are not in the batch"
    moved = dev.move_batch(host, torch.device("meta"))  # a real non-CPU target
    assert list(moved) == list(host)
    for key, value in host.items():
        assert moved[key].device.type == "meta", key
        assert (moved[key].dtype, moved[key].shape) == (value.dtype, value.shape), key
    masks = [k for k in host if k.endswith("attention_mask")]
    assert sorted(moved.right_padded) == sorted(masks)
    for key in masks:  # noted on the host copy, so the forward needs no device sync to drop the mask
        assert moved.right_padded[key] == dev.is_right_padded(host[key])


def test_should_pin_only_host_tensors_bound_for_cuda(monkeypatch):
    t = torch.zeros(3)
    assert dev.should_pin(t, CUDA)
    assert not dev.should_pin(t, torch.device("cpu")) and not dev.should_pin(t, torch.device("meta"))
    assert not dev.should_pin(torch.zeros(3, device="meta"), CUDA)
    monkeypatch.setattr(torch.Tensor, "is_pinned", lambda self: True)
    assert not dev.should_pin(t, CUDA)  # pinned already


def test_batches_for_cuda_are_pinned_then_copied_non_blocking(monkeypatch):
    """A fake CUDA target: pin_memory and to() are recorded (neither can run without CUDA)."""
    pinned, copies = [], []

    def fake_pin(self):
        out = self.clone()
        pinned.append(out)
        return out

    def fake_to(self, *args, **kwargs):
        copies.append((self, args, kwargs))
        return self

    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    monkeypatch.setattr(torch.Tensor, "to", fake_to)
    batch = {"input_ids": torch.ones(2, 4, dtype=torch.long), "attention_mask": torch.ones(2, 4, dtype=torch.long),
             "label": torch.tensor([True, False]), "note": "not a tensor"}
    out = dev.move_batch(batch, CUDA)
    assert len(pinned) == 3 and [c[0] for c in copies] == pinned  # each field copied from its pinned copy
    assert all(args == (CUDA,) and kwargs == {"non_blocking": True} for _, args, kwargs in copies)
    assert out["note"] == "not a tensor"
    pinned.clear(), copies.clear()
    dev.move_batch(batch, torch.device("cpu"))
    assert not pinned and len(copies) == 3 and all(c[2] == {"non_blocking": True} for c in copies)


# -- no host sync in the step loop ---------------------------------------------------------------------------
SYNCS = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__")


@contextlib.contextmanager
def count_syncs(monkeypatch, trainer):
    """Counts every tensor-to-Python conversion (what forces a sync on a device) during the run, except in the
    functions that read the host copy of a batch before it moves (collate, counting tokens, the mask check)."""
    calls = {"n": 0, "paused": 0}
    for name in SYNCS:
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _original=original, **k):
            if not calls["paused"]:
                calls["n"] += 1
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)

    def paused(fn):
        def run(*a, **k):
            calls["paused"] += 1
            try:
                return fn(*a, **k)
            finally:
                calls["paused"] -= 1
        return run

    for name in ("micro_batch", "count_items", "count_tokens"):
        monkeypatch.setattr(trainer, name, paused(getattr(trainer, name)))
    monkeypatch.setattr(dev, "is_right_padded", paused(dev.is_right_padded))
    yield calls


@pytest.mark.parametrize("kind", ["sft", "dpo", "kto"])
def test_the_step_loop_does_not_sync_per_micro_batch_or_per_step(kind, tmp_path, monkeypatch):
    """Conversions do not grow with micro-batches (1 vs 3 per step) nor with steps between two logs (2 vs 4)."""
    counts = {}
    for ga, steps in ((1, 2), (3, 2), (1, 4)):
        trainer = _trainer(kind, tmp_path / f"{ga}-{steps}", gradient_accumulation_steps=ga, max_steps=steps,
                           logging_steps=steps, optim="adamw_fused")
        with monkeypatch.context() as m, count_syncs(m, trainer) as calls:
            history = trainer.train().log_history
        counts[ga, steps] = calls["n"]
        assert [e["step"] for e in history] == [steps] and history[-1]["num_tokens"] > 0
    assert counts[1, 2] == counts[3, 2] == counts[1, 4], counts


def test_a_per_micro_batch_sync_would_be_caught(tmp_path, monkeypatch):
    """The counter sees a float() of the loss, the sync the loop used to make per micro-batch."""
    counts = []
    for ga in (1, 3):
        trainer = _trainer("sft", tmp_path / str(ga), gradient_accumulation_steps=ga)
        compute = trainer.compute_loss

        def syncing(model, batch, items, _compute=compute):
            loss = _compute(model, batch, items)
            float(loss.detach())
            return loss

        trainer.compute_loss = syncing
        with monkeypatch.context() as m, count_syncs(m, trainer) as calls:
            trainer.train()
        counts.append(calls["n"])
    assert counts[1] == counts[0] + 2 * 2  # two more micro-batches in each of the two steps


def test_device_stats_say_what_they_measure(tmp_path):
    trainer = _trainer("sft", tmp_path)
    trainer.train()
    stats = trainer.device_stats
    assert stats["device"] == "cpu" and stats["rank"] == 0
    assert stats["tokens"] == trainer.state.num_tokens and stats["tokens_per_second"] > 0
    assert stats["peak_memory_kind"].startswith("host peak RSS") and stats["peak_memory_bytes"] > 0
    assert stats["estimated_bytes"] > 0  # the estimator knows our GPT's shape


@pytest.mark.parametrize("engine, device, expected", [
    ("auto", "cpu", "shardkit"), ("auto", "cuda:1", "fsdp2"), ("fsdp2", "cpu", "fsdp2"), ("shardkit", "cpu", "shardkit"),
    ("fsdp2", "cuda:0", "fsdp2"), ("shardkit", "cuda:0", "shardkit")])
def test_engine_resolution(engine, device, expected):
    from shardkit.trainers.fsdp2_engine import resolve_engine

    assert resolve_engine(engine, torch.device(device)) == expected


def test_unknown_engines_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"SFTConfig\.engine must be .auto., .shardkit. or .fsdp2."):
        SFTConfig(output_dir=str(tmp_path), engine="ddp")
    assert SFTConfig(output_dir=str(tmp_path)).engine == "auto"
