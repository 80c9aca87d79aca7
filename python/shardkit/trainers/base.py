"""``BaseTrainer``: the training loop every shardkit trainer shares.

One optimizer step = ``gradient_accumulation_steps`` micro-batches. A
subclass turns records into examples (``prepare_examples``), examples into a
batch (``collate``), and a batch into a loss (``compute_loss``). The loss of a
step is normalised over the *whole* accumulated batch: token-level losses
divide by the token count of all its micro-batches (``count_items``),
sequence-level losses average over its micro-batches.

The data order is a pure function of (seed, epoch), so a checkpoint needs only
the step count to resume exactly where it stopped.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from shardkit.data import load_records
from shardkit.data.records import detect_kind
from shardkit.trainers import checkpoint, data_parallel, ema
from shardkit.trainers.config import TrainingConfig
from shardkit.trainers.device import model_device, move_batch, select_device
from shardkit.trainers.device_stats import (
    Throughput,
    estimated_bytes,
    format_device_stats,
)
from shardkit.trainers.metrics import MetricBuffer
from shardkit.trainers.metrics_log import MetricsLog
from shardkit.trainers.setup import prepare_model_and_optimizer


@dataclass
class TrainerState:
    """Progress of a run; ``log_history`` holds the logged dicts, as in transformers.

    ``train_seconds``: wall time of the optimizer steps (not evaluation or
    checkpoints) over every session of a resumed run, so ``num_tokens /
    train_seconds`` is the run's throughput even when the last session
    resumed from the final checkpoint and ran no step.
    """

    global_step: int = 0
    num_tokens: int = 0
    log_history: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0


def check_processing_class(tok) -> None:
    if tok is None:
        raise ValueError("processing_class is required: an HF-style tokenizer (e.g. PreTrainedTokenizerFast)")
    for attr in ("eos_token_id", "eos_token"):
        if getattr(tok, attr, None) is None:
            raise ValueError(f"processing_class has no {attr}; the trainers append EOS to completions")
    if not callable(tok):
        raise TypeError("processing_class must be callable as tokenizer(text=...) -> {'input_ids': ...}")


class BaseTrainer:
    """Shared loop: accumulation, clipping, LR schedule, logging, eval, checkpoints."""

    config_class = TrainingConfig
    dataset_kinds: tuple[str, ...] = ()
    token_level_loss = False  # True: normalise by count_items over the accumulated batch

    def __init__(self, model, args: TrainingConfig | None = None, train_dataset=None, eval_dataset=None,
                 processing_class=None) -> None:
        if args is None:
            args = self.config_class()
        if not isinstance(args, self.config_class):
            raise TypeError(f"args must be a {self.config_class.__name__}, got {type(args).__name__}")
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if train_dataset is None:
            raise ValueError("train_dataset is required")
        check_processing_class(processing_class)
        self.args, self.model, self.processing_class = args, model, processing_class
        pad = getattr(processing_class, "pad_token_id", None)
        self.pad_token_id = processing_class.eos_token_id if pad is None else pad
        torch.manual_seed(args.seed)
        self.train_examples = self.prepare_examples(self._records(train_dataset), "train")
        self.eval_examples = None if eval_dataset is None else self.prepare_examples(self._records(eval_dataset), "eval")
        if not self.train_examples:
            raise ValueError("train_dataset has no usable examples after tokenization")
        if args.parallel is not None:  # refuse what the plan's loops do not run now, not at train()
            from shardkit.parallel import ParallelPlan
            from shardkit.trainers.plan_loop import check_trainer

            check_trainer(self, ParallelPlan.from_dict(args.parallel))
        self.state = TrainerState()
        self.optimizer = self.lr_scheduler = None
        self._metrics = MetricBuffer()

    # -- hooks for subclasses -------------------------------------------------
    def prepare_examples(self, records: list[dict], split: str) -> list[dict]:
        raise NotImplementedError

    def collate(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def compute_loss(self, model, batch: dict[str, torch.Tensor], num_items: int | None) -> torch.Tensor:
        """The loss of one micro-batch (this rank's rows); adds its metrics with ``self.record``."""
        raise NotImplementedError

    def derive_metrics(self, values: dict[str, float]) -> dict[str, float]:
        """Metrics computed from one micro-batch's global values (e.g. a margin); none by default."""
        return {}

    def count_items(self, batches: list[dict[str, torch.Tensor]]) -> int | None:
        return None

    def count_tokens(self, batch: dict[str, torch.Tensor]) -> int:
        if "attention_mask" in batch:
            return int(batch["attention_mask"].sum())
        return int(batch["input_ids"].numel())

    def after_model_prepared(self) -> None:
        """Runs once the model is prepared (sharded when several ranks train), before any resume."""

    def before_train(self) -> None:
        """Runs once the model is prepared, before the first step (e.g. precompute reference log-probs)."""

    def extra_checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        return {}

    def load_extra_checkpoint_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        pass

    # -- data -----------------------------------------------------------------
    def _records(self, dataset) -> list[dict]:
        if isinstance(dataset, list) and dataset and isinstance(dataset[0], dict) \
                and ("input_ids" in dataset[0] or "prompt_ids" in dataset[0]):
            return dataset  # already tokenized
        records = load_records(dataset, self.dataset_kinds)
        self.dataset_kind = detect_kind(records[0], self.dataset_kinds, "dataset")
        return records

    def data_parallel_size(self) -> int:
        """Replicas that see different rows: the plan's ``dp`` under ``args.parallel``, else every rank."""
        if self.args.parallel is not None:
            from shardkit.parallel import ParallelPlan

            return ParallelPlan.from_dict(self.args.parallel).dp
        return data_parallel.data_parallel_world()

    @property
    def batches_per_epoch(self) -> int:
        # One micro-batch spans all data-parallel ranks: world * per-device examples.
        global_bs = self.args.per_device_train_batch_size * data_parallel.data_parallel_world()
        return math.ceil(len(self.train_examples) / global_bs)

    def total_steps(self) -> int:
        if self.args.max_steps > 0:
            return self.args.max_steps
        per_epoch = math.ceil(self.batches_per_epoch / self.args.gradient_accumulation_steps)
        return max(1, math.ceil(self.args.num_train_epochs * per_epoch))

    def epoch_order(self, epoch: int) -> list[int]:
        n = len(self.train_examples)
        if not self.args.shuffle:
            return list(range(n))
        gen = torch.Generator().manual_seed(self.args.seed + epoch)
        return torch.randperm(n, generator=gen).tolist()

    def micro_batch(self, index: int) -> dict[str, torch.Tensor]:
        """The ``index``-th micro-batch of the run (epochs follow each other)."""
        epoch, j = divmod(index, self.batches_per_epoch)
        order = self.epoch_order(epoch)
        bs = self.args.per_device_train_batch_size
        world, rank = data_parallel.data_parallel_world(), data_parallel.rank()
        rows = order[j * bs * world:(j + 1) * bs * world][rank * bs:(rank + 1) * bs]
        if not rows:
            raise ValueError(f"rank {rank} has no examples in micro-batch {index}: the dataset ({len(order)} examples) "
                             f"leaves a last batch smaller than {world} ranks; drop or add examples")
        return self.collate([self.train_examples[i] for i in rows])

    # -- loop -----------------------------------------------------------------
    def record(self, name: str, total: float, count: float = 1.0, if_empty: float | None = None) -> None:
        """Add ``total`` over ``count`` items (examples or tokens) of this rank to metric ``name``.

        The logged value of a micro-batch is the sum of ``total`` over the
        ranks divided by the sum of ``count`` (see ``trainers.metrics``); with
        a global count of 0 it is ``if_empty``, or left out when None.
        """
        self._metrics.add(name, total, count, if_empty)

    def train(self, resume_from_checkpoint: str | None = None) -> TrainerState:
        """Run to ``max_steps`` (or ``num_train_epochs``); returns the state with its ``log_history``."""
        args = self.args
        if args.parallel is not None:  # TP / PP / 4-D: the plan's own loop (trainers/plan_loop.py)
            from shardkit.trainers.plan_loop import train_with_plan

            return train_with_plan(self, resume_from_checkpoint)
        total = self.total_steps()
        self.device = select_device(args.device, self.model)
        estimate = estimated_bytes(self.model, args, data_parallel.data_parallel_world())  # of the unsharded model
        self.model, self.optimizer, self.lr_scheduler = prepare_model_and_optimizer(self.model, args, total,
                                                                                   device=self.device)
        self.device = model_device(self.model) or self.device  # a model sharded by the caller stays where it is
        self.after_model_prepared()
        self.ema = ema.EMA.for_trainer(self)  # args.ema_decay: see shardkit.trainers.ema
        if resume_from_checkpoint is not None:
            checkpoint.load(self, resume_from_checkpoint)
        else:
            self.before_train()
        # Every rank computes the same global log entries; only rank 0 writes them.
        log = MetricsLog(args, total, initial=self.state.global_step, enabled=data_parallel.rank() == 0,
                         history=self.state.log_history)
        params = [p for p in self.model.parameters() if p.requires_grad]
        ga = args.gradient_accumulation_steps
        world = data_parallel.data_parallel_world() if data_parallel.is_sharded(self.model) else 1
        # The step loop never waits for the device: losses, metrics and the grad norm stay device tensors
        # until a log (or checkpoint) reads them all at once (``_flush_steps``).
        self._pending_steps: list[tuple[torch.Tensor, int]] = []  # (this rank's step loss, its tokens)
        self._flushed_losses: list[float] = []
        throughput = Throughput(self.device, estimate)
        grad_norm = None
        try:
            while self.state.global_step < total:
                step_started = time.perf_counter()
                step = self.state.global_step
                batches = [self.micro_batch(step * ga + i) for i in range(ga)]  # host tensors
                num_items = self.count_items(batches) if self.token_level_loss else None
                if num_items is not None:
                    # Normalise by the tokens of all ranks; undo the gradient average over ranks.
                    num_items = int(data_parallel.sum_over_ranks(num_items, self.model))
                step_loss = torch.zeros((), dtype=torch.float64, device=self.device)
                tokens = 0
                for batch in batches:
                    tokens += self.count_tokens(batch)  # counted on the host copy: no device sync
                    loss = self.compute_loss(self.model, self.to_device(batch), num_items)
                    self._metrics.end_micro_batch()
                    loss = loss / len(batches) if num_items is None else loss * world
                    loss.backward()
                    step_loss += loss.detach()
                self._pending_steps.append((step_loss, tokens))
                # The norm is taken before clipping, as transformers logs it.
                grad_norm = data_parallel.clip_and_norm(self.model, params, args.max_grad_norm)
                lr = self.lr_scheduler.get_last_lr()[0]
                self.optimizer.step()
                if self.ema is not None:
                    self.ema.update()
                self.lr_scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.state.global_step += 1
                self.state.train_seconds += time.perf_counter() - step_started
                throughput.add(tokens)
                done = self.state.global_step
                if done % args.logging_steps == 0 or done == total:
                    losses = self._flush_steps(world)
                    entry = {"loss": sum(losses) / len(losses), "grad_norm": float(grad_norm),
                             "learning_rate": lr, **self._pop_metrics(),
                             "num_tokens": self.state.num_tokens,
                             "epoch": done * ga / self.batches_per_epoch, "step": done}
                    self.state.log_history.append(entry)
                    log.write(entry)
                if args.eval_steps and done % args.eval_steps == 0 and self.eval_examples:
                    entry = {**self.evaluate(), "step": done}
                    self.state.log_history.append(entry)
                    log.write(entry)
                if args.save_steps and done % args.save_steps == 0 and done != total:
                    self._flushed_losses += self._flush_steps(world)  # num_tokens must be exact in a checkpoint
                    checkpoint.save(self)
                log.advance()
            self._flush_steps(world)
            checkpoint.save(self)
            if self.ema is not None:
                self.ema.save_model(os.path.join(args.output_dir, "model_ema.safetensors"))
            # Every rank prints its own line (throughput and peak memory differ per rank).
            self.device_stats = throughput.summary(data_parallel.rank())
            if not args.disable_tqdm:
                tqdm.write(format_device_stats(self.device_stats))
        finally:
            log.close()
        return self.state

    def to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``batch`` on the trainer's device (``non_blocking``, from pinned memory for CUDA; see ``trainers.device``)."""
        return move_batch(batch, getattr(self, "device", None) or model_device(self.model) or "cpu")

    def _flush_steps(self, world: int) -> list[float]:
        """The global losses of the steps since the last log; adds their global tokens to ``num_tokens``.

        One device-to-host copy and one all-reduce for all of those steps.
        """
        pending, self._pending_steps = self._pending_steps, []
        if not pending:
            losses, self._flushed_losses = self._flushed_losses, []
            return losses
        losses = torch.stack([loss for loss, _ in pending]).cpu()
        totals = torch.stack([losses, torch.tensor([float(t) for _, t in pending], dtype=torch.float64)], dim=1)
        data_parallel.all_reduce_sum_(totals, self.model)  # (steps, [loss, tokens]) summed over the ranks
        self.state.num_tokens += int(totals[:, 1].sum())  # global, as TRL counts it
        out = self._flushed_losses + (totals[:, 0] / world).tolist()
        self._flushed_losses = []
        return out

    def _pop_metrics(self, prefix: str = "") -> dict[str, float]:
        """Global means of the metrics recorded since the last log (a collective when sharded)."""
        return self._metrics.pop(lambda t: data_parallel.all_reduce_sum_(t, self.model), self.derive_metrics, prefix)

    def evaluate(self) -> dict[str, float]:
        """Mean loss and metrics over the eval batches, prefixed ``eval_``; on the EMA weights with ``ema_decay``."""
        with ema.applied(self):
            return self._evaluate()

    @torch.no_grad()
    def _evaluate(self) -> dict[str, float]:
        """Mean loss and metrics over the eval batches, prefixed ``eval_``.

        An eval batch holds ``per_device_eval_batch_size`` examples per rank,
        split over the ranks; its loss and metrics are global (a collective
        when sharded), so every rank returns the same values.
        """
        if not self.eval_examples:
            raise ValueError("evaluate() needs an eval_dataset")
        was_training = self.model.training
        self.model.eval()
        train_metrics, self._metrics = self._metrics, MetricBuffer()
        world = data_parallel.data_parallel_world() if data_parallel.is_sharded(self.model) else 1
        n, bs = len(self.eval_examples), self.args.per_device_eval_batch_size * world
        for start in range(0, n, bs):
            rows = data_parallel.rank_rows(start, min(n, start + bs), self.model)
            batch = self.collate([self.eval_examples[i] for i in rows])
            items = self.count_items([batch]) if self.token_level_loss else None
            loss = self.compute_loss(self.model, self.to_device(batch), items).detach().double()
            # Token-level losses are means over tokens, the others over examples: weight the rank's mean by them.
            weight = items if self.token_level_loss else len(rows)
            self.record("loss", loss * weight, weight)
            self._metrics.end_micro_batch()
        self.model.train(was_training)
        metrics = self._pop_metrics("eval_")
        self._metrics = train_metrics
        return {"eval_loss": metrics.pop("eval_loss"), **metrics}
