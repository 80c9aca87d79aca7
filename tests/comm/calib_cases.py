"""Rank-side calibration: measure, cache, and have a new group load the cache."""

from shardkit import comm


def run(rank: int, world: int) -> dict:
    g = comm.init(timeout=60)
    model = comm.calibrate(repeats=3)
    comm.destroy()
    again = comm.init(timeout=60)  # loads rank 0's cache entry
    picked = [again.model.choose(world, n) for n in (4096, 64 << 10, 1 << 20, 16 << 20, 64 << 20)]
    comm.destroy()
    return {"model": model.to_dict(), "reloaded": again.model.to_dict(), "picked": picked, "key": g.model_key}
