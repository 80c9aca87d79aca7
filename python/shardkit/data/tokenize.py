"""Turning records into token ids, with the parity rules TRL users rely on.

* Prompt and completion are tokenized *together*; the completion starts where
  the tokens stop matching the tokenized prompt (merges across the boundary and
  chat templates that render a prompt differently alone are handled).
* EOS is appended to plain-text completions (chat templates end turns themselves).
* A BOS is never doubled: if the text already rendered one and the tokenizer
  added another, the extra one is dropped.
* An example whose loss mask comes out empty is an error, not a silent no-op.

The tokenizer is any HF-style ``processing_class``: ``__call__(text=...)``
returning ``input_ids``, ``apply_chat_template``, ``eos_token``/``eos_token_id``
and ``bos_token_id``.
"""

from __future__ import annotations

from typing import Any

from shardkit.data.records import DataFormatError


def _ids(encoded: Any) -> list[int]:
    """input_ids from whatever a tokenizer returned (a BatchEncoding, a dict or a list)."""
    if isinstance(encoded, dict) or hasattr(encoded, "keys"):
        encoded = encoded["input_ids"]
    ids = list(encoded)
    if ids and isinstance(ids[0], list):  # a batch of one
        ids = ids[0]
    return [int(i) for i in ids]


def _drop_double_bos(ids: list[int], tokenizer) -> list[int]:
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is not None and len(ids) >= 2 and ids[0] == bos and ids[1] == bos:
        return ids[1:]
    return ids


def encode_text(tokenizer, text: str) -> list[int]:
    """Token ids of a string, with at most one BOS."""
    return _drop_double_bos(_ids(tokenizer(text=text)), tokenizer)


def encode_chat(tokenizer, messages: list, *, add_generation_prompt: bool = False,
                assistant_mask: bool = False) -> tuple[list[int], list[int] | None]:
    """Token ids of a conversation rendered with the chat template, and its assistant mask if asked."""
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        raise ValueError("conversational data needs a tokenizer with a chat_template")
    if assistant_mask and "generation" not in template:
        raise ValueError("assistant_only_loss needs a chat template that marks assistant turns with "
                         "{% generation %}...{% endgeneration %}; this one does not. Use prompt/completion "
                         "conversations (completion-only loss) or a template with generation markers")
    out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                        add_generation_prompt=add_generation_prompt,
                                        return_assistant_tokens_mask=assistant_mask)
    ids = _ids(out)
    mask = None
    if assistant_mask:
        mask = list(out["assistant_masks"])
        if mask and isinstance(mask[0], list):
            mask = mask[0]
    if len(ids) >= 2 and ids[0] == ids[1] == getattr(tokenizer, "bos_token_id", None):
        ids, mask = ids[1:], (mask[1:] if mask is not None else None)
    return ids, mask


def with_eos(text: str, tokenizer) -> str:
    """``text`` ending with the tokenizer's EOS string (added once)."""
    eos = getattr(tokenizer, "eos_token", None)
    if eos is None:
        raise ValueError("the tokenizer has no eos_token; completions need one appended")
    return text if text.endswith(eos) else text + eos


def common_prefix_length(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def split_prompt_completion(tokenizer, prompt, completion) -> tuple[list[int], list[int]]:
    """(prompt_ids, completion_ids) of a prompt/completion pair, tokenized together.

    Strings get EOS appended to the completion; conversations are rendered with
    the chat template (the prompt with the generation prompt).
    """
    if isinstance(prompt, list):
        prompt_ids, _ = encode_chat(tokenizer, prompt, add_generation_prompt=True)
        full_ids, _ = encode_chat(tokenizer, prompt + completion)
    else:
        prompt_ids = encode_text(tokenizer, prompt)
        full_ids = encode_text(tokenizer, prompt + with_eos(completion, tokenizer))
    n = common_prefix_length(prompt_ids, full_ids)
    return full_ids[:n], full_ids[n:]


def _masked_labels(ids: list[int], mask: list[int], where: str) -> list[int]:
    labels = [t if m else -100 for t, m in zip(ids, mask)]
    if all(label == -100 for label in labels):
        raise DataFormatError(f"{where}: the loss mask is empty (no completion/assistant token to train on)")
    return labels


def lm_example(tokenizer, record: dict, kind: str, *, completion_only_loss: bool = True,
               assistant_only_loss: bool = False, where: str = "record") -> dict[str, list[int]]:
    """``input_ids`` and ``labels`` (-100 = no loss) of one SFT / pretraining record."""
    if kind == "text":
        ids = encode_text(tokenizer, with_eos(record["text"], tokenizer))
        return {"input_ids": ids, "labels": list(ids)}
    if kind == "messages":
        ids, mask = encode_chat(tokenizer, record["messages"], assistant_mask=assistant_only_loss)
        labels = _masked_labels(ids, mask, where) if assistant_only_loss else list(ids)
        return {"input_ids": ids, "labels": labels}
    if kind == "prompt_completion":
        prompt_ids, completion_ids = split_prompt_completion(tokenizer, record["prompt"], record["completion"])
        ids = prompt_ids + completion_ids
        if not completion_only_loss:
            return {"input_ids": ids, "labels": list(ids)}
        mask = [0] * len(prompt_ids) + [1] * len(completion_ids)
        return {"input_ids": ids, "labels": _masked_labels(ids, mask, where)}
    raise ValueError(f"dataset kind {kind!r} is not a language-modelling kind (text, messages, prompt_completion)")


def preference_example(tokenizer, record: dict, where: str = "record") -> dict[str, list[int]]:
    """``prompt_ids``, ``chosen_ids``, ``rejected_ids`` of a preference record (the prompt shared)."""
    prompt = record["prompt"]
    if isinstance(prompt, list):
        prompt_ids, _ = encode_chat(tokenizer, prompt, add_generation_prompt=True)
        chosen_full, _ = encode_chat(tokenizer, prompt + record["chosen"])
        rejected_full, _ = encode_chat(tokenizer, prompt + record["rejected"])
    else:
        prompt_ids = encode_text(tokenizer, prompt)
        chosen_full = encode_text(tokenizer, prompt + with_eos(record["chosen"], tokenizer))
        rejected_full = encode_text(tokenizer, prompt + with_eos(record["rejected"], tokenizer))
    n = min(common_prefix_length(prompt_ids, chosen_full), common_prefix_length(prompt_ids, rejected_full))
    chosen, rejected = chosen_full[n:], rejected_full[n:]
    if not chosen or not rejected:
        raise DataFormatError(f"{where}: chosen or rejected completion is empty after tokenization")
    return {"prompt_ids": chosen_full[:n], "chosen_ids": chosen, "rejected_ids": rejected}


def unpaired_example(tokenizer, record: dict, where: str = "record") -> dict[str, Any]:
    """``prompt_ids``, ``completion_ids``, ``label`` of a KTO record."""
    prompt_ids, completion_ids = split_prompt_completion(tokenizer, record["prompt"], record["completion"])
    if not completion_ids:
        raise DataFormatError(f"{where}: completion is empty after tokenization")
    return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "label": bool(record["label"])}
