"""shard()'s device code path, run on CPU: the process-group transport (gloo) equals the shared-memory one
and single-process training at world sizes 2 and 3; the stream helper is a no-op on CPU; CUDA parameters
are accepted by the device selection (fake CUDA tensors: no CUDA needed); bad transports raise."""

import pytest
import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from shardkit import fsdp
from shardkit.fsdp import transport
from shardkit.fsdp.sharded_model import _buffer_device, _check_model
from shardkit.fsdp.streams import Pending, StreamSet
from shardkit.testing import spawn

import transport_cases


@pytest.mark.native
@pytest.mark.distributed
@pytest.mark.parametrize("world", [2, 3])
def test_process_group_transport_matches_shm_and_single_process(world, tmp_path):
    assert all(spawn(transport_cases.run_transport_parity, world, args=(str(tmp_path / "ckpt"),), timeout=150))


class _Done:
    def __init__(self):
        self.waited = 0

    def wait(self):
        self.waited += 1


def test_stream_helper_is_a_no_op_on_cpu(monkeypatch):
    # Any CUDA stream call on the CPU path would raise here.
    for name in ("Stream", "Event", "current_stream", "stream"):
        monkeypatch.setattr(torch.cuda, name, lambda *a, **k: pytest.fail("a CUDA stream call on CPU"))
    streams = StreamSet("cpu")
    assert not streams.enabled and streams.stream("all_gather") is None and streams.stream("reduce_scatter") is None
    with streams.side("all_gather"):
        event = streams.record()
    assert event is None
    streams.wait_for("reduce_scatter")
    work, kept = _Done(), torch.ones(3)
    pending = Pending(work, event, refs=(kept,))
    pending.wait()
    pending.wait()  # a second wait does not wait on the work again
    assert work.waited == 1 and pending.refs == ()
    with pytest.raises(ValueError, match="name"):
        with streams.side("compute"):
            pass
    # A whole single-process sharded step on CPU makes no CUDA call either.
    model = fsdp.shard(nn.Sequential(nn.Linear(4, 5), nn.Linear(5, 3)), units=[nn.Linear],
                       mixed_precision=fsdp.MixedPrecision(param_dtype=torch.bfloat16))
    model(torch.randn(2, 4)).float().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters())


def _fake_cuda(*shape):
    with FakeTensorMode(allow_non_fake_inputs=True):
        return nn.Parameter(torch.empty(*shape, device="cuda"))


def test_cuda_parameters_select_the_nccl_transport():
    with torch.device("meta"):
        model = nn.Linear(3, 2)
    model.weight, model.bias = _fake_cuda(2, 3), _fake_cuda(2)
    device = _check_model(model)
    assert device == torch.device("cuda", 0)
    assert _buffer_device(device, None) == device
    assert transport.resolve("auto", device.type) == "nccl"
    assert transport.resolve("process_group", device.type) == "process_group"
    assert transport.resolve("auto", "cpu") == "shm"
    with pytest.raises(ValueError, match="transport: 'shm'"):
        fsdp.shard(model, transport="shm")
    with pytest.raises(ValueError, match="device: the parameters are on cuda:0"):
        fsdp.shard(model, device="cpu")
    with pytest.raises(ValueError, match="HYBRID"):
        fsdp.shard(model, strategy="HYBRID")


def test_mixed_devices_name_the_parameters():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    model[1].weight = _fake_cuda(3, 3)
    with pytest.raises(ValueError, match=r"'1.weight' is on cuda:0 but '0.weight' is on cpu"):
        fsdp.shard(model)


def test_bad_transport_arguments_raise():
    with pytest.raises(ValueError, match="transport: expected one of"):
        fsdp.shard(nn.Linear(2, 2), transport="tcp")
    with pytest.raises(ValueError, match="transport: 'nccl' moves CUDA tensors"):
        fsdp.shard(nn.Linear(2, 2), transport="nccl")
    with pytest.raises(ValueError, match="algo"):
        fsdp.shard(nn.Linear(2, 2), algo="butterfly")
    with pytest.raises(ValueError, match="device: expected a CPU or CUDA device"):
        with torch.device("meta"):
            meta = nn.Linear(2, 2)
        fsdp.shard(meta, device="meta")
