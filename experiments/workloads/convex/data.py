"""Data for the EF papers' convex and PL problems: LIBSVM files, scikit-learn's bundled
datasets (no download), a synthetic generator, and the contiguous split of the EF21 code.

``split`` cuts rows, in file order, into n contiguous shards exactly as ``numpy.array_split``
does (the first N mod n shards get one extra row) -- the EF21 repository's
``generate_data.py`` split, without shuffling.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

LABEL_MAPS = {
    frozenset({-1.0, 1.0}): {-1.0: -1.0, 1.0: 1.0},
    frozenset({0.0, 1.0}): {0.0: -1.0, 1.0: 1.0},
    frozenset({1.0, 2.0}): {1.0: -1.0, 2.0: 1.0},
}


def read_libsvm(path: str | Path, features: int | None = None) -> tuple[Tensor, Tensor]:
    """(A [N, d] float64 dense, b [N] in {-1, +1}) from a LIBSVM/SVMlight file.

    Rows are ``label idx:value ...`` with 1-based, increasing indices (sparse rows are
    densified); blank lines and ``#`` comments are skipped. Labels in {-1,1}, {0,1} or {1,2}
    map to -1/+1. A malformed line raises ValueError naming the file and line number.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"data file {str(path)!r} does not exist; give a LIBSVM file, 'sklearn:breast_cancer', or omit --data for generated data")
    labels: list[float] = []
    rows: list[tuple[list[int], list[float]]] = []
    max_idx = 0
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            try:
                label = float(parts[0])
            except ValueError:
                raise ValueError(f"{path}:{lineno}: label {parts[0]!r} is not a number (expected 'label idx:value ...')") from None
            idx, val = [], []
            prev = 0
            for tok in parts[1:]:
                k, sep, v = tok.partition(":")
                try:
                    i, x = int(k), float(v)
                except ValueError:
                    raise ValueError(f"{path}:{lineno}: malformed feature {tok!r} (expected idx:value with a 1-based integer idx)") from None
                if not sep or i < 1:
                    raise ValueError(f"{path}:{lineno}: malformed feature {tok!r} (expected idx:value with a 1-based integer idx)")
                if i <= prev:
                    raise ValueError(f"{path}:{lineno}: feature indices must increase ({prev} then {i})")
                prev = i
                idx.append(i - 1)
                val.append(x)
            max_idx = max(max_idx, prev)
            labels.append(label)
            rows.append((idx, val))
    if not rows:
        raise ValueError(f"{path}: no data rows")
    d = features if features is not None else max_idx
    if max_idx > d:
        raise ValueError(f"{path}: feature index {max_idx} exceeds features={d}")
    A = torch.zeros(len(rows), d, dtype=torch.float64)
    for r, (idx, val) in enumerate(rows):
        if idx:
            A[r, torch.tensor(idx)] = torch.tensor(val, dtype=torch.float64)
    return A, map_labels(torch.tensor(labels, dtype=torch.float64), str(path))


def map_labels(y: Tensor, source: str = "data") -> Tensor:
    kinds = frozenset(float(v) for v in torch.unique(y))
    for allowed, mapping in LABEL_MAPS.items():
        if kinds <= allowed:
            return torch.tensor([mapping[float(v)] for v in y], dtype=torch.float64)
    raise ValueError(f"{source}: labels {sorted(kinds)[:6]} are not binary in {{-1,1}}, {{0,1}} or {{1,2}}")


def load_sklearn(name: str) -> tuple[Tensor, Tensor]:
    """A binary dataset bundled with scikit-learn (no download), features unnormalised."""
    from sklearn import datasets

    loaders = {"breast_cancer": datasets.load_breast_cancer}
    if name not in loaders:
        raise ValueError(f"unknown sklearn dataset {name!r}; valid: {', '.join(loaders)}")
    X, y = loaders[name](return_X_y=True)
    return torch.tensor(X, dtype=torch.float64), map_labels(torch.tensor(y, dtype=torch.float64), f"sklearn:{name}")


def generate(rows: int, features: int, seed: int, scale: float = 1.0, scaled_frac: float = 0.0) -> tuple[Tensor, Tensor]:
    """Synthetic binary classification: a_j ~ N(0, I), b_j = sign(a_j.w* + 0.5 noise); the
    first ``scaled_frac`` of the rows multiplied by ``scale`` -- with a contiguous split they
    land on the first workers and make their L_i larger (R4: 5 of 100 clients x10)."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(rows, features, generator=g, dtype=torch.float64)
    w = torch.randn(features, generator=g, dtype=torch.float64)
    b = torch.sign(A @ w + 0.5 * torch.randn(rows, generator=g, dtype=torch.float64))
    b[b == 0] = 1.0
    k = int(round(scaled_frac * rows))
    A[:k] *= scale
    return A, b


def split(A: Tensor, b: Tensor, n: int) -> list[tuple[Tensor, Tensor]]:
    """Contiguous shards exactly as ``numpy.array_split`` makes them."""
    N = A.shape[0]
    if n > N:
        raise ValueError(f"{n} workers but only {N} data rows: use --workers <= {N}")
    if n < 1:
        raise ValueError(f"--workers must be >= 1, got {n}")
    q, r = divmod(N, n)
    sizes = [q + 1] * r + [q] * (n - r)
    out, start = [], 0
    for s in sizes:
        out.append((A[start:start + s], b[start:start + s]))
        start += s
    return out
