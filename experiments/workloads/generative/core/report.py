"""What the family's mechanism checks share: seed counts, one-thread blocks, mean ± sd tables
per arm, and figures (image grids, 2-D scatter plots) written atomically."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Optional

from torch import Tensor

from distopt._threads import single_thread  # noqa: F401  (re-exported for the workloads)
from experiments.report import arm_rows as arm_table  # noqa: F401
from experiments.report import mean  # noqa: F401

__all__ = ["seeds_or", "single_thread", "arm_table", "mean", "plot_images", "plot_points", "save_figure"]


def seeds_or(seeds: Optional[int], default: int = 3) -> int:
    k = default if seeds is None else int(seeds)
    if k < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")
    return k


def save_figure(fig, path: Path) -> str:
    from distopt._io import atomic_write_bytes
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return str(path)


def plot_images(rows: dict[str, Tensor], path: Path, n: int = 12) -> str:
    """One row of 8x8 images per entry (images ``[B, 64]`` or ``[B, 1, 8, 8]`` in [-1, 1])."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), n, figsize=(n * 0.7, len(rows) * 0.8 + 0.3), squeeze=False)
    for r, (name, imgs) in enumerate(rows.items()):
        imgs = imgs.detach().reshape(-1, 8, 8)
        for c in range(n):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(imgs):
                ax.imshow(imgs[c].float().numpy(), cmap="gray", vmin=-1, vmax=1)
        axes[r][0].set_title(name, fontsize=7, loc="left")
    return save_figure(fig, path)


def plot_points(sets: dict[str, Tensor], path: Path, lim: float = 3.0) -> str:
    """Side-by-side scatter plots of 2-D samples ``[n, 2]``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(sets), figsize=(3 * len(sets), 3), squeeze=False)
    for ax, (name, x) in zip(axes[0], sets.items()):
        x = x.detach().float()
        ax.scatter(x[:, 0].numpy(), x[:, 1].numpy(), s=2, alpha=0.5)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_title(name, fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
