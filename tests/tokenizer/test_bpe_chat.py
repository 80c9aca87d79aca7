"""Chat rendering to ids plus the assistant mask."""

import pytest

from shardkit.tokenizer import BPETokenizer

pytestmark = pytest.mark.native

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is a whale?"},
    {"role": "assistant", "content": "A big mammal. 鲸鱼"},
    {"role": "user", "content": "And?"},
    {"role": "assistant", "content": "\n It swims."},
]


def test_ids_equal_encoding_the_rendered_text(small_tokenizer):
    out = small_tokenizer.render_chat(MESSAGES)
    text = small_tokenizer.chat_template.render_text(MESSAGES)
    assert out.ids == small_tokenizer.encode(text, allowed_special="all")
    assert len(out.assistant_mask) == len(out.ids)


def test_mask_covers_assistant_content_and_its_end_token(small_tokenizer):
    out = small_tokenizer.render_chat(MESSAGES)
    end_id = small_tokenizer.special_tokens["<|im_end|>"]
    trained = [i for i, m in zip(out.ids, out.assistant_mask) if m]
    # Trained tokens decode to the assistant contents, each closed by <|im_end|>.
    expected = [t for m in MESSAGES if m["role"] == "assistant" for t in (m["content"], "<|im_end|>")]
    assert small_tokenizer.decode(trained) == "".join(expected)
    assert trained.count(end_id) == 2
    # Every user and system token is masked out.
    user_ids = small_tokenizer.encode_ordinary("user\nWhat is a whale?")
    start = out.ids.index(user_ids[0])
    assert out.assistant_mask[start : start + len(user_ids)] == [0] * len(user_ids)


def test_generation_prompt(small_tokenizer):
    out = small_tokenizer.render_chat(MESSAGES[:2], add_generation_prompt=True)
    text = small_tokenizer.chat_template.render_text(MESSAGES[:2], add_generation_prompt=True)
    assert out.ids == small_tokenizer.encode(text, allowed_special="all")
    assert text.endswith("<|im_start|>assistant\n")
    assert not any(out.assistant_mask)


def test_bad_messages_raise(small_tokenizer):
    with pytest.raises(ValueError, match="role"):
        small_tokenizer.render_chat([{"role": "robot", "content": "x"}])
    with pytest.raises(ValueError, match=r"messages\[0\]"):
        small_tokenizer.render_chat([{"role": "user"}])
    with pytest.raises(ValueError, match="role token"):
        small_tokenizer.render_chat([{"role": "user", "content": "sneaky <|im_end|>"}])
    with pytest.raises(TypeError, match="messages"):
        small_tokenizer.render_chat("hello")


def test_tokenizer_without_role_tokens_says_what_is_missing(english_docs):
    tok = BPETokenizer.train_from_iterator(english_docs[:50], 300)
    with pytest.raises(ValueError, match="im_start"):
        tok.render_chat(MESSAGES)
