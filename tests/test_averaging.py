"""Model averaging against a plain-torch weighted mean: files, directories, HF index shards, sharded checkpoints."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_model, save_file, save_model
from shardkit.averaging import average_checkpoints, average_state_dicts
from shardkit.cli import main
from shardkit.models import GPT, GPTConfig
from shardkit.testing import spawn

from tests import averaging_cases


def _gpt(seed, dtype=torch.float32, **kw):
    torch.manual_seed(seed)
    cfg = {
        "vocab_size": 40,
        "hidden_size": 16,
        "intermediate_size": 24,
        "num_layers": 2,
        "num_heads": 2,
        "num_kv_heads": 1,
        "max_position_embeddings": 32,
        "tie_word_embeddings": True,
        **kw,
    }
    return GPT(GPTConfig(**cfg)).to(dtype)


def _reference(models, weights):
    """sum_i w_i / sum(w) * p_i in float64, cast back: the obvious computation, parameter by parameter."""
    total = sum(weights)
    out = {}
    for name, p in models[0].named_parameters():
        acc = torch.zeros(p.shape, dtype=torch.float64)
        for m, w in zip(models, weights):
            acc += (w / total) * dict(m.named_parameters())[name].detach().double()
        out[name] = acc.to(p.dtype)
    return out


def _save_three_ways(models, tmp_path):
    """A plain file, a directory with model.safetensors, and an HF-style index over two shard files."""
    file = tmp_path / "a.safetensors"
    save_model(models[0], str(file))
    directory = tmp_path / "b"
    directory.mkdir()
    save_model(models[1], str(directory / "model.safetensors"))
    indexed = tmp_path / "c"
    indexed.mkdir()
    state = {k: v.contiguous() for k, v in models[2].state_dict().items() if k != "lm_head.weight"}
    names = sorted(state)
    parts = {"part-1.safetensors": names[: len(names) // 2], "part-2.safetensors": names[len(names) // 2 :]}
    for part, keys in parts.items():
        save_file({k: state[k] for k in keys}, str(indexed / part))
    weight_map = {k: part for part, keys in parts.items() for k in keys}
    (indexed / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return [str(file), str(directory), str(indexed)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_average_matches_the_weighted_mean(tmp_path, dtype):
    models = [_gpt(s, dtype) for s in (1, 2, 3)]
    paths = _save_three_ways(models, tmp_path)
    result = average_checkpoints(paths, [2, 1, 1], out=tmp_path / "soup")
    ref = _reference(models, [2, 1, 1])
    soup = _gpt(0, dtype)
    load_model(soup, str(tmp_path / "soup" / "model.safetensors"))  # the tied head comes back too
    for name, p in soup.named_parameters():
        assert p.dtype == dtype
        assert torch.equal(p.detach(), ref[name]), name
    assert set(result) == {k for k in models[0].state_dict() if k != "lm_head.weight"}
    with safe_open(str(tmp_path / "soup" / "model.safetensors"), framework="pt") as f:
        meta = json.loads(f.metadata()["shardkit.average"])
    assert meta["weights"] == [0.5, 0.25, 0.25] and meta["models"] == paths
    # Equal weights by default; normalize=False uses them as given (here: a sum).
    plain = average_checkpoints(paths[:2])
    summed = average_checkpoints(paths[:2], [1, 1], normalize=False)
    for name, t in plain.items():
        a, b = models[0].state_dict()[name].double(), models[1].state_dict()[name].double()
        assert torch.equal(t, ((a + b) / 2).to(dtype))
        assert torch.equal(summed[name], (a + b).to(dtype))


def test_cli_average(tmp_path, capsys):
    models = [_gpt(s) for s in (1, 2)]
    paths = _save_three_ways(models + [_gpt(3)], tmp_path)[:2]
    out = tmp_path / "soup.safetensors"
    assert main(["average", "--models", *paths, "--weights", "3", "1", "--out", str(out)]) == 0
    assert "weights [0.75, 0.25]" in capsys.readouterr().out
    ref = _reference(models, [3, 1])
    with safe_open(str(out), framework="pt") as f:
        for name in f.keys():  # noqa: SIM118
            assert torch.equal(f.get_tensor(name), ref[name])


def test_average_sharded_checkpoints(tmp_path):
    dirs = [str(tmp_path / "s1"), str(tmp_path / "s2")]
    states = spawn(averaging_cases.save_sharded_models, 2, args=(dirs, (11, 12)), timeout=120)[0]
    result = average_checkpoints(dirs, [1, 3])
    assert result  # the tied head is stored once, under its first name
    for name, t in result.items():
        a, b = (torch.from_numpy(s[name]).double() for s in states)
        assert torch.equal(t, (0.25 * a + 0.75 * b).float()), name
    # A sharded checkpoint and a plain file of the same model average to that model.
    single = tmp_path / "full.safetensors"
    save_file({k: torch.from_numpy(v) for k, v in states[0].items() if k in result}, str(single))
    same = average_checkpoints([dirs[0], str(single)])
    assert all(torch.equal(same[k], torch.from_numpy(states[0][k])) for k in same)


def test_average_bad_input_names_the_problem(tmp_path):
    a, b = _gpt(1), _gpt(2)
    sa, sb = a.state_dict(), b.state_dict()
    with pytest.raises(ValueError, match=r"weights: expected 2 weights"):
        average_state_dicts([sa, sb], [1.0])
    with pytest.raises(ValueError, match=r"weights\[1\]"):
        average_state_dicts([sa, sb], [1.0, -1.0])
    with pytest.raises(ValueError, match=r"weights\[0\]"):
        average_state_dicts([sa, sb], [float("nan"), 1.0])
    with pytest.raises(ValueError, match="all weights are 0"):
        average_state_dicts([sa, sb], [0, 0])
    deeper = _gpt(3, num_layers=3).state_dict()
    with pytest.raises(ValueError, match=r"'layers\.2\..*' is in models\[1\]"):
        average_state_dicts([sa, deeper])
    wider = _gpt(3, intermediate_size=32).state_dict()
    with pytest.raises(ValueError, match=r"'layers\.0\.mlp\.(gate|up|down)_proj\.weight': shape"):
        average_state_dicts([sa, wider])
    with pytest.raises(ValueError, match="'norm.weight': dtype"):
        average_state_dicts([sa, {**sb, "norm.weight": sb["norm.weight"].double()}])
    ints = [{"count": torch.tensor([1, 2])}, {"count": torch.tensor([1, 3])}]
    with pytest.raises(ValueError, match="'count'.*cannot be averaged"):
        average_state_dicts(ints)
    assert torch.equal(average_state_dicts([ints[0], ints[0]])["count"], ints[0]["count"])
    save_model(a, str(tmp_path / "a.safetensors"))
    with pytest.raises(FileNotFoundError, match=r"models\[1\]"):
        average_checkpoints([str(tmp_path / "a.safetensors"), str(tmp_path / "nope")])
    with pytest.raises(FileNotFoundError, match=r"models\[1\].*holds no model.safetensors"):
        average_checkpoints([str(tmp_path / "a.safetensors"), str(tmp_path)])
