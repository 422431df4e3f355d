"""Sparsifiers: Top-K, Rand-K, Perm-K (specs/ef-family.md section 2).

Selection is exact and vectorized over rows ``[N, d]``:

* Top-K on CPU: the native kernel (distopt/_native/topk.c, the same sets and the same
  threshold idea, one pass per row in cache) for stacks of rows and for lone rows longer than
  2^15 (split over threads), when a C compiler built it; the PyTorch path below otherwise, and
  for short lone rows (``torch.topk``) and other devices.
* Top-K: a per-row threshold keeps a little more than K candidates in one pass over x (in
  cache-sized pieces, see _chunked); the exact K-th largest magnitude among the candidates
  then selects. Ties at the K-th magnitude go to the lowest indices, so the set is a
  deterministic function of x; on tie-free data it is the set ``torch.topk`` returns.
  Thresholds: for short rows (a stack of workers' vectors), the K-th largest of ~2K group
  maxima -- never above the K-th largest magnitude, since K groups hold an entry at least that
  large, so every row keeps at least K candidates (~1.4K on Gaussian data); for long rows, an
  order statistic of a strided sample (tighter there), and rows where the sample
  over-estimates fall back to all coordinates. Either way the selection is exact.
* Rand-K: a uniformly random K-subset = the first K distinct values of a counter-based
  stream of uniform indices (exchangeability makes that set uniform). The stream depends only
  on (seed, step, worker), so the receiver regenerates the indices and only values travel.

Payload indices are sorted ascending and stored in the narrowest signed integer type that
holds d-1 (int16 up to 32767, else int32): the bits counted are the bits sent.
"""
from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, Optional

import torch
from torch import Tensor

from .. import _native
from ..noise import STREAM_INDICES, Noise, bits32, randint
from . import _chunked
from ._chunked import chunks
from .base import Compressor, Payload, check_finite

__all__ = ["TopK", "RandK", "PermK", "topk_select", "topk_indices", "random_subset"]


def _index_dtype(d: int) -> torch.dtype:
    return torch.int16 if d <= 1 << 15 else torch.int32


def _resolve_k(name: str, k: Optional[int], ratio: Optional[float], d: int) -> int:
    kk = k if k is not None else max(1, math.floor(ratio * d + 0.5))
    if kk > d:
        raise ValueError(f"{name}: k={kk} exceeds the vector length d={d}; use k <= {d} or ratio=<fraction of d>")
    return kk


def _check_k_ratio(name: str, k: Optional[int], ratio: Optional[float]) -> None:
    if (k is None) == (ratio is None):
        raise ValueError(f"{name}: give exactly one of k=<count> or ratio=<fraction in (0,1]>, e.g. '{name}:ratio=0.01'")
    if k is not None and k < 1:
        raise ValueError(f"{name}: k must be >= 1, got k={k}")
    if ratio is not None and not (0.0 < ratio <= 1.0):
        raise ValueError(f"{name}: ratio must be in (0, 1], got ratio={ratio}")


_INT = {2: torch.int16, 4: torch.int32, 8: torch.int64}  # the integer view of a float dtype


def _magnitude_mask(x: Tensor) -> int:
    """All bits but the sign of ``x``'s float format: ``bits(x) & mask`` = ``bits(|x|)``."""
    return (1 << (8 * x.element_size() - 1)) - 1


def _nonzero_bytes(flags: Tensor) -> Tensor:
    """Ascending positions of the nonzero bytes of an int8 ``flags`` (contiguous, numel a
    multiple of 8). Sparse flags: finds the nonzero 8-byte words first, then the bytes in
    them -- ~2x faster than ``nonzero`` on the bytes themselves."""
    words = flags.view(-1).view(torch.int64).nonzero().squeeze(1)
    at = flags.view(-1, 8)[words].view(-1).nonzero().squeeze(1)
    return words[at >> 3] * 8 + (at & 7)


