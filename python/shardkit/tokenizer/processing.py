"""``TrainerTokenizer``: a ``BPETokenizer`` with the Hugging Face interface the trainers use.

The trainers take any HF-style ``processing_class``. This view lets a
shardkit tokenizer serve as one without ``transformers`` installed::

    bpe = BPETokenizer.train(files, 4096, special_tokens=CHAT_SPECIAL_TOKENS)
    tok = TrainerTokenizer(bpe)                      # EOS = <|endoftext|>
    SFTTrainer(model, args=SFTConfig(...), train_dataset=records, processing_class=tok)

Text is encoded with every special token allowed (as HF tokenizers parse
them), so the EOS the trainers append to completions becomes its id. Chats
are rendered by the tokenizer's ``ChatTemplate`` (ChatML), which also gives
the assistant mask; ``chat_template`` is the same layout as Jinja, with
``{% generation %}`` markers around what the mask marks, so an HF export
(``save_hf``) and this view agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from shardkit.tokenizer.bpe import BPETokenizer


class TrainerTokenizer:
    """An HF-style tokenizer over a :class:`BPETokenizer` (``__call__``, ``apply_chat_template``, ``decode``).

    Args:
        tokenizer: the BPE tokenizer; ``eos_token`` (and ``pad_token``, if
            given) must be among its special tokens.
        eos_token: appended to completions; also the pad token when
            ``pad_token`` is None (the trainers pad by length, so that is safe).
        pad_token: an optional distinct pad token.
    """

    bos_token = None
    bos_token_id = None

    def __init__(self, tokenizer: BPETokenizer, *, eos_token: str = "<|endoftext|>", pad_token: str | None = None):
        if not isinstance(tokenizer, BPETokenizer):
            raise TypeError(f"tokenizer: expected a shardkit BPETokenizer, got {type(tokenizer).__name__}")
        specials = tokenizer.special_tokens
        for arg, name in (("eos_token", eos_token), ("pad_token", pad_token)):
            if name is not None and name not in specials:
                raise ValueError(f"{arg}: {name!r} is not a special token of the tokenizer; it has {sorted(specials)}")
        self.bpe = tokenizer
        self.eos_token, self.eos_token_id = eos_token, specials[eos_token]
        self.pad_token = pad_token or eos_token
        self.pad_token_id = specials[self.pad_token]

    def __len__(self) -> int:
        return self.bpe.vocab_size

    @property
    def vocab_size(self) -> int:
        return self.bpe.vocab_size

    @property
    def chat_template(self) -> str:
        """The rendering as Jinja, assistant content and its end token inside ``{% generation %}``."""
        t = self.bpe.chat_template
        return (
            "{% for message in messages %}"
            f"{{{{ '{t.start}' + message['role'] + '\\n' }}}}"
            f"{{% if message['role'] == '{t.trained_role}' %}}"
            f"{{% generation %}}{{{{ message['content'] + '{t.end}' }}}}{{% endgeneration %}}"
            f"{{% else %}}{{{{ message['content'] + '{t.end}' }}}}{{% endif %}}"
            "{{ '\\n' }}"
            "{% endfor %}"
            f"{{% if add_generation_prompt %}}{{{{ '{t.start}{t.trained_role}\\n' }}}}{{% endif %}}"
        )

    def encode(self, text: str) -> list[int]:
        """Ids of ``text``, special tokens parsed."""
        if not isinstance(text, str):
            raise TypeError(f"text: expected str, got {type(text).__name__}")
        return self.bpe.encode(text, allowed_special="all")

    def __call__(self, text: str | None = None, **_hf_kwargs) -> dict[str, list[int]]:
        """``{"input_ids": [...]}`` of ``text`` (HF's keyword call; no BOS is added)."""
        if text is None:
            raise ValueError("text: required")
        return {"input_ids": self.encode(text)}

    def apply_chat_template(self, messages: Sequence[dict], *, tokenize: bool = True, return_dict: bool = False,
                            add_generation_prompt: bool = False, return_assistant_tokens_mask: bool = False,
                            **_hf_kwargs):
        """The conversation rendered: a string (``tokenize=False``), ids, or a dict with
        ``input_ids`` and, if asked, ``assistant_masks`` (as transformers returns them)."""
        if not tokenize:
            return self.bpe.chat_template.render_text(messages, add_generation_prompt=add_generation_prompt)
        encoded = self.bpe.render_chat(messages, add_generation_prompt=add_generation_prompt)
        if not return_dict:
            return encoded.ids
        out = {"input_ids": encoded.ids}
        if return_assistant_tokens_mask:
            out["assistant_masks"] = encoded.assistant_mask
        return out

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Text of ``ids``; ``skip_special_tokens`` drops the special tokens."""
        ids = [int(i) for i in ids]
        if skip_special_tokens:
            special = set(self.bpe.special_tokens.values())
            ids = [i for i in ids if i not in special]
        return self.bpe.decode(ids)

    def batch_decode(self, sequences: Iterable[Iterable[int]], skip_special_tokens: bool = False) -> list[str]:
        """``decode`` of every sequence (HF's name; what ``GRPOTrainer`` calls on its completions)."""
        return [self.decode(ids, skip_special_tokens=skip_special_tokens) for ids in sequences]

    def convert_tokens_to_ids(self, token: str) -> int:
        """The id of a special token."""
        specials = self.bpe.special_tokens
        if token not in specials:
            raise ValueError(f"token: {token!r} is not a special token; expected one of {sorted(specials)}")
        return specials[token]

    def __repr__(self) -> str:
        return f"TrainerTokenizer({self.bpe!r}, eos_token={self.eos_token!r})"
