"""``distopt workloads``: every registered workload id with its paper."""
from __future__ import annotations


def add_arguments(p) -> None:
    pass


def run(args) -> int:
    from experiments.report import format_table
    from experiments.workloads import WORKLOADS

    print(format_table([{"id": k, "paper": v[1]} for k, v in WORKLOADS.items()]))
    print(f"\n{len(WORKLOADS)} workloads; `distopt simulate --workload ID` trains one, `distopt reproduce ID` runs its check")
    return 0
