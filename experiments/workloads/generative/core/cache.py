"""Trained-once artefacts (base diffusion models, the digits classifier) cached outside the repo.

``cached(kind, config, build)`` returns ``build()``'s dict of tensors, stored at
``$DISTOPT_CACHE/generative/<kind>-<hash>.pt`` (default ``~/.cache/distopt``), where ``hash`` is a
SHA-256 of the JSON of ``config`` (plus a format version): a new config, a new file. Files are
written atomically (temp file + rename, distopt._io), so a crash or two concurrent builders
leave a whole file or none; a missing, unreadable or corrupt file is rebuilt.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from distopt._io import atomic_write_bytes

__all__ = ["cache_dir", "cache_path", "cached"]

FORMAT = 1


def cache_dir() -> Path:
    root = os.environ.get("DISTOPT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "distopt")
    return Path(root) / "generative"


def cache_path(kind: str, config: dict) -> Path:
    key = json.dumps({"format": FORMAT, "kind": kind, **config}, sort_keys=True, default=str)
    return cache_dir() / f"{kind}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"


def _load(path: Path, config: dict) -> dict[str, Tensor] | None:
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # missing, truncated, or not a torch file: rebuild
        return None
    if not isinstance(blob, dict) or blob.get("config") != json.dumps(config, sort_keys=True, default=str):
        return None
    tensors = blob.get("tensors")
    if not isinstance(tensors, dict) or not all(isinstance(v, Tensor) and bool(torch.isfinite(v).all())
                                                for v in tensors.values()):
        return None
    return tensors


def cached(kind: str, config: dict, build: Callable[[], dict[str, Tensor]]) -> dict[str, Tensor]:
    """``build()`` once per (kind, config); later calls (any process) load the file. The build
    (a training run) has gradients on even when the first caller does not (an ``evaluate``
    under ``torch.no_grad``, as the simulator's is, on a cold cache)."""
    path = cache_path(kind, config)
    got = _load(path, config)
    if got is not None:
        return got
    with torch.enable_grad():
        built = build()
    tensors = {k: v.detach().clone().contiguous() for k, v in built.items()}
    buf = io.BytesIO()
    torch.save({"config": json.dumps(config, sort_keys=True, default=str), "tensors": tensors}, buf)
    atomic_write_bytes(path, buf.getvalue())
    return tensors
