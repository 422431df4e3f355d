"""``distopt reproduce ID [--quick]``: run a reproduction, print its table, exit 0 only if every
expected result holds."""
from __future__ import annotations

import importlib


def add_arguments(p) -> None:
    p.add_argument("id", help="a study (see `distopt reproduce list`) or a workload id")
    p.add_argument("--quick", action="store_true", help="the scaled-down version the tests run")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (default: the study's)")
    p.add_argument("--out", default=None, help="folder for results.md, results.json and figures (default runs/reproduce/ID)")


def _targets() -> dict[str, object]:
    from experiments.reproduce import REPRODUCTIONS

    targets: dict[str, object] = dict(REPRODUCTIONS)
    try:
        from experiments.workloads import WORKLOADS
    except ImportError:
        WORKLOADS = {}
    for wid in WORKLOADS:
        targets.setdefault(wid, ("workload", wid))
    return targets


def run(args) -> int:
    from pathlib import Path

    targets = _targets()
    if args.id == "list":
        print("\n".join(sorted(targets)))
        return 0
    if args.id not in targets:
        raise ValueError(f"unknown reproduction {args.id!r}; valid: {', '.join(sorted(targets)) or 'none yet'}")
    out = Path(args.out or f"runs/reproduce/{args.id}")
    target = targets[args.id]
    if isinstance(target, tuple):
        from experiments.workloads import reproduce_workload

        result = reproduce_workload(target[1], quick=args.quick, out=out, seeds=args.seeds)
    else:
        result = importlib.import_module(target).run(quick=args.quick, out=out, seeds=args.seeds)
    result.print()
    result.write(out)
    print(f"written: {out}/results.md")
    return 0 if result.holds else 1
