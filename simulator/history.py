"""A run's history: one row per evaluated round, written atomically as ``history.csv`` next to
``config.json``, plus plots of grad_norm_sq and loss against rounds and against bits.

Rows carry at least ``round, loss, grad_norm_sq, bits_up, bits_down`` (bits cumulative, per
worker, mean over workers). Writes are atomic (temp file + rename), so a crash mid-run leaves
the last complete history on disk; ``flush`` is throttled so long runs do not rewrite the file
more than about once a second.
"""
from __future__ import annotations

import csv
import io
import math
import os
import time
from pathlib import Path
from typing import Any, Optional

from distopt._io import atomic_write_json, atomic_write_text

REQUIRED = ["round", "loss", "grad_norm_sq", "bits_up", "bits_down"]


def write_json(path: Path, obj: Any) -> None:
    atomic_write_json(path, obj)


class History:
    def __init__(self, out: Optional[str | os.PathLike] = None, min_interval: float = 1.0):
        self.rows: list[dict[str, Any]] = []
        self.out = Path(out) if out is not None else None
        self.min_interval = min_interval
        self._last_flush = 0.0
        self.columns: list[str] = list(REQUIRED)

    def log(self, row: dict[str, Any]) -> None:
        for k in row:
            if k not in self.columns:
                self.columns.append(k)
        self.rows.append(row)
        if self.out is not None and time.monotonic() - self._last_flush >= self.min_interval:
            self.flush()

    def column(self, name: str) -> list[float]:
        return [r.get(name, math.nan) for r in self.rows]

    @property
    def last(self) -> dict[str, Any]:
        return self.rows[-1] if self.rows else {}

    def csv_text(self) -> str:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.columns, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in self.rows:
            w.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in r.items()})
        return buf.getvalue()

    def flush(self) -> None:
        if self.out is None:
            return
        atomic_write_text(self.out / "history.csv", self.csv_text())
        self._last_flush = time.monotonic()

    @staticmethod
    def read(path: str | os.PathLike) -> list[dict[str, Any]]:
        """Rows of a written ``history.csv`` (numbers parsed)."""
        def conv(v: str):
            try:
                return int(v)
            except ValueError:
                try:
                    return float(v)
                except ValueError:
                    return v

        p = Path(path)
        with open(p / "history.csv" if p.is_dir() else p) as f:
            return [{k: conv(v) for k, v in r.items()} for r in csv.DictReader(f)]

    def plot(self, path: Optional[str | os.PathLike] = None, title: str = "") -> Optional[Path]:
        """grad_norm_sq and loss against rounds and against uplink bits (log y)."""
        if not self.rows:
            return None
        path = Path(path) if path is not None else (self.out / "history.png" if self.out else None)
        if path is None:
            return None
        return plot_runs({title or "run": self.rows}, path)


def plot_runs(runs: dict[str, list[dict[str, Any]]], path: str | os.PathLike, metrics=("grad_norm_sq", "loss"),
              title: str = "") -> Path:
    """One figure: each metric against rounds and against uplink bits per worker (the EF papers'
    #bits/n axis), one curve per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in metrics if any(m in r for rows in runs.values() for r in rows)]
    fig, axes = plt.subplots(len(metrics), 2, figsize=(11, 3.6 * len(metrics)), squeeze=False)
    for row_ax, metric in zip(axes, metrics):
        for label, rows in runs.items():
            y = [r.get(metric, math.nan) for r in rows]
            pos = [v if isinstance(v, (int, float)) and v > 0 and math.isfinite(v) else math.nan for v in y]
            logy = any(v == v for v in pos)
            x_r = [r["round"] for r in rows]
            x_b = [r.get("bits_up", math.nan) for r in rows]
            for ax, x in zip(row_ax, (x_r, x_b)):
                ax.plot(x, pos if logy else y, label=label)
                if logy:
                    ax.set_yscale("log")
        row_ax[0].set_xlabel("round")
        row_ax[1].set_xlabel("uplink bits per worker")
        for ax in row_ax:
            ax.set_ylabel(metric)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path
