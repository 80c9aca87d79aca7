"""``shardkit speedrun --device``: the flag, what auto picks, the ranks per GPU, and what reaches the worker."""

import argparse
import types

import pytest
from shardkit.speedrun import device as dev


@pytest.mark.parametrize("flag, available, count, expected", [
    ("auto", False, 0, "cpu"), ("auto", True, 0, "cpu"), ("auto", True, 8, "cuda"),
    ("cpu", True, 8, "cpu"), ("cuda", True, 1, "cuda")])
def test_device_flag_resolution(flag, available, count, expected):
    assert dev.resolve(flag, cuda_available=available, cuda_count=count) == expected


def test_bad_device_flags_say_what_is_wrong():
    with pytest.raises(ValueError, match="CUDA is not available"):
        dev.resolve("cuda", cuda_available=False, cuda_count=0)
    with pytest.raises(ValueError, match=r"--device: expected one of \('auto', 'cpu', 'cuda'\)"):
        dev.resolve("gpu0", cuda_available=True, cuda_count=1)
    with pytest.raises(ValueError, match="one rank per GPU and this machine has 2"):
        dev.check_nproc("cuda", 3, 2)
    dev.check_nproc("cpu", 3, 0)  # CPU ranks are not bound to GPUs


def test_one_rank_per_gpu_by_default():
    assert dev.default_nproc("cuda", cuda_count=8, cores=64) == 8
    assert dev.default_nproc("cpu", cuda_count=8, cores=64) == 64


def test_cli_flag_reaches_run_and_the_worker_environment(monkeypatch, tmp_path):
    from shardkit.commands import speedrun as command
    from shardkit.speedrun import launch

    parser = argparse.ArgumentParser()
    command.register(parser.add_subparsers())
    assert parser.parse_args(["speedrun"]).device == "auto"
    assert parser.parse_args(["speedrun", "--device", "cuda", "--preset", "gpu"]).device == "cuda"
    with pytest.raises(SystemExit):
        parser.parse_args(["speedrun", "--device", "tpu"])
    # The worker learns the device from its environment: what launch() hands torchrun.
    seen = {}

    class FakePopen:
        def __init__(self, command, env, preexec_fn=None):
            seen.update(command=command, env=env)

        def wait(self):
            return 0

    # Only launch's own view of subprocess is replaced (other code in this process still spawns for real).
    monkeypatch.setattr(launch, "subprocess", types.SimpleNamespace(Popen=FakePopen))
    launch.launch("sft", tmp_path, 2, "cuda")
    assert seen["env"][dev.DEVICE_ENV] == "cuda" and "--nproc-per-node=2" in seen["command"]


def test_run_refuses_cuda_without_a_gpu(monkeypatch, tmp_path):
    from shardkit import speedrun

    monkeypatch.setattr(dev.torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        speedrun.run(tmp_path / "run", preset="micro", device="cuda")
    assert not (tmp_path / "run").exists()  # refused before anything was written
