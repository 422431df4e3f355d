"""A job's data split into a coding scheme's parts, and the partial gradients over them
(specs/sgc.md sections 1, 2 and 5: a job's gradient g = sum_p g_p over data parts whose sizes
the scheme fixes; GC decodes the exact sum, so coded training needs partial gradients that
add up to the full gradient).

The job's data is the whole training set: the n workers' shards in order. Row j carries the
weight w_j = 1/(n m_i) of its shard i under the run's n-way split (``numpy.array_split``), so

    f(x) = sum_j w_j (loss_j(x) + reg(x)) = mean_i f_i(x)                      (DESIGN.md logreg)

and part p (a contiguous range of rows) has g_p(x) = sum_{j in p} w_j grad loss_j(x) + W_p grad
reg(x), W_p = sum_{j in p} w_j: the parts' gradients sum to grad f for any split. The ranges
come from ``part_sizes`` by largest remainder (ties to the lower index), so with n equal parts
(GC, uncoded) part i is exactly shard i and g_i = grad f_i / n: a coded run with ``uncoded``
is plain distributed GD.

A worker holds only the rows of the parts it may be assigned (``worker_parts``).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

__all__ = ["part_ranges", "worker_parts", "LogisticParts", "parts_for"]


def part_ranges(part_sizes: Sequence[float], rows: int) -> list[tuple[int, int]]:
    """Contiguous ``[start, stop)`` row ranges with sizes proportional to ``part_sizes``
    (largest remainder; every part gets at least one row)."""
    P = len(part_sizes)
    if rows < P:
        raise ValueError(f"the code splits each job into {P} parts but the data has {rows} rows; "
                         "use more data, fewer workers, or a code with fewer parts")
    total = float(sum(part_sizes))
    exact = [rows * s / total for s in part_sizes]
    sizes = [int(e) for e in exact]
    order = sorted(range(P), key=lambda p: (-(exact[p] - sizes[p]), p))
    for p in order[: rows - sum(sizes)]:
        sizes[p] += 1
    for p in range(P):  # a part may round to 0 rows: borrow one from the largest
        if sizes[p] == 0:
            sizes[max(range(P), key=lambda q: sizes[q])] -= 1
            sizes[p] = 1
    out, start = [], 0
    for s in sizes:
        out.append((start, start + s))
        start += s
    return out


def worker_parts(scheme, i: int) -> tuple[int, ...]:
    """Every part worker i may be assigned under ``scheme`` (the data it must hold).

    GC, uncoded, SR-SGC: the support of its GC row (a repeat is the same row of an older job).
    M-SGC: its W-1 D1 chunks and its coded row's support in each of the B D2 groups."""
    if scheme.name == "m-sgc":
        n, W = scheme.n, scheme.W
        d1 = tuple(i * (W - 1) + c for c in range(W - 1))
        base = n * (W - 1)
        d2 = tuple(base + g * n + p for g in range(scheme.B) for p in scheme.code.rows[i][0])
        return tuple(sorted(set(d1 + d2)))
    if hasattr(scheme, "code"):
        return tuple(sorted(scheme.code.rows[i][0]))
    raise ValueError(f"unknown scheme {getattr(scheme, 'name', scheme)!r}: cannot tell which parts worker {i} holds")


class LogisticParts:
    """Partial gradients of the EF21 papers' logistic regression over row ranges (module
    docstring). Holds only the parts in ``keep`` (default all), padded into ``A [P, m, d]``.

    ``grads(x, parts)`` -> ``[len(parts), d]``: g_p(x) for the listed (held) parts.
    """

    def __init__(self, A: Tensor, b: Tensor, n: int, reg: float, ranges: Sequence[tuple[int, int]],
                 keep: Optional[Sequence[int]] = None, dtype: torch.dtype = torch.float64):
        N, self.d = A.shape
        self.ranges = list(ranges)
        self.reg = float(reg)
        self.dtype = dtype
        q, r = divmod(N, n)  # numpy.array_split's shard sizes: the first r shards get q+1 rows
        shard_size = torch.tensor([q + 1] * r + [q] * (n - r), dtype=torch.float64)
        row_w = (1.0 / (n * shard_size)).repeat_interleave(shard_size.to(torch.int64))  # [N] w_j
        self.keep = tuple(range(len(self.ranges))) if keep is None else tuple(sorted(set(keep)))
        self.index = {p: k for k, p in enumerate(self.keep)}  # part -> row of the padded stack
        m = max((self.ranges[p][1] - self.ranges[p][0] for p in self.keep), default=1)
        P = len(self.keep)
        self.A = torch.zeros(P, m, self.d, dtype=dtype)
        self.b = torch.zeros(P, m, dtype=dtype)
        self.w = torch.zeros(P, m, dtype=dtype)
        Wp = torch.zeros(P, dtype=torch.float64)
        for k, p in enumerate(self.keep):
            s, e = self.ranges[p]
            self.A[k, : e - s] = A[s:e].to(dtype)
            self.b[k, : e - s] = b[s:e].to(dtype)
            self.w[k, : e - s] = row_w[s:e].to(dtype)
            Wp[k] = row_w[s:e].sum()
        self.W = Wp.to(dtype)  # [P] each part's share of the regulariser

    def grads(self, x: Tensor, parts: Tensor) -> Tensor:
        try:
            k = torch.tensor([self.index[int(p)] for p in parts.tolist()], dtype=torch.int64)
        except KeyError as e:
            raise ValueError(f"part {e.args[0]} is not held here (holds {self.keep})") from None
        A, b, w = self.A[k], self.b[k], self.w[k]
        z = A @ x  # [k, m]
        s = torch.sigmoid(-b * z)
        s = s.masked_fill_(s < torch.finfo(s.dtype).tiny * 2.0**50, 0.0)  # no subnormals (LogisticOracle)
        coef = -b * s * w  # d/dz of w log(1 + exp(-b z))
        reg_grad = self.reg * 2 * x / (1 + x * x) ** 2
        return torch.bmm(coef.unsqueeze(1), A).squeeze(1) + self.W[k].unsqueeze(1) * reg_grad  # [k, d]


def parts_for(workload, n: int, scheme, keep: Optional[Sequence[int]] = None, dtype: torch.dtype = torch.float64):
    """The partial-gradient oracle of ``workload`` split into ``scheme``'s parts (``keep``: the
    parts to hold, default all). Needs a workload whose data are rows: logreg."""
    if getattr(workload, "name", None) != "logreg":
        raise ValueError(f"coded training splits the data into the code's parts, which needs a row dataset with "
                         f"partial gradients (logreg); workload "
                         f"{getattr(workload, 'name', workload)!r} has none: use --workload logreg")
    A, b = workload.dataset()
    return LogisticParts(A, b, n, workload.reg, part_ranges(scheme.part_sizes, A.shape[0]), keep, dtype)
