"""Small reporting helpers shared by commands, benchmarks and reproductions: aligned text
tables, markdown tables, atomic file writes."""
from __future__ import annotations

from typing import Any, Iterable, Sequence

from distopt._io import atomic_write_json, atomic_write_text  # noqa: F401  (re-exported)


def _cell(v: Any) -> str:
    if isinstance(v, float):
        if v != v:
            return "nan"
        if v == 0 or 1e-3 <= abs(v) < 1e5:
            return f"{v:.4g}"
        return f"{v:.3e}"
    return str(v)


def format_table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """Aligned plain-text table."""
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0].keys())
    cells = [[_cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(out)


def markdown_table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    if not rows:
        return "(no rows)\n"
    columns = list(columns or rows[0].keys())
    out = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    out += ["| " + " | ".join(_cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(out) + "\n"


def mean_sd(values: Iterable[float]) -> tuple[float, float]:
    vals = list(values)
    n = len(vals)
    if n == 0:
        return float("nan"), float("nan")
    m = sum(vals) / n
    sd = (sum((v - m) ** 2 for v in vals) / (n - 1)) ** 0.5 if n > 1 else 0.0
    return m, sd


def mean(values: Iterable[float]) -> float:
    return mean_sd(values)[0]


def pm(values: Iterable[float], digits: int = 4) -> str:
    """``mean ± sd`` (sample sd) over seeds, as a table cell."""
    m, s = mean_sd(values)
    return f"{m:.{digits}g} ± {s:.2g}"


def paired(a: Sequence[float], b: Sequence[float], digits: int = 2) -> str:
    """``a - b`` paired by seed: ``mean ± standard error (t = mean / se, k seeds)``. |t| < 2 is a
    tie at this number of seeds; say so rather than read a direction into it."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"paired: need two equal-length lists of >= 2 values, got {len(a)} and {len(b)}")
    m, sd = mean_sd([x - y for x, y in zip(a, b)])
    se = sd / len(a) ** 0.5
    t = m / se if se > 0 else float("inf") if m else 0.0
    return f"{m:+.{digits}g} ± {se:.{digits}g} (t = {t:+.1f}, {len(a)} seeds)"


def arm_rows(arms: dict, metrics: Sequence[str], label: str = "arm") -> list[dict]:
    """One row per arm of a mechanism check: ``{label: arm, metric: 'mean ± sd' (or '-'), ...,
    'seeds': k}`` from ``arms[arm][metric] = [value per seed]``."""
    rows = []
    for arm, vals in arms.items():
        row = {label: arm}
        for m in metrics:
            row[m] = pm(vals[m]) if vals.get(m) else "-"
        row["seeds"] = max((len(v) for v in vals.values()), default=0)
        rows.append(row)
    return rows
