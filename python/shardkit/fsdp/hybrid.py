"""The two process groups of the HYBRID strategy (HSDP): shard inside a host, replicate across hosts.

With H hosts of L ranks each (``Group.topology``), rank r on host h at local
index i is in

* the shard group of host h (its L ranks, a ``shardkit.comm`` group over
  shared memory): parameters are all-gathered and gradients reduce-scattered there;
* the replica group of local index i (the H ranks at index i of every host, a
  plain ``torch.distributed`` group: its members sit on different hosts):
  the reduce-scattered gradient shards are all-reduced there.

The groups are made once per parent group and cached on it, so sharding a
second model (a DPO reference model) reuses them. ``torch.distributed.new_group``
is collective over the default group, so HYBRID needs a group of all ranks.
"""

from __future__ import annotations

import datetime

import torch.distributed as dist

from shardkit import comm


def hybrid_groups(group):
    """``(shard group or None, replica torch group or None)`` for this rank; None where it would have one rank.

    Raises ValueError when the hosts hold unequal numbers of ranks (the
    shards of one host would not line up with another's). Collective over ``group``.
    """
    if group is None:
        return None, None
    cached = getattr(group, "_shardkit_hybrid_groups", None)
    if cached is not None:
        return cached
    hosts = group.topology.hosts
    sizes = [len(ranks) for ranks in hosts]
    if len(set(sizes)) != 1:
        raise ValueError(f"strategy: HYBRID needs the same number of ranks on every host, got {sizes} ranks "
                         f"on hosts {[list(r) for r in hosts]} (group ranks); use FULL_SHARD or even out the hosts")
    if len(hosts) == 1:  # one host: HYBRID is FULL_SHARD over the group itself
        group._shardkit_hybrid_groups = (group, None)
        return group, None
    if group.world_size != dist.get_world_size():
        raise ValueError(f"group: HYBRID needs a group of all {dist.get_world_size()} ranks of torch.distributed's "
                         f"default group (its subgroups are made collectively), got {group.world_size} ranks")
    local = hosts[group.host_index]
    index = local.index(group.rank)
    timeout = datetime.timedelta(seconds=group.timeout)
    to_global = group.global_ranks
    # new_group is collective over the default group: every rank creates every
    # subgroup, in the same order, and keeps its own.
    shard_torch_group = replica_group = None
    for ranks in hosts:
        made = dist.new_group([to_global[r] for r in ranks], timeout=timeout)
        if ranks is local:
            shard_torch_group = made
    for i in range(len(local)):
        made = dist.new_group([to_global[ranks[i]] for ranks in hosts], timeout=timeout)
        if i == index:
            replica_group = made
    shard_group = comm.join(shard_torch_group, timeout=group.timeout) if len(local) > 1 else None
    if shard_group is not None:
        group.subgroups.append(shard_group)  # its shared memory goes when the parent group is destroyed
    group._shardkit_hybrid_groups = (shard_group, replica_group)
    return shard_group, replica_group
