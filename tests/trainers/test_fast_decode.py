"""DecodeSnapshot (the rollout decoder) against GPT.forward with a KV cache and shardkit's generate."""

import pytest
import torch
from shardkit.models import GPT, GPTConfig
from shardkit.models.fast_decode import DecodeSnapshot
from shardkit.models.generation import generate


def _model(seed=0, tied=True, kv=2):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=61, hidden_size=64, intermediate_size=96, num_layers=2, num_heads=4,
                         num_kv_heads=kv, max_position_embeddings=64, tie_word_embeddings=tied)).eval()


def _left_padded(lengths, vocab=61, seed=1):
    g = torch.Generator().manual_seed(seed)
    t = max(lengths)
    ids = torch.zeros(len(lengths), t, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, t - n:] = torch.randint(3, vocab, (n,), generator=g)
        mask[i, t - n:] = 1
    return ids, mask


@pytest.mark.parametrize("lengths,tied,kv", [([5, 5, 5], True, 2), ([7, 2, 4, 1], False, 4), ([6, 3], True, 1)])
def test_snapshot_matches_gpt_greedy_and_logits(lengths, tied, kv):
    model = _model(tied=tied, kv=kv)
    ids, mask = _left_padded(lengths)
    ours = DecodeSnapshot(model).generate(ids, attention_mask=mask, max_new_tokens=12, temperature=0)
    ref = generate(model, ids, attention_mask=mask, max_new_tokens=12, temperature=0)
    assert torch.equal(ours, ref)
    # Logits at every generated position: one full forward of GPT vs the snapshot's cached steps.
    b, t = ids.shape
    full_mask = torch.cat([mask, torch.ones(b, 12, dtype=torch.long)], dim=1)
    pos = (full_mask.cumsum(-1) - 1).clamp(min=0)
    want = model(ref, attention_mask=full_mask, position_ids=pos).logits[:, t - 1:-1]  # (B, 12, V)
    snap = DecodeSnapshot(model)
    shape = (b, kv, ref.shape[1], 16)
    keys = [torch.empty(shape) for _ in range(2)]
    values = [torch.empty(shape) for _ in range(2)]
    valid = full_mask.bool()
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    prefill = ((causal[None] & valid[:, None, :t]) | torch.eye(t, dtype=torch.bool)[None])[:, None]
    got = [snap._forward(ids, pos[:, :t], keys, values, 0, prefill)]
    for s in range(11):
        got.append(snap._forward(ref[:, t + s:t + s + 1], pos[:, t + s:t + s + 1], keys, values, t + s,
                                 valid[:, None, None, :t + s + 1]))
    torch.testing.assert_close(torch.stack(got, 1), want, rtol=1e-5, atol=1e-5)


def test_snapshot_stops_and_pads_like_generate():
    model = _model(seed=3)
    ids, mask = _left_padded([4, 6])
    stop = int(generate(model, ids, attention_mask=mask, max_new_tokens=1, temperature=0)[0, -1])
    kw = {"attention_mask": mask, "max_new_tokens": 8, "temperature": 0, "stop_tokens": stop, "pad_token_id": 0}
    ours = DecodeSnapshot(model).generate(ids, **kw)
    ref = generate(model, ids, **kw)
    t = ids.shape[1]
    assert torch.equal(ours, ref) and int(ours[0, t]) == stop and (ours[0, t + 1:] == 0).all()


def test_snapshot_sampling_matches_generate_with_the_same_generator():
    model = _model(seed=4)
    ids, mask = _left_padded([3, 5, 2])
    kw = {"attention_mask": mask, "max_new_tokens": 10, "temperature": 0.8, "top_k": 20, "top_p": 0.9}
    ours = DecodeSnapshot(model).generate(ids, generator=torch.Generator().manual_seed(7), **kw)
    ref = generate(model, ids, generator=torch.Generator().manual_seed(7), **kw)
    assert torch.equal(ours, ref)


def test_snapshot_rejects_bad_input():
    snap = DecodeSnapshot(_model())
    with pytest.raises(ValueError, match="max_position_embeddings"):
        snap.generate(torch.ones(1, 10, dtype=torch.long), max_new_tokens=60)
    with pytest.raises(TypeError, match="shardkit GPT"):
        DecodeSnapshot(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("kv,dtype", [(2, torch.float32), (4, torch.float32), (1, torch.bfloat16)])
def test_one_token_step_is_bitwise_the_general_forward(kv, dtype):
    """``_step`` (the decode fast path) gives exactly the logits and cache entries of ``_forward_any`` at T=1."""
    model = _model(seed=5, kv=kv).to(dtype)
    ids, mask = _left_padded([6, 2, 4])
    snap = DecodeSnapshot(model)
    b, t = ids.shape
    caches = [[torch.zeros(b, kv, t + 6, 16, dtype=dtype) for _ in range(4)] for _ in range(2)]
    valid = torch.cat([mask.bool(), torch.ones(b, 6, dtype=torch.bool)], dim=1)
    pos = (valid.long().cumsum(-1) - 1).clamp(min=0)
    prefill = ((torch.ones(t, t, dtype=torch.bool).tril()[None] & valid[:, None, :t]) |
               torch.eye(t, dtype=torch.bool)[None])[:, None]
    for c in caches:
        last = snap._forward_any(ids, pos[:, :t], c[:2], c[2:], 0, prefill)
    token = last.argmax(-1)
    for s in range(t, t + 6):
        args = (pos[:, s:s + 1], s, valid[:, None, None, :s + 1])
        want = snap._forward_any(token[:, None], args[0], caches[0][:2], caches[0][2:], *args[1:])
        got = snap._step(token, args[0][:, 0], caches[1][:2], caches[1][2:], *args[1:])
        assert torch.equal(got, want)
        assert all(torch.equal(x, y) for x, y in zip(caches[0], caches[1]))
        token = got.argmax(-1)
