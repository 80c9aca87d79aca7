"""Killing ``shardkit speedrun`` ends its ranks; SIGTERM stops it cleanly and the rerun resumes.

Each case starts the real command (micro preset, 2 ranks, a pretraining long
enough to be killed mid-run), waits for its first checkpoint, signals it, and
follows every process it had started through ``/proc``.
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from shardkit.speedrun import config
from shardkit.speedrun.pipeline import Speedrun

pytestmark = [pytest.mark.native, pytest.mark.distributed,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")]

OVERRIDES = "[tokenizer]\nvocab_size = 300\n[pretrain]\nmax_steps = 100000\nsave_steps = 4\n"
GONE_WITHIN_S = 15.0  # a few seconds on an idle machine; the shared 2-core CI machine is slower


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A run directory whose tokenizer stage is done (the other cases copy it), and its TOML."""
    root = tmp_path_factory.mktemp("signals")
    toml = root / "c.toml"
    toml.write_text(OVERRIDES)
    run = Speedrun(root / "run", config.resolve("micro", config.load_toml(toml)), preset="micro", nproc=2)
    run._run_tokenizer()
    return root / "run", toml


def _start(run_dir, toml):
    log = open(run_dir.parent / f"{run_dir.name}.log", "a")
    return subprocess.Popen([sys.executable, "-m", "shardkit.cli", "speedrun", "--preset", "micro", "--nproc", "2",
                             "--out", str(run_dir), "--config", str(toml)], stdout=log, stderr=subprocess.STDOUT)


def _steps(run_dir):
    return sorted(int(p.name.split("-")[1]) for p in (run_dir / "pretrain").glob("checkpoint-*"))


def _wait_for_checkpoint(proc, run_dir, after=0, timeout=180.0):
    deadline = time.monotonic() + timeout
    while not [s for s in _steps(run_dir) if s > after]:
        assert proc.poll() is None, f"the speedrun ended (code {proc.returncode}); see {run_dir}.log"
        assert time.monotonic() < deadline, f"no checkpoint after step {after} within {timeout} s"
        time.sleep(0.2)


def _process(pid):
    """(state, start time) of a live process, None once it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in "ZX" else (fields[0], fields[19])


def _descendants(pid):
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return {p: _process(p)[1] for p in found if _process(p)}


def _left(processes):
    return {p for p, start in processes.items() if (_process(p) or (None, None))[1] == start}


def _kill_left(processes):
    """SIGKILL what still runs of ``processes`` (pid -> start time): a failing case leaves nothing behind."""
    for p in _left(processes):
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


def _wait_gone(processes, timeout=GONE_WITHIN_S):
    """Seconds until every process (pid -> start time) is gone; fails naming the ones left."""
    started = time.monotonic()
    while left := _left(processes):
        if time.monotonic() - started > timeout:
            raise AssertionError(f"processes {sorted(left)} still ran {timeout} s after the kill")
        time.sleep(0.05)
    return time.monotonic() - started


def _copy(prepared, tmp_path):
    run_dir, toml = prepared
    shutil.copytree(run_dir, tmp_path / "run")
    return tmp_path / "run", toml


@pytest.mark.parametrize("killed", ["launcher", "launcher and torchrun"])
def test_sigkill_of_the_launcher_ends_every_rank(prepared, tmp_path, killed):
    run_dir, toml = _copy(prepared, tmp_path)
    proc, tree = _start(run_dir, toml), {}
    try:
        _wait_for_checkpoint(proc, run_dir)
        tree = _descendants(proc.pid)
        torchrun = [p for p in tree if b"torch.distributed.run" in open(f"/proc/{p}/cmdline", "rb").read()]
        assert len(torchrun) == 1 and len(tree) == 3, tree  # torchrun and its 2 ranks
        proc.kill()
        if killed == "launcher and torchrun":  # only the ranks' own watchdog can end them now
            os.kill(torchrun[0], signal.SIGKILL)
        _wait_gone(tree)
    finally:
        proc.kill()
        proc.wait()
        _kill_left(tree)


def test_sigterm_stops_every_rank_cleanly_and_the_rerun_resumes(prepared, tmp_path):
    run_dir, toml = _copy(prepared, tmp_path)
    proc, tree = _start(run_dir, toml), {}
    try:
        _wait_for_checkpoint(proc, run_dir)
        tree = _descendants(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(GONE_WITHIN_S) == 128 + signal.SIGTERM
        _wait_gone(tree)
    finally:
        proc.kill()
        proc.wait()
        _kill_left(tree)
    stage = run_dir / "pretrain"
    assert not [p.name for p in stage.iterdir() if p.name.startswith(".")]  # no staging or aside copy left
    assert "pretrain" not in json.loads((run_dir / "state.json").read_text())["stages"]
    last = _steps(run_dir)[-1]
    inode = (stage / f"checkpoint-{last}").stat().st_ino

    rerun, tree = _start(run_dir, toml), {}
    try:
        _wait_for_checkpoint(rerun, run_dir, after=last)
        tree = _descendants(rerun.pid)
    finally:
        rerun.send_signal(signal.SIGTERM)
        rerun.wait(60)
        try:
            _wait_gone(tree)
        finally:
            _kill_left(tree)
    # Resumed, not restarted: checkpoint-<last> was loaded, never written again.
    assert (stage / f"checkpoint-{last}").stat().st_ino == inode
    steps = [json.loads(line)["step"] for line in (stage / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(2, steps[-1] + 1, 2)) and steps[-1] > last  # logged every 2 steps, none twice