def _candidates(x: Tensor, thr: Tensor) -> tuple[Tensor | None, Tensor, Tensor]:
    """Entries with |x| >= thr (per row ``[N, 1]``) of ``x: [N, d]``, row-major: (row, col, value),
    each ``[C]`` (row None when N = 1). One pass over x piece by piece (see _chunked), the hits' values read while
    their piece is still in cache. The test runs on the integer view of x -- for non-negative
    floats, integer order is float order -- because torch's comparisons into bool are slow passes:
    (bits(|x|) - bits(thr)) >> (width-1) is 0 at a hit, -1 elsewhere; +1 makes byte flags."""
    n, d = x.shape
    ity = _INT[x.element_size()]
    thr_bits = thr.to(x.dtype).view(ity)  # [N, 1]
    rows, cols, vals = [], [], []
    for c in chunks(n, d, x.device, scale=2):  # two live buffers of 4 and 1 bytes per element
        xs = x[c.rows, c.cols]
        t = torch.bitwise_and(xs.view(ity), _magnitude_mask(x), out=c.buf("t", ity))  # bits of |x|
        t -= thr_bits[c.rows]
        t >>= 8 * x.element_size() - 1
        flags = c.buf("flags", torch.int8, per=8)
        fw = flags[:, : c.w]
        fw.copy_(t)
        fw += 1
        hit = _nonzero_bytes(flags)  # in [r, w rounded up to 8] coordinates
        if c.r > 1:
            row, col = torch.div(hit, flags.shape[1], rounding_mode="floor"), hit % flags.shape[1]
            vals.append(xs[row, col])
            rows.append(row + c.rows.start)
            cols.append(col)
        else:
            vals.append(xs[0].index_select(0, hit))
            if n > 1:
                rows.append(torch.full_like(hit, c.rows.start))
            cols.append(hit + c.cols.start if c.cols.start else hit)
    return (_cat(rows) if n > 1 else None), _cat(cols), _cat(vals)


def _cat(ts: list[Tensor]) -> Tensor:
    return ts[0] if len(ts) == 1 else torch.cat(ts)


