"""The fused optimizers inside the PyTorch people run: torch FSDP2, tensor parallel
(1-D and 2-D meshes), DDP, torch.compile and torch.distributed.checkpoint.

The anchor is torch.optim (``foreach=False``) on the same model, so both see
the same DTensor parameters and gradients; fp32 parameters must agree to 1e-6
after several steps. Ranks run on gloo at 127.0.0.1.
"""

import pytest
import torch

from shardkit.optim import FusedAdamW
from shardkit.testing import spawn

import dtensor_cases

pytestmark = [pytest.mark.native, pytest.mark.distributed]

QUIET = {"PYTHONWARNINGS": "ignore"}  # FSDP2 warns about the Linear's view output on every forward
TOL = 1e-6


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("name", ["adamw", "adam", "sgd"])
def test_fsdp2_tied_uneven_shards_match_torch_optim(world, name):
    diffs = spawn(dtensor_cases.run_fsdp2_parity, world, args=(name,), env=QUIET, timeout=120)
    assert max(diffs) <= TOL, diffs


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_tensor_parallel_with_sequence_parallel_norm_matches_torch_optim(world, name):
    # The norm's gradient is Partial under sequence parallelism: without its
    # reduction the replicated weights would drift from torch's.
    diffs = spawn(dtensor_cases.run_tp_parity, world, args=(name,), env=QUIET, timeout=120)
    assert max(diffs) <= TOL, diffs


def test_fsdp2_times_tp_on_a_2d_mesh_matches_torch_optim():
    diffs = spawn(dtensor_cases.run_fsdp2_tp_parity, 4, args=("adamw",), env=QUIET, timeout=150)
    assert max(diffs) <= TOL, diffs


@pytest.mark.parametrize("world", [2, 3])
def test_bf16_fsdp2_model_trains_with_fp32_masters_in_the_state(world):
    results = spawn(dtensor_cases.run_fsdp2_bf16_masters, world, env=QUIET, timeout=120)
    for master_vs_torch_fp32, loss_fell in results:
        assert master_vs_torch_fp32 <= TOL
        assert loss_fell


@pytest.mark.parametrize("saved_at,loaded_at", [(2, 3), (3, 2)])
def test_dcp_state_saved_at_n_ranks_loads_at_m(saved_at, loaded_at, tmp_path):
    path = str(tmp_path / "ckpt")
    assert all(spawn(dtensor_cases.run_dcp_save, saved_at, args=(path,), env=QUIET, timeout=120))
    assert all(spawn(dtensor_cases.run_dcp_load, loaded_at, args=(path,), env=QUIET, timeout=120))


def test_full_torch_state_dict_loads_into_sharded_optimizer():
    assert all(spawn(dtensor_cases.run_full_state_dict_loads_sharded, 3, env=QUIET, timeout=120))


def test_misuse_raises_value_error_naming_parameter_and_placement():
    messages = spawn(dtensor_cases.run_rejections, 2, timeout=120)[0]
    assert "params'][0]" in messages["partial"] and "Partial" in messages["partial"]
    assert "params'][1]" in messages["meshes"] and "another mesh" in messages["meshes"]
    assert "['exp_avg']" in messages["load"] and "Shard(dim=0)" in messages["load"]
    assert "Replicate()" in messages["load"]


@pytest.mark.parametrize("world", [2, 3])
def test_ddp_matches_torch_optim(world):
    diffs = spawn(dtensor_cases.run_ddp_parity, world, args=("adamw",), timeout=120)
    assert max(diffs) <= TOL, diffs


def test_compiled_step_matches_torch():
    torch.manual_seed(0)
    ours = [torch.nn.Parameter(torch.randn(5, 3)) for _ in range(3)]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    opt = FusedAdamW(ours, lr=1e-2, weight_decay=0.1)
    ref = torch.optim.AdamW(theirs, lr=1e-2, weight_decay=0.1, foreach=False)
    step = torch.compile(opt.step, backend="aot_eager", fullgraph=True)
    for _ in range(4):
        for p, q in zip(ours, theirs):
            p.grad = torch.randn(p.shape)
            q.grad = p.grad.clone()
        step()
        ref.step()
    for p, q in zip(ours, theirs):
        torch.testing.assert_close(p, q, rtol=0, atol=TOL)
