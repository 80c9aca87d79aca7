"""shardkit.data: formats, processing rules, packing, batching and clear errors."""

import json

import pytest
import torch

from tests.trainers.conftest import make_records, make_tokenizer
from shardkit.data import (DataFormatError, collate_lm, collate_packed, collate_preference, lm_example,
                           load_records, pack_best_fit, preference_example, split_prompt_completion)


def _text(tok, ids):
    return "".join(tok.convert_ids_to_tokens(ids))  # the char-level tokenizer has no decoder


def _write_jsonl(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_malformed_jsonl_names_file_line_and_field(tmp_path):
    path = _write_jsonl(tmp_path / "prefs.jsonl", [
        {"prompt": "a", "chosen": "b", "rejected": "c"},
        "",
        {"prompt": "a", "chosen": "b"},
    ])
    with pytest.raises(DataFormatError, match=r"prefs\.jsonl line 3: missing field 'rejected'"):
        load_records(path, "preference")
    bad_json = _write_jsonl(tmp_path / "bad.jsonl", [{"text": "ok"}, "{not json"])
    with pytest.raises(DataFormatError, match=r"bad\.jsonl line 2: invalid JSON"):
        load_records(bad_json, "text")
    wrong_type = _write_jsonl(tmp_path / "kto.jsonl", [{"prompt": "a", "completion": "b", "label": "yes"}])
    with pytest.raises(DataFormatError, match=r"kto\.jsonl line 1: field 'label' must be true or false"):
        load_records(wrong_type, "unpaired_preference")
    bad_msgs = _write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user"}]}])
    with pytest.raises(DataFormatError, match=r"chat\.jsonl line 1: field 'messages' message 0"):
        load_records(bad_msgs, "messages")


def test_jsonl_that_is_not_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"text": "fine"}\n\n{"text": "caf\xe9"}\n')
    with pytest.raises(DataFormatError, match=r"latin1\.jsonl line 3: not UTF-8 \(byte 0xe9 at byte column 14\)"):
        load_records(path, "text")


@pytest.mark.parametrize("content", [5, None, ["part"], {"text": "hi"}])
def test_message_content_that_is_not_a_string_names_file_and_line(tmp_path, content):
    path = _write_jsonl(tmp_path / "chat.jsonl", [
        {"messages": [{"role": "user", "content": "hi"}]},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": content}]},
    ])
    with pytest.raises(DataFormatError, match=r"chat\.jsonl line 2: field 'messages' message 1 'content' must be "
                                              r"a string, got"):
        load_records(path, "messages")
    # Conversations inside prompt/completion records are checked the same way.
    pc = _write_jsonl(tmp_path / "pc.jsonl", [{"prompt": [{"role": "user", "content": "q"}],
                                                "completion": [{"role": "assistant", "content": content}]}])
    with pytest.raises(DataFormatError, match=r"pc\.jsonl line 1: field 'completion' message 0 'content'"):
        load_records(pc, "prompt_completion")
    bad_role = _write_jsonl(tmp_path / "role.jsonl", [{"messages": [{"role": 1, "content": "x"}]}])
    with pytest.raises(DataFormatError, match=r"role\.jsonl line 1: .* 'role' must be a string, got int"):
        load_records(bad_role, "messages")


def test_deeply_nested_jsonl_record_names_file_and_line(tmp_path):
    path = _write_jsonl(tmp_path / "deep.jsonl", [{"text": "ok"}, "[" * 100_000 + "]" * 100_000])
    with pytest.raises(DataFormatError, match=r"deep\.jsonl line 2: JSON nested too deeply"):
        load_records(path, "text")


def test_hf_datasets_and_lists_load_and_errors_name_the_row():
    datasets = pytest.importorskip("datasets")
    rows = make_records("prompt_completion", 3)
    assert load_records(datasets.Dataset.from_list(rows), "prompt_completion") == rows
    with pytest.raises(DataFormatError, match=r"list row 1: missing field 'completion'"):
        load_records([rows[0], {"prompt": "x"}], "prompt_completion")


def test_completion_starts_where_tokens_diverge_and_ends_with_eos():
    tok = make_tokenizer()
    prompt_ids, completion_ids = split_prompt_completion(tok, "ab?", " cd")
    assert _text(tok, prompt_ids) + _text(tok, completion_ids) == "ab? cd<eos>"
    assert completion_ids[-1] == tok.eos_token_id
    assert completion_ids.count(tok.eos_token_id) == 1  # already-present EOS is not doubled
    _, again = split_prompt_completion(tok, "ab?", " cd<eos>")
    assert again == completion_ids


