"""``distopt results FAMILY``: the family's workloads under gd / ef21 / econtrol / dcgd at top-1%."""
from __future__ import annotations


def add_arguments(p) -> None:
    p.add_argument("family", help="workload family, e.g. sequence, generative")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--rounds", type=int, default=None, help="default: each workload's default_rounds")
    p.add_argument("--max-rounds", type=int, default=None, help="cap every workload's rounds at this")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="experiments/results")
    p.add_argument("--lr-scales", default="1,0.3,0.1",
                   help="the compressed methods run at the workload's lr times each of these; the best is shown")
    p.add_argument("--optimizers", default="default",
                   help="server optimizers, one table section each: 'default' (each workload's own, at its lr) "
                        "and/or an optimizer spec (sgd, momentum, adam); under a non-default one gd's lr is "
                        "searched first. E.g. default,sgd")
    p.add_argument("--check-seeds", default="",
                   help="more seeds, e.g. 1,2: gd, EF21 and DCGD re-run at the lrs chosen at --seed, and a column "
                        "counts over all seeds how often EF21 survives and how it stands against DCGD")


def run(args) -> int:
    from experiments.report import format_table
    from experiments.results import family_results

    try:
        scales = tuple(float(v) for v in args.lr_scales.split(","))
    except ValueError:
        scales = ()
    if not scales or any(not v > 0 for v in scales):
        raise ValueError(f"--lr-scales takes comma-separated positive numbers, e.g. 1,0.3,0.1; got {args.lr_scales!r}")
    try:
        check = tuple(int(v) for v in args.check_seeds.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"--check-seeds takes comma-separated integers, e.g. 1,2; got {args.check_seeds!r}") from None
    rows = family_results(args.family, n=args.workers, rounds=args.rounds, seed=args.seed, out=args.out,
                          lr_scales=scales, max_rounds=args.max_rounds,
                          optimizers=tuple(o.strip() for o in args.optimizers.split(",") if o.strip()) or ("default",),
                          check_seeds=check)
    print(format_table(rows, ["workload", "optimizer", "metric", "gd+identity", "ef21+topk:ratio=0.01", "econtrol+topk:ratio=0.01",
                              "dcgd+topk:ratio=0.01", "verdict"] + (["across seeds"] if check else [])))
    print(f"written: {args.out}/{args.family}.md")
    return 0
