"""What every experiment shares: tokenizer, model, training through the shardkit trainers, and scoring.

Training goes through ``SFTTrainer``/``PretrainTrainer`` on pre-tokenized
records (``input_ids`` + ``labels``, -100 = no loss), so the experiments use
the same loop, schedule, fused AdamW, progress bar and ``metrics.jsonl`` as
``shardkit train``. Accuracy is greedy exact match computed in one forward
pass: an answer counts as right when the argmax at every answer position,
given the prompt and the answer's earlier tokens, is the answer's token. That
is what greedy decoding of ``len(answer)`` tokens would produce, at the cost
of one batched forward instead of a decoding loop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from shardkit import atomic

EOS = "<|endoftext|>"


# ---- tokenizer ----------------------------------------------------------------


def train_tokenizer(texts: Sequence[str], vocab_size: int):
    """A ``TrainerTokenizer`` over a byte-level BPE trained on ``texts`` (``vocab_size`` 257 = bytes only).

    A small vocabulary keeps the embedding (which the tiny models cannot
    afford) small, while merges make every frequent word, and so every
    name part of the synthetic data, one or a few tokens.
    """
    from shardkit.tokenizer import BPETokenizer, TrainerTokenizer

    bpe = BPETokenizer.train_from_iterator(
        list(texts), vocab_size, special_tokens=[EOS], threads=1
    )
    return TrainerTokenizer(bpe)


def save_tokenizer(tokenizer, path: Path) -> None:
    tokenizer.bpe.save(path)


def load_tokenizer(path: Path):
    from shardkit.tokenizer import BPETokenizer, TrainerTokenizer

    # The run wrote this file itself with the default pattern.
    return TrainerTokenizer(BPETokenizer.load(path, trust_pattern=True))


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer.bpe.encode_ordinary(text)


# ---- model --------------------------------------------------------------------


def build_model(model: dict, vocab_size: int, seed: int, device: str | torch.device):
    """A shardkit ``GPT`` with the ``model`` settings (GPTConfig fields), initialised from ``seed``."""
    from shardkit.models import GPT, GPTConfig

    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab_size, **model)).to(device)


def non_embedding_params(model) -> int:
    """Parameters outside the token embedding and the output head (Kaplan et al.'s N)."""
    skip = {id(model.embed_tokens.weight), id(model.lm_head.weight)}
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def save_model(model, path: Path) -> None:
    from safetensors.torch import save_file

    state = {
        k: v.detach().to("cpu").contiguous().clone()
        for k, v in model.state_dict().items()
    }
    atomic.write_atomic(path, lambda tmp: save_file(state, tmp))


def load_weights(model, path: Path):
    from safetensors.torch import load_file

    device = next(model.parameters()).device
    model.load_state_dict({k: v.to(device) for k, v in load_file(path).items()})
    return model


# ---- training -----------------------------------------------------------------


def _device_trainer(base):
    """``base`` (a shardkit trainer class) whose batches follow the model to its device."""

    class DeviceTrainer(base):
        def collate(self, examples):
            batch = super().collate(examples)
            device = next(self.model.parameters()).device
            return {k: v.to(device, non_blocking=True) for k, v in batch.items()}

    DeviceTrainer.__name__ = f"Device{base.__name__}"
    return DeviceTrainer


def lm_record(tokenizer, text: str) -> dict:
    """A document trained on every token, closed by EOS."""
    ids = encode(tokenizer, text) + [tokenizer.eos_token_id]
    return {"input_ids": ids, "labels": list(ids)}


def qa_record(tokenizer, prompt: str, answer: str) -> dict:
    """A question trained only on its answer (and the EOS after it)."""
    p, a = (
        encode(tokenizer, prompt),
        encode(tokenizer, answer) + [tokenizer.eos_token_id],
    )
    return {"input_ids": p + a, "labels": [-100] * len(p) + a}


def train(
    model, tokenizer, records: list[dict], settings: dict, output_dir: Path, seed: int
) -> list[dict]:
    """Train ``model`` in place on pre-tokenized ``records``; returns the trainer's ``log_history``.

    ``settings``: ``steps``, ``batch_size``, ``learning_rate``, ``warmup_steps``
    and optionally ``weight_decay``, ``logging_steps``, ``scheduler``.
    """
    from shardkit.trainers import SFTConfig, SFTTrainer

    steps = int(settings["steps"])
    args = SFTConfig(
        output_dir=str(output_dir),
        learning_rate=float(settings["learning_rate"]),
        per_device_train_batch_size=int(settings["batch_size"]),
        max_steps=steps,
        warmup_steps=int(settings.get("warmup_steps", 0)),
        lr_scheduler_type=settings.get("scheduler", "cosine"),
        weight_decay=float(settings.get("weight_decay", 0.0)),
        adam_beta2=0.98,
        logging_steps=int(settings.get("logging_steps", max(1, steps // 20))),
        max_length=None,
        packing=False,
        seed=seed,
        report_to=["jsonl"],
    )
    trainer = _device_trainer(SFTTrainer)(
        model, args=args, train_dataset=records, processing_class=tokenizer
    )
    history = trainer.train().log_history
    model.eval()
    return [
        {
            k: v
            for k, v in e.items()
            if k in ("step", "loss", "learning_rate", "mean_token_accuracy")
        }
        for e in history
    ]


# ---- scoring ------------------------------------------------------------------


@torch.no_grad()
def exact_match(
    model,
    tokenizer,
    pairs: Sequence[tuple[str, str]],
    batch_size: int = 256,
    desc: str = "eval",
) -> list[bool]:
    """Whether greedy decoding of each ``prompt`` reproduces ``answer`` (see the module doc)."""
    device = next(model.parameters()).device
    model.eval()
    out: list[bool] = []
    for start in tqdm(
        range(0, len(pairs), batch_size),
        desc=desc,
        leave=False,
        disable=len(pairs) <= batch_size,
    ):
        chunk = pairs[start : start + batch_size]
        rows = [(encode(tokenizer, p), encode(tokenizer, a)) for p, a in chunk]
        width = max(len(p) + len(a) for p, a in rows)
        ids = torch.full(
            (len(rows), width), tokenizer.eos_token_id, dtype=torch.long
        )  # (B, T), right-padded
        target = torch.full(
            (len(rows), width), -100, dtype=torch.long
        )  # answer tokens at their positions
        for i, (p, a) in enumerate(rows):
            ids[i, : len(p) + len(a)] = torch.tensor(p + a)
            target[i, len(p) : len(p) + len(a)] = torch.tensor(a)
        ids, target = (
            ids.to(device, non_blocking=True),
            target.to(device, non_blocking=True),
        )
        # Right padding needs no mask: causal attention never lets a real token see a later pad.
        pred = (
            model(ids).logits[:, :-1].argmax(-1)
        )  # (B, T-1): the prediction for position t+1
        wanted = target[:, 1:]
        ok = ((pred == wanted) | (wanted == -100)).all(dim=1)
        out.extend(ok.tolist())
    return out


@torch.no_grad()
def mean_loss(
    model, ids: list[int], seq_len: int, windows: int, batch_size: int = 16
) -> float:
    """Mean next-token loss (nats) over up to ``windows`` non-overlapping windows of ``ids``."""
    device = next(model.parameters()).device
    count = min(windows, (len(ids) - 1) // seq_len)
    if count < 1:
        raise ValueError(f"mean_loss: need more than {seq_len} tokens, got {len(ids)}")
    model.eval()
    data = torch.tensor(ids[: count * seq_len + 1])
    total = 0.0
    for start in range(0, count, batch_size):
        n = min(batch_size, count - start)
        x = torch.stack(
            [
                data[(start + i) * seq_len : (start + i + 1) * seq_len + 1]
                for i in range(n)
            ]
        )  # (B, T+1)
        x = x.to(device, non_blocking=True)
        logits = model(x[:, :-1]).logits.float()  # (B, T, V)
        total += float(
            torch.nn.functional.cross_entropy(
                logits.flatten(0, 1), x[:, 1:].flatten(), reduction="sum"
            )
        )
    return total / (count * seq_len)


def rate(flags: Sequence[bool]) -> float:
    return sum(flags) / len(flags) if flags else math.nan
