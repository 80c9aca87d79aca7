"""``PreferenceTrainer``: what DPO and KTO share, the frozen reference model.

The reference is ``ref_model`` or, without one, a frozen copy of the initial
policy. When several ranks train it is sharded like the policy (FULL_SHARD,
frozen groups, one unit per block): it only runs forwards under
``torch.no_grad()``, after which every unit is freed again, so each rank holds
about 1/N of its parameters. With ``precompute_ref_log_probs`` its
log-probs are computed once before training, the rows of each batch split
over the ranks, and no reference model is held during training.
"""

from __future__ import annotations

import gc

import torch

from shardkit.trainers import data_parallel
from shardkit.trainers.base import BaseTrainer
from shardkit.trainers.device import place_model
from shardkit.trainers.setup import reference_model, shard_for_data_parallel


class PreferenceTrainer(BaseTrainer):
    """A trainer with a reference model; subclasses name the per-example reference values."""

    # The per-example fields ``reference_values`` fills, in order (e.g. ref_chosen_logps).
    reference_keys: tuple[str, ...] = ()

    def __init__(self, model, ref_model=None, args=None, train_dataset=None, eval_dataset=None,
                 processing_class=None) -> None:
        super().__init__(model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                         processing_class=processing_class)
        self.ref_model = reference_model(model, ref_model, self.args)

    def reference_values(self, ref: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """One (B,) tensor per ``reference_keys`` field: the reference's values on the examples of ``batch``."""
        raise NotImplementedError

    def after_model_prepared(self) -> None:
        if self.ref_model is not None:
            self.ref_model = place_model(self.ref_model, self.device)  # the policy's device
        if self.ref_model is not None and data_parallel.data_parallel_world() > 1:
            self.ref_model = shard_for_data_parallel(self.ref_model, self.args.engine, self.device)

    def before_train(self) -> None:
        if self.args.precompute_ref_log_probs:
            self._precompute_reference()
            self.drop_reference()  # here no local name refers to the reference any more, so it is freed

    @torch.no_grad()
    def _precompute_reference(self) -> None:
        # The reference is the given ref_model or, without one, the policy before its first update.
        ref = self.ref_model if self.ref_model is not None else self.model
        was_training = ref.training
        ref.eval()
        for examples in (self.train_examples, self.eval_examples or []):
            self._precompute(ref, examples)
        ref.train(was_training)

    def _precompute(self, ref: torch.nn.Module, examples: list[dict]) -> None:
        """Store ``reference_values`` on every example; each rank computes its rows of each global batch."""
        world = data_parallel.data_parallel_world() if data_parallel.is_sharded(ref) else 1
        n, bs = len(examples), self.args.per_device_train_batch_size * world
        values = torch.zeros(n, len(self.reference_keys), dtype=torch.float64)  # (n, keys)
        counts = torch.zeros(n, 1, dtype=torch.float64)  # ranks that computed each row
        for start in range(0, n, bs):
            rows = data_parallel.rank_rows(start, min(n, start + bs), ref)
            out = self.reference_values(ref, self.to_device(self.collate([examples[i] for i in rows])))
            values[rows.start:rows.stop] += torch.stack(out, dim=-1).double().cpu()
            counts[rows.start:rows.stop] += 1
        data_parallel.all_reduce_sum_(values, ref)
        data_parallel.all_reduce_sum_(counts, ref)
        for example, row in zip(examples, (values / counts).tolist()):
            example.update(zip(self.reference_keys, row))

    def drop_reference(self) -> None:
        """Release the reference model: precomputed values replace it for the rest of the run."""
        self.ref_model = None
        gc.collect()  # a sharded model is a reference cycle (its hooks refer to it): collect it now

    def extra_checkpoint_tensors(self):
        """The precomputed reference values of both splits: a resumed run needs no reference model."""
        if not self.args.precompute_ref_log_probs:
            return {}
        out = {}
        for split in ("train", "eval"):
            examples = getattr(self, f"{split}_examples") or []
            for key in self.reference_keys:
                if examples:
                    out[f"{split}/{key}"] = torch.tensor([e[key] for e in examples], dtype=torch.float64)
        return out

    def load_extra_checkpoint_tensors(self, tensors):
        if not self.args.precompute_ref_log_probs:
            return
        for name, values in tensors.items():
            split, key = name.split("/", 1)
            examples = getattr(self, f"{split}_examples") or []
            if len(examples) != len(values):
                raise ValueError(f"checkpoint has {len(values)} {split} values of {key}, "
                                 f"the dataset {len(examples)} examples")
            for e, v in zip(examples, values.tolist()):
                e[key] = v
        self.drop_reference()