def _sample_size(d: int, sample: int = 16384) -> int:
    """Sampled magnitudes per row: ``sample``, or d/8 for shorter rows (>= 256)."""
    return max(256, min(sample, d // 8))


def _sampled(d: int, k: int, sample: int = 16384) -> bool:
    """Whether :func:`topk_select` goes through a sampled threshold (else: every coordinate):
    rows of at least 2048 coordinates keeping at most a fifth of them."""
    return k < d and d >= 2048 and k / d <= 0.2


def topk_select(x: Tensor, k: int, sample: int = 16384) -> tuple[Tensor, Tensor]:
    """(values, indices) ``[N, k]`` of the k largest |x| per row of ``x: [N, d]``; indices
    ascending (int64). Ties at the k-th magnitude are broken towards lower indices.

    On the sampled path, magnitudes are ranked by their bit patterns, so NaN and inf rank
    above every finite value: x has a non-finite entry iff the values returned do."""
    n, d = x.shape
    if k >= d:
        return x.clone(), torch.arange(d, device=x.device).expand(n, d)
    f = k / d
    if _native_stack(x, k):
        vals, idx, _ = _native.topk_rows(x.contiguous(), k)
        return vals, idx
    if _grouped(n, d, k, sample):
        return _select(x, k, _group_threshold(x, k))
    if not _sampled(d, k, sample) or (n == 1 and d <= _SHORT_ROW):
        return _topk_small(x, k)
    stride = d // _sample_size(d, sample)
    s = x[:, ::stride].abs()  # [N, m] strided sample (deterministic, no RNG)
    m = s.shape[1]
    # aim for ~1.25k candidates plus 4 standard deviations of the sample estimate
    frac = min(1.0, 1.25 * f + 4.0 * math.sqrt(f / m))
    r = m - int(math.ceil(frac * m)) + 1  # thr = r-th smallest sampled magnitude
    if r <= 1:
        return _topk_small(x, k)
    return _select(x, k, s.kthvalue(r, dim=1, keepdim=True).values)


def _native_stack(x: Tensor, k: int) -> bool:
    """Whether :func:`topk_select` takes the native kernel (distopt/_native, same sets): on CPU,
    float32/float64, k < d, when the kernel is built, for a stack (2+ rows, at least 2^16
    entries) or one row longer than _SHORT_ROW whose groups the kernel can split over threads
    (an OpenMP build). Measured, 2 threads: a 1000 x 10^4 stack (k = 100) 3.1-3.8 ms vs 16 ms on
    the torch path below; one row of 10^7 (k = 10^5) 6-8 ms vs ~10 ms (in a warm process)."""
    n, d = x.shape
    if k >= d or (d <= _SHORT_ROW if n == 1 else n * d < 1 << 16):  # cheap tests first: lone short rows are common
        return False
    if x.dtype not in (torch.float32, torch.float64) or x.device.type != "cpu":
        return False
    return _native.parallel_row() if n == 1 else _native.available()


def _grouped(n: int, d: int, k: int, sample: int = 16384) -> bool:
    """Whether :func:`topk_select` takes its threshold from group maxima: a stack (at least
    2^18 entries; smaller ones go to torch.topk) of short rows (whose sample of d/8 < ``sample``
    magnitudes would be loose), with groups of at least 8 coordinates, 2K of them. Measured on
    a stack of 1000 x 2000 (k = 20): 5.7 ms vs torch.topk 7.6; 10,000 x 1000 (k = 10): 26 vs 54."""
    return n > 1 and n * d >= 1 << 18 and d < 8 * sample and d // (2 * k) >= 8


def _group_threshold(x: Tensor, k: int) -> Tensor:
    """Per row of ``x: [N, d]``, the k-th largest of the maxima of |x| over G = d // gs groups
    of gs = d // 2k consecutive coordinates (the last d mod gs stay out): ``[N, 1]``. At least k
    groups have a maximum >= it, so at least k entries of the row do: it never over-estimates
    the k-th largest magnitude. Computed on the integer view of |x| (integer order is float
    order for non-negative floats; NaN ranks above inf), a block of rows at a time so the
    integer copy stays in cache."""
    n, d = x.shape
    gs = d // (2 * k)
    G = d // gs
    ity = _INT[x.element_size()]
    mask = _magnitude_mask(x)
    maxima = torch.empty(n, G, dtype=ity, device=x.device)  # [N, G] group maxima (bits)
    step = max(1, (2 * _chunked.CHUNK) // d)
    buf = torch.empty(min(n, step), G * gs, dtype=ity, device=x.device)
    for r0 in range(0, n, step):
        r1 = min(n, r0 + step)
        b = torch.bitwise_and(x[r0:r1, : G * gs].view(ity), mask, out=buf[: r1 - r0])
        torch.amax(b.view(r1 - r0, G, gs), 2, out=maxima[r0:r1])
    return maxima.kthvalue(G - k + 1, dim=1, keepdim=True).values.view(x.dtype)


def _select(x: Tensor, k: int, thr: Tensor) -> tuple[Tensor, Tensor]:
    """The exact top-k of each row of ``x: [N, d]`` from the candidates |x| >= ``thr`` [N, 1].
    Rows where that is a poor filter go row-wise through _topk_small instead: a zero threshold
    (fewer than k nonzeros: every coordinate would be a candidate), fewer than k candidates (a
    sampled threshold that over-estimates) or a huge tie at the threshold (in a stack)."""
    n, d = x.shape
    dense = thr.reshape(-1) == 0
    if not bool(dense.any()):
        row, col, v = _candidates(x, thr)
        counts = _row_sums(None, row, n, col)
        dense = counts < k
        if n > 1:
            dense |= counts > max(8 * k, 4096)
        if not bool(dense.any()):
            return _select_candidates(x, k, row, col, v, counts)
    vals = torch.empty(n, k, dtype=x.dtype, device=x.device)
    idx = torch.empty(n, k, dtype=torch.int64, device=x.device)
    for rows, rest in ((dense.nonzero().squeeze(1), False), ((~dense).nonzero().squeeze(1), True)):
        if rows.numel():
            xr = x.index_select(0, rows)
            if rest:  # thresholds that filter well: no row of these goes row-wise again
                vals[rows], idx[rows] = _select(xr, k, thr.index_select(0, rows))
            else:
                vals[rows], idx[rows] = _topk_small(xr, k)
    return vals, idx


def _select_candidates(x: Tensor, k: int, row: Tensor | None, col: Tensor, v: Tensor,
                       counts: Tensor) -> tuple[Tensor, Tensor]:
    """The top-k of each row among its candidates (row, col, value) ``[C]``, row-major, at
    least k per row (``counts`` [N])."""
    n = x.shape[0]
    # magnitudes as integers (for non-negative floats, integer order is float order; torch
    # sorts integers by radix, ~10x faster than floats)
    ity = _INT[x.element_size()]
    val = torch.bitwise_and(v.view(ity), _magnitude_mask(x))
    if row is None:
        kth = torch.sort(val).values[val.numel() - k]  # k-th largest: a scalar
    else:
        kth = _kth_largest_per_row(val, row, counts, k)[row]  # [C]: k-th largest of its row
    sel = val >= kth
    if not bool((_row_sums(sel, row, n) == k).all()):  # ties at the k-th magnitude: lowest indices first
        row = torch.zeros_like(col) if row is None else row
        gt = val > kth
        eq = val == kth
        zeros = torch.zeros(n, dtype=torch.int64, device=x.device)
        need = k - zeros.index_add(0, row, gt.to(torch.int64))  # [N] how many ties to take
        eq64 = eq.to(torch.int64)
        eq_tot = zeros.index_add(0, row, eq64)
        eq_rank = torch.cumsum(eq64, 0) - (torch.cumsum(eq_tot, 0) - eq_tot)[row]  # 1-based within row
        sel = gt | (eq & (eq_rank <= need[row]))
    at = sel.nonzero().squeeze(1)
    return v.index_select(0, at).reshape(n, k), col.index_select(0, at).reshape(n, k)


def _kth_largest_per_row(val: Tensor, row: Tensor, counts: Tensor, k: int) -> Tensor:
    """The k-th largest of each row's candidates ``[N]``: ``val`` [C] non-negative integer
    magnitudes, grouped by ``row`` [C] (ascending), ``counts`` [N] >= k per row. The candidates
    are laid out in a padded ``[N, max count]`` table (padding -1 ranks below every magnitude)
    and one row-wise kthvalue selects -- a few small passes instead of sorting all C."""
    n = counts.numel()
    width = int(counts.max())
    start = torch.cumsum(counts, 0) - counts  # [N] first candidate of each row
    pos = torch.arange(val.numel(), device=val.device) - start[row]  # [C] place within its row
    table = torch.full((n, width), -1, dtype=val.dtype, device=val.device)
    table[row, pos] = val
    return table.kthvalue(width - k + 1, dim=1).values


def _row_sums(mask: Tensor | None, row: Tensor | None, n: int, col: Tensor | None = None) -> Tensor:
    """Per-row count ``[N]`` of the candidates (``mask`` None: give their ``col``) or of those
    where ``mask`` holds; ``row`` None: a single row."""
    if row is None:
        return mask.sum().view(1) if mask is not None else torch.full((1,), col.numel(), device=col.device)
    if mask is None:
        return torch.bincount(row, minlength=n)
    return torch.zeros(n, dtype=torch.int64, device=row.device).index_add(0, row, mask.to(torch.int64))


def topk_indices(x: Tensor, k: int, sample: int = 16384) -> Tensor:
    """Indices ``[N, k]`` (ascending, int64) of the k largest |x| per row of ``x: [N, d]``.

    Ties at the k-th magnitude are broken towards lower indices.
    """
    return topk_select(x, k, sample)[1]


_SHORT_ROW = 1 << 15  # a lone row up to this length: torch.topk is faster than the threshold path


def _topk_small(x: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(values, indices) ``[N, k]`` (indices ascending) for small rows, large k/d or a lone short row:
    ``torch.topk``, whose pick among entries tied at the k-th magnitude is unspecified; rows
    with such a tie that is not taken whole go through the tie-breaking pass (_topk_dense)."""
    a = x.abs()
    top = torch.topk(a, k, dim=1, sorted=False)
    idx = top.indices.sort(dim=1).values
    kth = top.values.amin(1, keepdim=True)  # [N, 1] (a row with NaN: NaN, equal to nothing)
    tied = ((top.values == kth).sum(1) != (a == kth).sum(1)).nonzero().squeeze(1)
    if tied.numel():
        idx[tied] = _topk_dense(a.index_select(0, tied), k, kth.index_select(0, tied))
    return x.gather(1, idx), idx


def _topk_dense(a: Tensor, k: int, kth: Tensor) -> Tensor:
    """Exact selection over every coordinate of magnitudes ``a`` [N, d] given each row's k-th
    largest ``kth`` [N, 1]: the larger ones, then ties at kth by lowest index."""
    n, d = a.shape
    gt = a > kth
    eq = a == kth
    need = k - gt.sum(1, keepdim=True)
    sel = gt | (eq & (torch.cumsum(eq, 1) <= need))  # ties: lowest indices first
    return sel.nonzero()[:, 1].reshape(n, k)


def random_subset(noise: Noise, d: int, k: int, device=None) -> Tensor:
    """A uniformly random k-subset of range(d) per worker of ``noise``: ``[rows, k]``, ascending.

    Small k: the first k distinct values of the worker's stream of uniform indices (the
    stream is infinite in principle; we extend it until k distinct values appear, and the
    result does not depend on how far we drew). Large k (> d/4): the k smallest of d random
    keys. Either way the result depends only on (seed, step, worker, d, k). Rows are handled
    together through 1-D sorts of composite keys (row, value[, position]), which torch runs
    much faster than row-wise sorts of a 2-D tensor; the small-k path needs one sort, and
    its output comes out ascending.
    """
    n_rows = noise.workers().numel()
    if k >= d:
        return torch.arange(d, device=device).expand(n_rows, d)
    if 4 * k > d:
        keys = bits32(noise, d, STREAM_INDICES, device).to(torch.int64) & 0xFFFFFFFF  # [R, d]
        if n_rows * d >= 1 << 31:  # composite key would overflow int64: row-wise stable sort
            return torch.sort(keys, dim=1, stable=True).indices[:, :k].sort(dim=1).values
        # order by (row, key, index): keys collide with probability ~d^2/2^33, the index breaks ties
        rowi = torch.arange(n_rows, device=keys.device).unsqueeze(1)
        comp = ((rowi << 32 | keys) * d + torch.arange(d, device=keys.device)).reshape(-1)
        return (comp.sort().values % d).reshape(n_rows, d)[:, :k].sort(dim=1).values
    m = int(k * (1.0 + k / d) + 8 * math.sqrt(k) + 16)
    while True:
        draws = randint(noise, m, d, STREAM_INDICES, device)  # [R, m]
        if n_rows > 1:
            draws += (torch.arange(n_rows, device=draws.device) * d).unsqueeze(1)  # (row, value)
        key = draws.view(-1)
        if n_rows * d <= 1 << 31:
            key = key.to(torch.int32)  # sorts twice as fast as int64
        # one stable sort orders the draws by (row, value, draw position)
        val, at = torch.sort(key, stable=True)
        first = torch.ones_like(val, dtype=torch.bool)
        torch.ne(val[1:], val[:-1], out=first[1:])  # first occurrence of a value in its row
        # back in draw order: a draw is new unless it repeats an earlier draw of its row;
        # the kept draws are the new ones among each row's first k new ones
        new = torch.empty(n_rows * m, dtype=torch.int32, device=draws.device).scatter_(0, at, first.to(torch.int32))
        seen = torch.cumsum(new.view(n_rows, m), 1, dtype=torch.int32)  # distinct values so far
        if bool((seen[:, -1] >= k).all()):
            keep = first & (seen.view(-1).index_select(0, at) <= k)  # in (row, value) order: rows ascending
            return (val[keep] % d).to(torch.int64).view(n_rows, k)
        m *= 2


@dataclasses.dataclass(frozen=True)
class TopK(Compressor):
    """Top-K: keep the K largest |x_j|. Biased, deterministic, alpha = K/d for every x.

    Payload: K values (dtype of x) + K indices. ``k=`` or ``ratio=`` (K = round(ratio*d)).
    """

    k: Optional[int] = None
    ratio: Optional[float] = None

    name: ClassVar[str] = "topk"
    row_sparse: ClassVar[bool] = True
    formula: ClassVar[str] = "alpha = K/d"
    bits_per_coord: ClassVar[str] = "K/d * (32 value + 16|32 index)"
    summary: ClassVar[str] = "K largest magnitudes"

    def __post_init__(self):
        _check_k_ratio(self.name, self.k, self.ratio)

    def k_for(self, d: int) -> int:
        return _resolve_k(self.name, self.k, self.ratio, d)

    def validate(self, d: int) -> None:
        super().validate(d)
        self.k_for(d)

    def alpha(self, d: int) -> float:
        return self.k_for(d) / d

    def compress(self, x: Tensor, rng: Noise | None = None) -> Payload:
        rows, lead = self._start(x, check=False)
        d = rows.shape[1]
        # these paths rank NaN and inf above every finite magnitude: the values tell
        sampled = _sampled(d, self.k_for(d)) or _native_stack(rows, self.k_for(d))
        if not sampled:
            check_finite(self.name, rows)
        vals, idx = topk_select(rows, self.k_for(d))
        if sampled and not bool(torch.isfinite(vals).all()):  # a NaN or inf in x is among vals
            check_finite(self.name, rows)
        k = idx.shape[1]
        return vals.reshape(*lead, k), idx.to(_index_dtype(d)).reshape(*lead, k)

    def compress_shift(self, target: Tensor, shift: Tensor, donate: bool = False) -> Optional[tuple[Payload, Tensor]]:
        """EF21's step in one native pass per row (distopt/_native), for a CPU stack ``[n, d]``
        or one long row ``[d]`` (a DDP bucket): the payload of Top-K(target - shift) and shift
        + its value, the same bits as the two-step form. None where the kernel does not apply.
        ``donate``: the new shift is ``shift`` itself, its k entries per row updated in place."""
        fused = self._fused(target, [shift], True, donate=donate)
        return None if fused is None else (fused[0], fused[1])

    def compress_error_shift(self, grad: Tensor, shift: Tensor, error: Tensor, eta: float, learn_shift: bool = True,
                             donate: bool = False) -> Optional[tuple[Payload, Optional[Tensor], Tensor]]:
        """EControl's step in one native pass per row: D = Top-K(eta error + (grad - shift)),
        shift + D, error + (grad - shift) - D, the same bits as the composed torch ops.
        ``donate``: shift + D is ``shift`` itself, updated in place."""
        return self._fused(grad, [shift, error], learn_shift, eta, donate=donate)

    def compress_error(self, grad: Tensor, error: Tensor, scale: float) -> Optional[tuple[Payload, Tensor]]:
        """EF14's step in one native pass per row: D = Top-K(error + scale grad) and error +
        scale grad - D, the same bits as the composed torch ops."""
        fused = self._fused(grad, [None, error], False, 1.0, scale)
        return None if fused is None else (fused[0], fused[2])

    def _fused(self, a: Tensor, others: list, want_out: bool, eta: float = 0.0, scale: float = 1.0,
               donate: bool = False):
        """The native kernel on ``a`` and ``others`` = [b], [b, c] or [None, c] (same shape):
        (payload, out or None, eout or None), or None where it does not apply. ``donate``
        (with ``want_out``): out = b + D is built in b's memory -- the kernel adds each row's k
        entries in place right after selecting them, while the row is in cache (the same float
        adds as the streamed form's); this skips writing a fresh [n, d] out, most of a round's
        writes. A donated b is given up: after a NaN or inf its finite rows have been updated
        (the rows with one are left as they were, so the check below still finds them)."""
        dim = a.dim()
        if dim == 1 and a.shape[0] <= _SHORT_ROW:  # a short lone row: torch.topk's (cheap test first)
            return None
        if dim not in (1, 2) or any(t is not None and (t.shape != a.shape or t.dtype != a.dtype) for t in others):
            return None
        rows = a.reshape(-1, a.shape[-1])
        d = rows.shape[1]
        k = self.k_for(d)
        if not _native_stack(rows, k):
            return None
        b, c = (None if t is None else t.reshape(rows.shape).contiguous() for t in (others + [None])[:2])
        # donated: out is b, shift's own memory where shift was contiguous (else a copy of it)
        out = (b if donate else torch.empty_like(b)) if want_out else None
        eout = torch.empty_like(c) if c is not None else None
        vals, idx, bad = _native.topk_rows(rows.contiguous(), k, b, out, c, eta, eout, scale)
        if bool(bad.any()):  # name the first bad row, as compress would: r as the kernel formed it
            diff = a - others[0] if b is not None else scale * a
            check_finite(self.name, diff if c is None else eta * others[1] + diff)
        lead = a.shape[:-1]
        payload = (vals.reshape(*lead, k), idx.to(_index_dtype(d)).reshape(*lead, k))
        return payload, *(None if t is None else t.reshape(a.shape) for t in (out, eout))

    def decompress(self, p, numel, rng=None, dtype=None) -> Tensor:
        vals, idx = p
        out = torch.zeros(*vals.shape[:-1], numel, dtype=vals.dtype, device=vals.device)
        out.scatter_(-1, idx.to(torch.int64), vals)
        return out if dtype is None else out.to(dtype)

    def decompress_add(self, out, p, numel, rng=None, scale=1.0):
        """``scale``: a number, or one per row ``[n]`` of a stacked payload (weighted sums)."""
        vals, idx = p
        v = vals.to(out.dtype)
        if isinstance(scale, Tensor):
            v = v * scale.to(out.dtype).reshape(-1, 1)
        elif scale != 1.0:
            v = v * scale
        return out.index_add_(0, idx.reshape(-1).to(torch.int64), v.reshape(-1))

    def add_into(self, out, p, numel, rng=None, scale=1.0):
        vals, idx = p  # out[i, idx[i]] += scale * vals[i]: the same sums as out + scale * decompress(p)
        v = vals.to(out.dtype)
        return out.scatter_add_(-1, idx.to(torch.int64), v if scale == 1.0 else v * scale)


@dataclasses.dataclass(frozen=True)
class RandK(Compressor):
    """Rand-K: keep K uniformly random coordinates. Only the K values travel: the receiver
    draws the same indices from the shared (seed, step, worker).

    Unscaled: biased, alpha = K/d (in expectation, with equality). ``scaled=true``: (d/K) x_S,
    unbiased, omega = d/K - 1. ``shared=true``: every worker uses the same indices (drawn from
    (seed, step) only), so payloads are summable and can be all-reduced.
    """

    k: Optional[int] = None
    ratio: Optional[float] = None
    scaled: bool = False
    shared: bool = False

    name: ClassVar[str] = "randk"
    random: ClassVar[bool] = True
    formula: ClassVar[str] = "alpha = K/d; scaled: omega = d/K - 1"
    bits_per_coord: ClassVar[str] = "K/d * 32 (indices regenerated from the seed)"
    summary: ClassVar[str] = "K uniformly random coordinates (scaled=true: unbiased)"

    def __post_init__(self):
        _check_k_ratio(self.name, self.k, self.ratio)

    @property
    def unbiased(self) -> bool:  # type: ignore[override]
        return self.scaled

    @property
    def summable(self) -> bool:  # type: ignore[override]
        return self.shared

    def k_for(self, d: int) -> int:
        return _resolve_k(self.name, self.k, self.ratio, d)

    def validate(self, d: int) -> None:
        super().validate(d)
        self.k_for(d)

    def alpha(self, d: int) -> float:
        return self.k_for(d) / d

    def omega(self, d: int) -> float:
        if not self.scaled:
            return super().omega(d)
        return d / self.k_for(d) - 1.0

    def _indices(self, rng: Noise, d: int, device) -> Tensor:
        noise = rng.shared() if self.shared else rng
        return random_subset(noise, d, self.k_for(d), device=device)

    def compress(self, x: Tensor, rng: Noise | None = None) -> Payload:
        rng = self._need_rng(rng)
        rows, lead = self._start(x)
        idx = self._indices(rng, rows.shape[1], rows.device)  # [rows or 1, k]
        if idx.shape[0] != rows.shape[0]:
            if idx.shape[0] != 1:
                raise ValueError(f"randk: rng has {idx.shape[0]} workers but x has {rows.shape[0]} rows")
            idx = idx.expand(rows.shape[0], -1)
        return (rows.gather(1, idx).reshape(*lead, idx.shape[1]),)

    def decompress(self, p, numel, rng=None, dtype=None) -> Tensor:
        rng = self._need_rng(rng)
        vals = p[0]
        v2 = vals.reshape(-1, vals.shape[-1])
        idx = self._indices(rng, numel, vals.device).expand(v2.shape[0], -1)
        out = torch.zeros(v2.shape[0], numel, dtype=vals.dtype, device=vals.device)
        out.scatter_(1, idx, v2)
        if self.scaled:
            out *= numel / idx.shape[1]
        out = out.reshape(*vals.shape[:-1], numel)
        return out if dtype is None else out.to(dtype)

    def decompress_add(self, out, p, numel, rng=None, scale=1.0):
        vals = p[0].reshape(-1).to(out.dtype)
        idx = self._indices(self._need_rng(rng), numel, vals.device).reshape(-1)
        if self.scaled:
            scale = scale * numel / idx.numel()
        return out.index_add_(0, idx, vals if scale == 1.0 else vals * scale)


@dataclasses.dataclass(frozen=True)
class PermK(Compressor):
    """Perm-K (Szlendak, Tyurin, Richtarik 2022): a random permutation shared by all workers
    splits the d coordinates into n blocks; worker i sends block i, scaled by n.

    Unbiased, omega = n - 1 per worker, and jointly (1/n) sum_i C_i(x) = x exactly when every
    worker holds the same x. Blocks have size floor(d/n) or ceil(d/n) (the first d mod n
    workers get one more). ``n`` defaults to the number of workers the engine reports.
    The permutation costs a sort of d random keys per step.
    """

    n: Optional[int] = None

    name: ClassVar[str] = "permk"
    unbiased: ClassVar[bool] = True
    random: ClassVar[bool] = True
    formula: ClassVar[str] = "omega = n - 1 (jointly exact mean)"
    bits_per_coord: ClassVar[str] = "32/n"
    summary: ClassVar[str] = "disjoint random blocks, one per worker"

    def __post_init__(self):
        if self.n is not None and self.n < 1:
            raise ValueError(f"permk: n must be >= 1, got n={self.n}")

    def _n(self, rng: Noise | None) -> int:
        n = self.n if self.n is not None else (rng.n_workers if rng is not None else None)
        if n is None:
            raise ValueError("permk needs the number of workers: 'permk:n=<workers>' or Noise(n_workers=...)")
        return n

    def omega(self, d: int) -> float:
        if self.n is None:
            raise ValueError("permk: omega = n - 1 needs n; give 'permk:n=<workers>'")
        return self.n - 1.0

    def _blocks(self, rng: Noise, d: int, device) -> tuple[Tensor, Tensor, int]:
        """(coordinates of each row's block ``[rows, q]`` padded with d, sizes ``[rows]``, n)."""
        n = self._n(rng)
        keys = bits32(rng.shared(), d, STREAM_INDICES, device)[0]
        perm = torch.sort(keys, stable=True).indices  # [d] shared permutation
        q, extra = divmod(d, n)
        w = rng.workers().to(torch.int64).to(device)
        if bool(((w < 0) | (w >= n)).any()):
            raise ValueError(f"permk: worker ids must be in [0, {n}), got ids from {int(w.min())} to {int(w.max())}; "
                             "set 'permk:n=<workers>' to the number of workers")
        sizes = q + (w < extra).to(torch.int64)
        starts = w * q + torch.clamp(w, max=extra)
        width = q + (1 if extra else 0)
        off = torch.arange(width, device=device)
        pos = starts.unsqueeze(1) + off  # [rows, width]
        valid = off.unsqueeze(0) < sizes.unsqueeze(1)
        coords = torch.where(valid, perm[pos.clamp(max=d - 1)], torch.full_like(pos, d))
        return coords.sort(dim=1).values, sizes, n

    def compress(self, x: Tensor, rng: Noise | None = None) -> Payload:
        """Payload: the block values of every row, concatenated (``[q_i]`` for one worker);
        the receiver knows the block sizes from the shared seed, so no padding travels."""
        rng = self._need_rng(rng)
        rows, lead = self._start(x)
        coords, sizes, _ = self._blocks(rng, rows.shape[1], rows.device)
        if coords.shape[0] != rows.shape[0]:
            raise ValueError(f"permk: rng has {coords.shape[0]} workers but x has {rows.shape[0]} rows")
        valid = coords < rows.shape[1]
        return (rows.gather(1, coords.clamp(max=rows.shape[1] - 1))[valid],)

    def decompress(self, p, numel, rng=None, dtype=None) -> Tensor:
        rng = self._need_rng(rng)
        vals = p[0]
        coords, _, n = self._blocks(rng, numel, vals.device)
        valid = coords < numel
        out = torch.zeros(coords.shape[0], numel + 1, dtype=vals.dtype, device=vals.device)
        block = torch.zeros(coords.shape, dtype=vals.dtype, device=vals.device)
        block[valid] = vals * n
        out.scatter_(1, coords, block)
        out = out[:, :numel]
        out = out if rng.batched else out[0]
        return out if dtype is None else out.to(dtype)
