"""Connecting to Ray: a local Ray started for the run by default, or an existing cluster.

    ray start --head                                   # on the head node
    ray start --address=<head-ip>:6379                 # on every other node
    distopt train --backend ray --address <head-ip>:6379 ...

``connect`` fails early, with the fix in the message, when the address is unreachable or the
cluster has fewer CPUs than the run asks for. Ray's token authentication (if the cluster has
it enabled) is left to Ray: we never disable it.
"""
from __future__ import annotations

import os


def connect(address: str | None = None, need_cpus: float = 0.0, num_cpus: int | None = None):
    """ray.init once: local (``num_cpus`` from the machine) or ``address``; checks capacity."""
    import ray

    if not ray.is_initialized():
        if address:
            try:
                ray.init(address=address, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise ValueError(f"cannot connect to the Ray cluster at {address!r} ({e}); start it with "
                                 "`ray start --head` and pass its address (host:6379), or omit --address for a local Ray") from None
        else:
            ray.init(num_cpus=num_cpus or os.cpu_count(), log_to_driver=False, include_dashboard=False)
    total = ray.cluster_resources().get("CPU", 0)
    if need_cpus > total:
        raise ValueError(f"the run needs {need_cpus:g} CPUs but the Ray cluster has {total:g}; lower --workers or "
                         "--cpus-per-worker (e.g. --cpus-per-worker 0.5), or add nodes with `ray start --address=...`")
    return ray
