"""shardkit.models.GPT: architecture parity with HF Llama, masks, KV-cache generation."""

import pytest
import torch

from shardkit.models import GPT, PRESETS, GPTConfig, filter_logits

transformers = pytest.importorskip("transformers")


def _tiny_config(**kw):
    base = dict(vocab_size=97, hidden_size=48, intermediate_size=80, num_layers=2, num_heads=6,
                num_kv_heads=2, max_position_embeddings=64)
    base.update(kw)
    return GPTConfig(**base)


@pytest.mark.parametrize("tied,kv_heads", [(False, 2), (True, 6), (False, 1)])
def test_logits_match_hf_llama_with_copied_weights(tied, kv_heads):
    torch.manual_seed(0)
    hf_cfg = transformers.LlamaConfig(vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
                                      num_attention_heads=6, num_key_value_heads=kv_heads,
                                      max_position_embeddings=64, tie_word_embeddings=tied, rms_norm_eps=1e-6,
                                      attn_implementation="eager")
    hf = transformers.LlamaForCausalLM(hf_cfg).eval()
    ours = GPT.from_hf_llama(hf).eval()
    assert (ours.lm_head.weight is ours.embed_tokens.weight) == tied
    ids = torch.randint(0, 97, (3, 17))
    mask = torch.ones_like(ids)
    mask[1, 12:] = 0  # right padding
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask).logits
        got = ours(ids, attention_mask=mask).logits
    valid = mask.bool()
    torch.testing.assert_close(got[valid], ref[valid], rtol=1e-5, atol=1e-5)
    assert sum(p.numel() for p in ours.parameters()) == ours.config.num_parameters()


def test_packed_documents_do_not_attend_across_each_other():
    torch.manual_seed(0)
    model = GPT(_tiny_config()).eval()
    a, b = torch.randint(0, 97, (1, 7)), torch.randint(0, 97, (1, 5))
    packed = torch.cat([a, b], dim=1)
    pos = torch.cat([torch.arange(7), torch.arange(5)])[None]
    with torch.no_grad():
        got = model(packed, position_ids=pos).logits
        ref = torch.cat([model(a).logits, model(b).logits], dim=1)
        leaky = model(packed).logits
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(leaky[:, 7:], ref[:, 7:], atol=1e-4)  # the test can tell the difference


def test_kv_cache_greedy_generation_equals_full_recomputation():
    torch.manual_seed(0)
    model = GPT(_tiny_config()).eval()
    prompt = torch.randint(0, 97, (2, 6))
    out = model.generate(prompt, max_new_tokens=10, temperature=0)
    seq = prompt
    with torch.no_grad():
        for _ in range(10):  # no cache: recompute the whole sequence each step
            seq = torch.cat([seq, model(seq).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, seq)


def test_left_padded_batch_generates_like_each_prompt_alone():
    torch.manual_seed(0)
    model = GPT(_tiny_config()).eval()
    long, short = torch.randint(1, 97, (1, 8)), torch.randint(1, 97, (1, 5))
    batch = torch.cat([long, torch.cat([torch.zeros(1, 3, dtype=torch.long), short], dim=1)])
    mask = torch.ones_like(batch)
    mask[1, :3] = 0
    out = model.generate(batch, attention_mask=mask, max_new_tokens=6, temperature=0)
    assert torch.equal(out[0], model.generate(long, max_new_tokens=6, temperature=0)[0])
    assert torch.equal(out[1, 3:], model.generate(short, max_new_tokens=6, temperature=0)[0])


def test_sampling_is_seeded_and_stop_tokens_end_rows():
    torch.manual_seed(0)
    model = GPT(_tiny_config()).eval()
    prompt = torch.randint(0, 97, (4, 3))
    kw = dict(max_new_tokens=30, temperature=1.5, top_k=20, top_p=0.9)
    a = model.generate(prompt, generator=torch.Generator().manual_seed(1), **kw)
    b = model.generate(prompt, generator=torch.Generator().manual_seed(1), **kw)
    assert torch.equal(a, b)
    stop = int(a[0, 5])
    c = model.generate(prompt, generator=torch.Generator().manual_seed(1), stop_tokens=[stop], pad_token_id=0, **kw)
    first = (c[0, 3:] == stop).nonzero()[0, 0].item() + 3
    assert torch.equal(c[0, :first + 1], a[0, :first + 1])
    assert (c[0, first + 1:] == 0).all()


def test_filter_logits_keeps_exactly_the_top_k_and_the_nucleus():
    logits = torch.log(torch.tensor([[0.05, 0.4, 0.1, 0.3, 0.15]]))
    kept_k = filter_logits(logits, top_k=2, top_p=None).isfinite()
    assert kept_k.tolist() == [[False, True, False, True, False]]
    # 0.4 + 0.3 = 0.7 < 0.75, so 0.15 is needed to reach the nucleus; 0.1 and 0.05 are not.
    kept_p = filter_logits(logits, top_k=None, top_p=0.75).isfinite()
    assert kept_p.tolist() == [[False, True, False, True, True]]


def test_presets_build_on_meta_and_count_parameters():
    for name, cfg in PRESETS.items():
        with torch.device("meta"):
            model = GPT(cfg)
        assert sum(p.numel() for p in model.parameters()) == cfg.num_parameters(), name
    assert 6.5e9 < PRESETS["7b"].num_parameters() < 7e9


def test_bad_config_and_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="num_kv_heads"):
        _tiny_config(num_kv_heads=4)
    with pytest.raises(ValueError, match="unknown GPT preset"):
        GPT.from_preset("huge")
    model = GPT(_tiny_config())
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(torch.zeros(1, 65, dtype=torch.long))
    with pytest.raises(ValueError, match="input_ids"):
        model(torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="top_p"):
        model.generate(torch.zeros(1, 2, dtype=torch.long), max_new_tokens=1, top_p=1.5)
