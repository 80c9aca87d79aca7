"""shardkit.atomic, the one writer: a failed write leaves the old file and no temp file, and every
file the library writes goes through it."""

import json
import os

import pytest

from shardkit import atomic
from shardkit.testing.faults import Crash, CrashAt


def test_write_atomic_leaves_old_or_new_and_no_temp_file(tmp_path):
    path = tmp_path / "a.json"
    atomic.write_json(path, {"v": 1})
    with CrashAt(None) as probe:
        atomic.write_json(path, {"v": 2})
    assert probe.calls[0] == "write " + probe.calls[0].split()[1] and probe.calls[1].endswith("-> a.json")
    for k in range(1, len(probe.calls) + 1):
        atomic.write_json(path, {"v": 1})
        with CrashAt(k), pytest.raises(Crash):
            atomic.write_json(path, {"v": 2})
        assert json.loads(path.read_text()) == {"v": 1}
        assert os.listdir(tmp_path) == ["a.json"]  # the temp file is gone
    atomic.write_atomic(path, lambda tmp: open(tmp, "wb").write(b"written by a function"))
    assert path.read_bytes() == b"written by a function"


def test_write_atomic_rejects_other_data(tmp_path):
    with pytest.raises(TypeError, match="data: expected bytes"):
        atomic.write_atomic(tmp_path / "x", "text, not bytes")
    assert os.listdir(tmp_path) == []


def test_replace_dir_and_recover_dir(tmp_path):
    final = tmp_path / "ckpt"
    with pytest.raises(FileNotFoundError, match="staged"):
        atomic.replace_dir(tmp_path / "nowhere", final)
    for text in ("old", "new"):
        staged = atomic.staging_dir(final)
        atomic.write_text(staged / "f", text)
        atomic.replace_dir(staged, final)
        assert os.listdir(tmp_path) == ["ckpt"] and (final / "f").read_text() == text
    # A crash between the renames: only the aside copy is left, and it comes back.
    os.replace(final, tmp_path / ".old-ckpt")
    assert atomic.recover_dir(final) and os.listdir(tmp_path) == ["ckpt"]
    # A crash before the deletion: both are there, and the new one wins.
    (tmp_path / ".old-ckpt").mkdir()
    assert atomic.recover_dir(final) and os.listdir(tmp_path) == ["ckpt"]
    assert not atomic.recover_dir(tmp_path / "missing")


def _tokenizer(path):
    from shardkit.tokenizer import BPETokenizer

    BPETokenizer.train_from_iterator(["hello world, hello atomic writes"] * 4, 260).save(path)


def _bench_json(path):
    from shardkit.bench._common import write_json

    write_json(path, {"x": 1})


def _cost_model(path, monkeypatch):
    from shardkit.comm import cost_model

    monkeypatch.setenv("SHARDKIT_CACHE_DIR", str(path.parent))
    m = cost_model.CostModel(ring=cost_model.AlgoCost(alpha=1e-6, beta=1e-9), tree=cost_model.AlgoCost(alpha=1e-6, beta=1e-9))
    cost_model.store_cached("h/2", m)


def _memory_plot(path):
    from shardkit.memory import estimate
    from shardkit.memory.report import plot

    plot({"NO_SHARD": estimate(1_000_000)}, str(path))


def _speedrun_json(path):
    from shardkit.speedrun import files

    files.write_json(path, {"x": 1})


@pytest.mark.parametrize("writer,name", [(_tokenizer, "tok.json"), (_bench_json, "b.json"),
                                         (_cost_model, "comm_model.json"), (_memory_plot, "m.png"),
                                         (_speedrun_json, "state.json")])
def test_the_library_writes_through_the_one_writer(tmp_path, monkeypatch, writer, name):
    args = (tmp_path / name, monkeypatch) if writer is _cost_model else (tmp_path / name,)
    with CrashAt(1), pytest.raises(Crash, match="write"):  # the first step is the writer's write step
        writer(*args)
    assert os.listdir(tmp_path) == []
    writer(*args)
    assert os.listdir(tmp_path) == [name]