def test_chat_template_completion_and_assistant_only_mask():
    tok = make_tokenizer()
    conv = make_records("prompt_completion", 1, conversational=True)[0]
    ex = lm_example(tok, conv, "prompt_completion")
    trained = [t for t, label in zip(ex["input_ids"], ex["labels"]) if label != -100]
    assert _text(tok, trained) == conv["completion"][0]["content"] + "<eos>"
    msgs = make_records("messages", 1, conversational=True)[0]
    ex = lm_example(tok, msgs, "messages", assistant_only_loss=True)
    trained = [t for t, label in zip(ex["input_ids"], ex["labels"]) if label != -100]
    assert _text(tok, trained) == msgs["messages"][-1]["content"] + "<eos>"


def test_empty_loss_mask_is_an_error():
    tok = make_tokenizer()
    with pytest.raises(DataFormatError, match="example 7: the loss mask is empty"):
        lm_example(tok, {"messages": [{"role": "user", "content": "hi"}]}, "messages", assistant_only_loss=True,
                   where="train example 7")


def test_assistant_only_loss_without_generation_markers_is_an_error():
    tok = make_tokenizer()
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}<eos>{% endfor %}"
    with pytest.raises(ValueError, match="generation"):
        lm_example(tok, make_records("messages", 1, conversational=True)[0], "messages", assistant_only_loss=True)


def test_never_a_second_bos():
    from tokenizers import processors

    tok = make_tokenizer()
    bos = tok.bos_token_id
    tok._tokenizer.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", bos)])
    prompt_ids, completion_ids = split_prompt_completion(tok, "<bos>ab?", " c")
    assert prompt_ids[:2] == [bos, tok.convert_tokens_to_ids("a")]
    prompt_ids, _ = split_prompt_completion(tok, "ab?", " c")
    assert prompt_ids[0] == bos and prompt_ids[1] != bos


def test_padding_is_by_length_so_eos_equal_to_pad_still_trains():
    tok = make_tokenizer(pad_is_eos=True)
    a = lm_example(tok, {"prompt": "ab?", "completion": " c"}, "prompt_completion")
    b = lm_example(tok, {"prompt": "abcdef?", "completion": " cde"}, "prompt_completion")
    batch = collate_lm([a, b], tok.pad_token_id)
    eos_pos = len(a["input_ids"]) - 1
    assert batch["input_ids"][0, eos_pos] == tok.pad_token_id == tok.eos_token_id
    assert batch["labels"][0, eos_pos] == tok.eos_token_id  # the real EOS is trained
    assert batch["attention_mask"][0, eos_pos] == 1
    assert (batch["labels"][0, eos_pos + 1:] == -100).all() and (batch["attention_mask"][0, eos_pos + 1:] == 0).all()


def test_preference_batch_is_chosen_rows_then_rejected_rows():
    tok = make_tokenizer()
    exs = [preference_example(tok, r) for r in make_records("preference", 3)]
    batch = collate_preference(exs, tok.pad_token_id, max_length=None)
    assert batch["input_ids"].shape[0] == 6
    for i, e in enumerate(exs):
        n = len(e["prompt_ids"]) + len(e["chosen_ids"])
        assert batch["input_ids"][i, :n].tolist() == e["prompt_ids"] + e["chosen_ids"]
        m = len(e["prompt_ids"]) + len(e["rejected_ids"])
        assert batch["input_ids"][3 + i, :m].tolist() == e["prompt_ids"] + e["rejected_ids"]
        assert batch["completion_mask"][3 + i].sum() == len(e["rejected_ids"])


def test_best_fit_packing_matches_trl_pack_dataset():
    trl_data = pytest.importorskip("trl.data_utils")
    datasets = pytest.importorskip("datasets")
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 40, (60,), generator=gen).tolist()
    examples, start = [], 0
    for n in lengths:
        examples.append({"input_ids": list(range(start, start + n)), "labels": list(range(start, start + n))})
        start += n
    ours = pack_best_fit(examples, 32)
    theirs = trl_data.pack_dataset(datasets.Dataset.from_list(examples), 32, "bfd")
    assert [r["input_ids"] for r in ours] == theirs["input_ids"]
    assert [r["seq_lengths"] for r in ours] == theirs["seq_lengths"]
    assert all(len(r["input_ids"]) <= 32 for r in ours)


def test_packed_batch_restarts_positions_and_skips_cross_document_labels():
    rows = pack_best_fit([{"input_ids": [1, 2, 3], "labels": [1, 2, 3]}, {"input_ids": [4, 5], "labels": [4, 5]}], 8)
    batch = collate_packed(rows)
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert batch["labels"].tolist() == [[-100, 2, 3, -100, 5]]
