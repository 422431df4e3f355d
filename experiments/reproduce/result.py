"""What a reproduction returns: checks (expected vs observed, holds or not), tables, figures.

``Result.write(out)`` writes ``results.md`` and ``results.json`` atomically; ``Result.print()``
prints the tables and a verdict line per check.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

from experiments.report import atomic_write_json, atomic_write_text, format_table, markdown_table, paired


@dataclasses.dataclass
class Check:
    name: str
    expected: str
    observed: str
    holds: bool


@dataclasses.dataclass
class Result:
    title: str
    checks: list[Check] = dataclasses.field(default_factory=list)
    tables: dict[str, list[dict]] = dataclasses.field(default_factory=dict)
    figures: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def holds(self) -> bool:
        return bool(self.checks) and all(c.holds for c in self.checks)

    def check(self, name: str, expected: str, observed: str, holds: bool) -> bool:
        self.checks.append(Check(name, expected, observed, bool(holds)))
        return bool(holds)

    def paired(self, what: str, pairs: dict[str, tuple[Sequence[float], Sequence[float]]], unit: str = "seed") -> None:
        """A note of ``what``'s differences a - b paired by ``unit``, one per ``label: (a, b)``
        (report.paired: mean ± standard error, t), so that a margin within its noise reads as a
        tie. Nothing is noted with a single seed (no standard error)."""
        if all(len(a) > 1 for a, _ in pairs.values()):
            self.notes.append(f"paired by {unit}, {what}: " + "; ".join(f"{k} {paired(a, b)}" for k, (a, b) in pairs.items()))

    def print(self) -> None:
        print(f"== {self.title} ==")
        for name, rows in self.tables.items():
            print(f"\n-- {name} --")
            print(format_table(rows))
        print()
        for c in self.checks:
            print(f"[{'HOLDS' if c.holds else 'FAILS'}] {c.name}: expected {c.expected}; observed {c.observed}")
        for n in self.notes:
            print(f"note: {n}")
        for f in self.figures:
            print(f"figure: {f}")
        print(f"\n{self.title}: {'all expected results hold' if self.holds else 'SOME EXPECTED RESULTS DO NOT HOLD'}")

    def markdown(self) -> str:
        out = [f"# {self.title}\n"]
        for name, rows in self.tables.items():
            out += [f"## {name}\n", markdown_table(rows)]
        out.append("## Checks\n")
        out.append(markdown_table([dataclasses.asdict(c) | {"holds": "yes" if c.holds else "NO"} for c in self.checks],
                                  ["name", "expected", "observed", "holds"]))
        if self.notes:
            out.append("## Notes\n")
            out += [f"- {n}" for n in self.notes]
        if self.figures:
            out.append("\n## Figures\n")
            out += [f"![{Path(f).stem}]({Path(f).name})" for f in self.figures]
        return "\n".join(out) + "\n"

    def write(self, out: str | Path) -> None:
        out = Path(out)
        atomic_write_text(out / "results.md", self.markdown())
        atomic_write_json(out / "results.json", dataclasses.asdict(self) | {"holds": self.holds})
