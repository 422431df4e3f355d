"""``distopt results FAMILY``: the family's workloads under gd / ef21 / econtrol / dcgd at top-1%."""
from __future__ import annotations


def add_arguments(p) -> None:
    p.add_argument("family", help="workload family, e.g. sequence, generative")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--rounds", type=int, default=None, help="default: each workload's default_rounds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="experiments/results")


def run(args) -> int:
    from experiments.report import format_table
    from experiments.results import family_results

    rows = family_results(args.family, n=args.workers, rounds=args.rounds, seed=args.seed, out=args.out)
    print(format_table(rows, ["workload", "metric", "gd+identity", "ef21+topk:ratio=0.01", "econtrol+topk:ratio=0.01",
                              "dcgd+topk:ratio=0.01", "verdict"]))
    print(f"written: {args.out}/{args.family}.md")
    return 0
