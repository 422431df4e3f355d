"""Tiny pytree helpers for method states: NamedTuples / tuples of tensors (possibly nested).

States stack workers on the leading axis; these index, scatter and select rows of every leaf.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor


def tree_map(fn: Callable[..., Any], tree: Any, *rest: Any) -> Any:
    if isinstance(tree, Tensor):
        return fn(tree, *rest)
    if isinstance(tree, tuple):
        parts = [tree_map(fn, t, *(r[i] for r in rest)) for i, t in enumerate(tree)]
        return type(tree)(*parts) if hasattr(tree, "_fields") else tuple(parts)
    if tree is None:
        return None
    raise TypeError(f"state leaves must be tensors, tuples or None, got {type(tree).__name__}")


def tree_leaves(tree: Any) -> list[Tensor]:
    if isinstance(tree, Tensor):
        return [tree]
    if isinstance(tree, tuple):
        return [leaf for t in tree for leaf in tree_leaves(t)]
    return []


def rows(tree: Any, idx: Tensor) -> Any:
    """The rows ``idx`` of every leaf (workers on the leading axis)."""
    return tree_map(lambda t: t[idx], tree)


def scatter_rows(tree: Any, idx: Tensor, sub: Any, in_place: bool = False) -> Any:
    """A copy of ``tree`` with rows ``idx`` replaced by ``sub`` (``in_place``: ``tree`` itself)."""

    def put(t: Tensor, s: Tensor) -> Tensor:
        out = t if in_place else t.clone()
        out[idx] = s
        return out

    return tree_map(put, tree, sub)


def where_rows(mask: Tensor, new: Any, old: Any) -> Any:
    """Row-wise select: rows of ``new`` where ``mask`` ([n] bool), else rows of ``old``."""

    def sel(a: Tensor, b: Tensor) -> Tensor:
        m = mask.reshape(-1, *([1] * (a.dim() - 1)))
        return torch.where(m, a, b)

    return tree_map(sel, new, old)
