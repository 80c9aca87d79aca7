"""Meta-device initialisation: a model built under torch.device("meta") is
materialised, initialised and sharded one unit at a time."""

import copy

import pytest
import torch
from torch import nn

from shardkit import fsdp
from shardkit.models.gpt import Block
from shardkit.testing import spawn

import fsdp_cases


class Gain(nn.Module):
    """A module without reset_parameters."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.empty(n))

    def forward(self, x):
        return x * self.gain


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(5, 7), Gain(7))
        self.head = nn.Linear(7, 3)

    def forward(self, x):
        return self.head(self.body(x))


def test_one_rank_starts_from_the_cpu_reference_and_trains_like_it():
    model, peak = fsdp_cases.shard_meta_gpt()
    ref = fsdp_cases.meta_reference()
    full = fsdp.full_state_dict(model)
    for name, value in ref.state_dict().items():
        assert torch.equal(full[name], value), name
    model_bytes = sum(p.numel() * p.element_size() for p in ref.parameters())
    # One rank keeps everything, but only ~two units are ever held twice.
    assert peak < 1.5 * model_bytes
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    for step in range(3):
        batch = fsdp_cases.global_batch(1, step)
        for m, o in ((model, opt), (ref, ref_opt)):
            m(batch, labels=batch).loss.backward()
            o.step()
            o.zero_grad()
    full = fsdp.full_state_dict(model)
    for name, value in ref.state_dict().items():
        assert torch.allclose(full[name], value, atol=1e-6), name


def test_the_seed_decides_the_values_and_the_caller_rng_is_untouched():
    with torch.device("meta"):
        one, other = (fsdp_cases.tiny_gpt(num_layers=fsdp_cases.META_LAYERS) for _ in range(2))
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = fsdp.shard(one, units=[Block], seed=fsdp_cases.META_SEED, param_init_fn=one.init_weights)
    assert torch.equal(torch.rand(3), expected_next)
    b = fsdp.shard(other, units=[Block], seed=fsdp_cases.META_SEED + 1, param_init_fn=other.init_weights)
    assert not torch.equal(fsdp.full_state_dict(a)["layers.0.mlp.up_proj.weight"],
                           fsdp.full_state_dict(b)["layers.0.mlp.up_proj.weight"])


def test_reset_parameters_is_the_default_init():
    with torch.device("meta"):
        model = Net()
        del model.body[1]  # every remaining module has reset_parameters
    ref = copy.deepcopy(model).to_empty(device="cpu")
    fsdp.initialize_units(ref, units=[nn.Linear], seed=4)
    sharded = fsdp.shard(model, units=[nn.Linear], seed=4)
    full = fsdp.full_state_dict(sharded)
    for name, value in ref.state_dict().items():
        assert torch.equal(full[name], value), name


def test_a_parameter_nothing_initialises_is_named():
    with torch.device("meta"):
        model = Net()
    with pytest.raises(ValueError, match=r"'body\.1\.gain'.*Gain has no reset_parameters\(\).*param_init_fn"):
        fsdp.shard(model, units=[nn.Linear])


def test_a_parameter_param_init_fn_leaves_unwritten_is_named():
    def init_linears_only(module):
        if isinstance(module, nn.Linear):
            nn.init.zeros_(module.weight)
            nn.init.zeros_(module.bias)

    with torch.device("meta"):
        model = Net()
    with pytest.raises(ValueError, match=r"'body\.1\.gain' was materialised from the meta device but not written"):
        fsdp.shard(model, param_init_fn=init_linears_only)


def test_bad_init_arguments():
    with torch.device("meta"):
        model = Net()
    with pytest.raises(TypeError, match="param_init_fn: expected a callable"):
        fsdp.shard(model, param_init_fn="normal")
    with pytest.raises(TypeError, match="seed: expected an int"):
        fsdp.shard(model, seed=1.5)
    with pytest.raises(ValueError, match="initialize_units re-initialises a CPU model"):
        fsdp.initialize_units(model)


@pytest.mark.native
@pytest.mark.distributed
@pytest.mark.parametrize("world", [2, 3])
def test_meta_built_gpt_matches_the_cpu_built_one_and_never_holds_the_model(world):
    results = spawn(fsdp_cases.run_meta_init, world, timeout=150)
    for peak, model_bytes in results:
        assert peak < model_bytes
