"""``TrainerTokenizer`` against transformers' PreTrainedTokenizerFast loaded from the same tokenizer's HF export."""

import pytest

from shardkit import corpus
from shardkit.data import lm_example, preference_example
from shardkit.speedrun.config import DIGIT_PATTERN
from shardkit.tokenizer import CHAT_SPECIAL_TOKENS, BPETokenizer, TrainerTokenizer

pytestmark = pytest.mark.native
transformers = pytest.importorskip("transformers")

CHAT = [{"role": "user", "content": "993-7=?"}, {"role": "assistant", "content": "986"},
        {"role": "user", "content": "And 12+9, whale?"}, {"role": "assistant", "content": " 21 it is.\n"}]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    text = corpus.open_text("moby_dick").read()[:200_000]
    bpe = BPETokenizer.train_from_iterator([text], 600, pattern=DIGIT_PATTERN, special_tokens=CHAT_SPECIAL_TOKENS)
    ours = TrainerTokenizer(bpe)
    directory = tmp_path_factory.mktemp("hf")
    bpe.save_hf(directory)
    hf = transformers.PreTrainedTokenizerFast.from_pretrained(str(directory))
    hf.eos_token, hf.pad_token = "<|endoftext|>", "<|endoftext|>"
    hf.chat_template = ours.chat_template  # ours, with {% generation %} markers, rendered by transformers
    return ours, hf


def test_text_ids_and_special_tokens_match_hf(pair):
    ours, hf = pair
    for text in ["Call me Ishmael. 1990 was 36 years ago.", "done<|endoftext|>", "  spaced\n\nlines 007"]:
        assert ours(text=text)["input_ids"] == hf(text=text, add_special_tokens=False)["input_ids"]
    assert ours.eos_token_id == hf.eos_token_id and ours.pad_token_id == hf.pad_token_id
    assert len(ours) == len(hf)


def test_digits_are_single_tokens(pair):
    ours, _ = pair
    ids = ours(text="12345")["input_ids"]
    assert [ours.decode([i]) for i in ids] == list("12345")


def test_chat_ids_and_assistant_mask_match_hf(pair):
    ours, hf = pair
    for generation_prompt in (False, True):
        messages = CHAT[:3] if generation_prompt else CHAT
        mine = ours.apply_chat_template(messages, return_dict=True, add_generation_prompt=generation_prompt,
                                        return_assistant_tokens_mask=True)
        theirs = hf.apply_chat_template(messages, tokenize=True, return_dict=True,
                                        add_generation_prompt=generation_prompt, return_assistant_tokens_mask=True)
        assert mine["input_ids"] == list(theirs["input_ids"])
        assert mine["assistant_masks"] == list(theirs["assistant_masks"])
        assert ours.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt) == \
            hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def test_trainer_examples_match_hf(pair):
    ours, hf = pair
    record = {"prompt": CHAT[:1], "completion": CHAT[1:2]}
    assert lm_example(ours, record, "prompt_completion") == lm_example(hf, record, "prompt_completion")
    record = {"messages": CHAT}
    assert lm_example(ours, record, "messages", assistant_only_loss=True) == \
        lm_example(hf, record, "messages", assistant_only_loss=True)
    record = {"prompt": "2+2=", "chosen": "4", "rejected": "5"}
    assert preference_example(ours, record) == preference_example(hf, record)


def test_bad_arguments(pair):
    ours, _ = pair
    with pytest.raises(TypeError, match="tokenizer"):
        TrainerTokenizer("gpt2")
    with pytest.raises(ValueError, match="eos_token"):
        TrainerTokenizer(ours.bpe, eos_token="</s>")
    with pytest.raises(ValueError, match="text"):
        ours()
    with pytest.raises(TypeError, match="text"):
        ours(text=[1, 2])
