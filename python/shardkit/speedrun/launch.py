"""Launching a training stage on ``nproc`` local ranks through torchrun.

torchrun dies with this process (``lifetime.parent_death_signal``), the ranks
watch it and this process (``lifetime.start_watchdog``), and an exception
here (Ctrl-C, or SIGTERM under ``lifetime.signals_exit``) stops torchrun and
waits for it: no rank outlives the launch.
"""

from __future__ import annotations

import os
import socket
import signal
import subprocess
import sys
from pathlib import Path

from shardkit.speedrun import lifetime
from shardkit.speedrun.device import DEVICE_ENV

# How long torchrun gets to stop its ranks (SIGTERM, then its own SIGKILL) before we kill it.
STOP_TIMEOUT_S = 20.0


def default_nproc() -> int:
    """The cores this process may use."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(stage: str, run_dir: Path, nproc: int, device: str = "cpu") -> None:
    """Run ``shardkit.speedrun.worker`` for ``stage`` on ``nproc`` ranks on ``device`` (cpu or cuda);
    raise if any rank fails."""
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}",
               "--master-addr=127.0.0.1", f"--master-port={free_port()}",
               "-m", "shardkit.speedrun.worker", "--stage", stage, "--run-dir", str(run_dir)]
    # torchrun's own warning about OMP_NUM_THREADS is noise here: the worker shares the cores out.
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           lifetime.LAUNCHER_PID_ENV: str(os.getpid()), DEVICE_ENV: device}
    proc = subprocess.Popen(command, env=env, preexec_fn=lifetime.parent_death_signal())
    try:
        code = proc.wait()
    except BaseException:
        stop(proc)
        raise
    if code != 0:
        raise RuntimeError(f"speedrun stage {stage!r} failed on {nproc} ranks (exit code {code}); its errors are "
                           f"printed above. Rerun the same command to resume from the last finished stage.")


def stop(proc: subprocess.Popen, timeout: float = STOP_TIMEOUT_S) -> int:
    """Stop torchrun: SIGTERM (it stops its ranks and exits), SIGKILL if it is still there after ``timeout`` s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()  # its ranks' watchdogs see it gone and end them
            proc.wait()
    return proc.returncode
