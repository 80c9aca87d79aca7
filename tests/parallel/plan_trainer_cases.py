"""DPO and KTO under a ParallelPlan (rank side) and the same runs in one process without a plan (the reference)."""

from __future__ import annotations

import torch

STEPS = 3


def _gpt(vocab_size: int, seed: int = 0):
    from shardkit.models import GPT, GPTConfig

    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                         num_kv_heads=2, max_position_embeddings=128, tie_word_embeddings=False))


def preference_run(kind: str, output_dir: str, batch: int, parallel: dict | None = None, **overrides):
    """``STEPS`` logged steps of DPO or KTO on the toy data; returns the log history."""
    from shardkit.trainers import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer
    from shardkit.trainers.toy import char_tokenizer, toy_records

    tok = char_tokenizer()
    trainer_cls, config_cls, data_kind = {"dpo": (DPOTrainer, DPOConfig, "preference"),
                                          "kto": (KTOTrainer, KTOConfig, "unpaired_preference")}[kind]
    ref_seed = overrides.pop("ref_seed", None)
    resume = overrides.pop("resume", None)
    settings = dict(output_dir=output_dir, learning_rate=1e-2, per_device_train_batch_size=batch, max_steps=STEPS,
                    lr_scheduler_type="constant", logging_steps=1, report_to=[], disable_tqdm=True, max_length=64,
                    seed=0, max_grad_norm=1.0, parallel=parallel)
    settings.update(overrides)
    ref = None if ref_seed is None else _gpt(len(tok), ref_seed)
    trainer = trainer_cls(_gpt(len(tok)), ref_model=ref, args=config_cls(**settings),
                          train_dataset=toy_records(data_kind, 12), processing_class=tok)
    return trainer.train(resume_from_checkpoint=resume).log_history


CASES = [
    # The reference: a copy of the policy, laid out like it. Saved at step 2, which the resume test starts from.
    ("dpo", {"max_steps": STEPS + 1, "save_steps": 2}),
    # Reference values computed before training by another model; KTO's KL term reduced over the replicas.
    ("kto", {"precompute_ref_log_probs": True, "ref_seed": 1}),
]


def world2_tp_cases(rank, world, output_dir):
    """What the world-2 tests of test_parallel_memory and test_parallel_preference need, in one spawn
    (process start-up is most of their time): activation peaks per plan, then the tp=2 trainer runs."""
    import parallel_cases as pc

    return {"activations": pc.activation_peaks(rank, world, pc.ACTIVATION_PLANS),
            "preference": plan_cases(rank, world, output_dir, {"tp": 2}, 4)}


def plan_cases(rank, world, output_dir, plan, batch):
    """The CASES under ``plan`` (rank 0 writes checkpoints to ``output_dir/<i>``), then DPO resumed from step 2."""
    parity = [preference_run(kind, f"{output_dir}/{i}", batch, parallel=plan, **dict(kw))
              for i, (kind, kw) in enumerate(CASES)]
    resumed = preference_run("dpo", f"{output_dir}/resumed", batch, parallel=plan, **dict(CASES[0][1]),
                             resume=f"{output_dir}/0/checkpoint-2")
    return parity, resumed


if __name__ == "__main__":  # the dp_shard=2 x tp=2 check (world 4), too slow for the test run:
    # cd tests/parallel && PYTHONPATH=../../python:. python plan_trainer_cases.py
    import tempfile

    from shardkit.testing import spawn

    out = tempfile.mkdtemp()
    results = spawn(plan_cases, 4, args=(out, {"dp_shard": 2, "tp": 2}, 2), timeout=900)
    for i, (kind, kw) in enumerate(CASES):
        want = preference_run(kind, f"{out}/ref{i}", 4, **dict(kw))
        got = results[0][0][i]
        for key in ("loss", "grad_norm"):
            rel = max(abs(a[key] - b[key]) / abs(b[key]) for a, b in zip(got, want, strict=True))
            print(f"{kind}: {len(want)} steps, max relative difference of {key} {rel:.1e}")
        print(f"{kind}: every rank logs the same: {all(r[0][i] == got for r in results)}")
    whole, resumed = results[0][0][0], results[0][1]
    print("resumed at step 2, steps 3-4 bit for bit:", resumed[2:] == whole[2:])
