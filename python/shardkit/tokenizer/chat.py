"""Chat rendering for the trainers: messages to ids plus an assistant mask.

The layout is ChatML, which ``transformers`` knows as a Jinja template::

    <|im_start|>{role}\\n{content}<|im_end|>\\n

Ids are those of encoding the rendered string with the role tokens allowed,
so a Hugging Face export with :attr:`ChatTemplate.jinja` gives the same ids.
The mask is 1 on the tokens of assistant contents and on the ``<|im_end|>``
closing them (the model must learn to stop), 0 elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

#: Special tokens the chat template needs; pass them to ``BPETokenizer.train``.
CHAT_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


@dataclass(frozen=True, kw_only=True)
class ChatTemplate:
    """Where the role tokens go. The defaults are ChatML."""

    start: str = "<|im_start|>"  # opens a message, followed by the role and "\n"
    end: str = "<|im_end|>"  # closes a message, followed by "\n"
    roles: tuple[str, ...] = ("system", "user", "assistant")  # accepted roles
    trained_role: str = "assistant"  # the role whose content the mask marks

    @property
    def jinja(self) -> str:
        """The same layout as a Jinja chat template for ``transformers``."""
        return (
            "{% for message in messages %}"
            f"{{{{ '{self.start}' + message['role'] + '\\n' + message['content'] + '{self.end}' + '\\n' }}}}"
            "{% endfor %}"
            f"{{% if add_generation_prompt %}}{{{{ '{self.start}{self.trained_role}\\n' }}}}{{% endif %}}"
        )

    def render_text(self, messages: Sequence[dict], add_generation_prompt: bool = False) -> str:
        """The rendered string (what the Jinja template produces)."""
        parts = [f"{self.start}{m['role']}\n{m['content']}{self.end}\n" for m in _checked(self, messages)]
        if add_generation_prompt:
            parts.append(f"{self.start}{self.trained_role}\n")
        return "".join(parts)


@dataclass
class ChatEncoding:
    """Ids of a rendered conversation and the assistant mask (same length)."""

    ids: list[int] = field(default_factory=list)
    assistant_mask: list[int] = field(default_factory=list)


def _checked(template: ChatTemplate, messages: Sequence[dict]) -> list[dict]:
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise TypeError(f"messages: expected a list of {{'role': ..., 'content': ...}} dicts, got {type(messages).__name__}")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise ValueError(f"messages[{i}]: expected a dict with str 'role' and 'content', got {m!r}")
        if m["role"] not in template.roles:
            raise ValueError(f"messages[{i}]['role']: expected one of {template.roles}, got {m['role']!r}")
        for token in (template.start, template.end):
            if token in m["content"] or token in m["role"]:
                raise ValueError(f"messages[{i}]: contains the role token {token!r}")
    return list(messages)


def render_chat(tokenizer, template: ChatTemplate, messages: Sequence[dict], *, add_generation_prompt=False) -> ChatEncoding:
    """Render ``messages`` with ``template`` to ids and an assistant mask."""
    specials = tokenizer.special_tokens
    missing = [t for t in (template.start, template.end) if t not in specials]
    if missing:
        raise ValueError(
            f"the chat template needs the special tokens {missing}; train with "
            f"special_tokens=shardkit.tokenizer.CHAT_SPECIAL_TOKENS (or add them)"
        )
    start_id, end_id = specials[template.start], specials[template.end]
    out = ChatEncoding()
    newline = tokenizer.encode_ordinary("\n")
    for m in _checked(template, messages):
        header = f"{m['role']}\n".encode()
        ids = tokenizer.encode_ordinary(f"{m['role']}\n{m['content']}")
        trained = m["role"] == template.trained_role
        out.ids.append(start_id)
        out.assistant_mask.append(0)
        # A token is trained when it starts inside the content; a token that
        # spans the header's newline and the content's first bytes is not.
        offset = 0
        for token in ids:
            out.ids.append(token)
            out.assistant_mask.append(int(trained and offset >= len(header)))
            offset += len(tokenizer.token_bytes(token))
        out.ids.append(end_id)
        out.assistant_mask.append(int(trained))
        out.ids.extend(newline)
        out.assistant_mask.extend([0] * len(newline))
    if add_generation_prompt:
        out.ids.append(start_id)
        out.ids.extend(tokenizer.encode_ordinary(f"{template.trained_role}\n"))
        out.assistant_mask.extend([0] * (len(out.ids) - len(out.assistant_mask)))
    return out
