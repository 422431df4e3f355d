"""Connecting to Ray: a local Ray started for the run by default, or an existing cluster.

    ray start --head                                   # on the head node
    ray start --address=<head-ip>:6379                 # on every other node
    distopt train --backend ray --address <head-ip>:6379 ...

``connect`` fails early, with the fix in the message, when the address is unreachable (a TCP
probe of host:port first: ``ray.init`` itself retries an unreachable GCS for minutes) or the
cluster has fewer CPUs (GPUs) than the run asks for. Ray's token authentication (if the
cluster has it enabled) is left to Ray: we never disable it.

Every node must be able to import distopt (``pip install -e .[ray]`` on each, same checkout):
the actors run ``workers.actor`` and unpickle the workload and method objects.
"""
from __future__ import annotations

import os
import socket


def _probe(address: str, timeout: float = 5.0) -> None:
    """Raise ValueError unless ``host:port`` accepts a TCP connection ("auto" is left to Ray)."""
    if address == "auto":
        return
    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--address {address!r} is not host:port (e.g. 10.0.0.5:6379, the head node's "
                         "`ray start --head` address)")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as e:
        raise ValueError(f"cannot reach the Ray cluster at {address!r} ({e.strerror or e}); start it with "
                         "`ray start --head` on the head node and pass its address (host:6379), or omit --address "
                         "for a local Ray") from None


def connect(address: str | None = None, need_cpus: float = 0.0, num_cpus: int | None = None, need_gpus: float = 0.0):
    """ray.init once: local (``num_cpus`` from the machine) or ``address``; checks capacity."""
    import ray

    if not ray.is_initialized():
        if address:
            _probe(address)
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
    gpus = ray.cluster_resources().get("GPU", 0)
    if need_gpus > gpus:
        raise ValueError(f"the run needs {need_gpus:g} GPUs but the Ray cluster has {gpus:g}; use --gpus-per-worker 0 "
                         "or add GPU nodes with `ray start --address=... --num-gpus=N`")
    return ray
