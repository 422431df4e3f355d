"""``distopt stragglers``: replay a straggler pattern, model or trace through a coding scheme.

    distopt stragglers --scheme m-sgc --workers 4 --B 1 --W 2 --lam 2 --pattern p.csv --out DIR
    distopt stragglers --scheme gc:s=2 --workers 8 --model gilbert-elliott:p=0.05,q=0.5 --rounds 100 --out DIR

Pattern CSV: no header, one row per round, one 0/1 column per worker (1 = straggles). A round
whose stragglers would break the scheme's model is waited out (the master waits for all).
Every decoded job is checked numerically: random partial gradients (seeded), the workers'
coded results, the decoding coefficients, and the decoded sum against the true sum.

Writes DIR/jobs.csv (job, decoded_round, correct, delay, max_coef, residual) and
DIR/summary.json (load, T, wait_outs, failures, runtime, ...). Exit 1 if a job failed to
decode or decoded wrong (the scheme's guarantee broke), 2 on bad input.
"""
from __future__ import annotations

_FLAGS = ("s", "B", "W", "lam")


def add_arguments(p) -> None:
    p.add_argument("--scheme", required=True,
                   help="uncoded | gc | sr-sgc | m-sgc, or a code spec: gc:s=2, sr-sgc:B=1,W=2,lam=2, m-sgc:B=1,W=2,lam=2")
    p.add_argument("--workers", type=int, default=None, help="n (with --pattern/--trace: taken from the file if omitted)")
    p.add_argument("--s", type=int, default=None, help="gc: stragglers tolerated per round")
    p.add_argument("--B", type=int, default=None, help="sr-sgc, m-sgc: longest burst (rounds)")
    p.add_argument("--W", type=int, default=None, help="sr-sgc, m-sgc: window (rounds)")
    p.add_argument("--lam", type=int, default=None, help="sr-sgc, m-sgc: distinct stragglers per window")
    p.add_argument("--relaxed", action="store_true", help="sr-sgc: the official code's relaxed model check")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pattern", help="CSV of 0/1, one row per round, one column per worker")
    src.add_argument("--model", help="gilbert-elliott:p=..,q=.. | bernoulli:p=.. | bursty:B=..,W=..,lam=..,p=..,q=.. | "
                                     "shifted-exp | lognormal | lambda-like (needs --rounds)")
    src.add_argument("--trace", help="CSV of per-round, per-worker durations in seconds (no header)")
    p.add_argument("--rounds", type=int, default=None, help="rounds to draw from --model (jobs = rounds - T)")
    p.add_argument("--jobs", type=int, default=None, help="jobs to run (default: rounds - T)")
    p.add_argument("--master", default=None,
                   help="pattern (default for patterns and flagging models) | deadline:mu=1 (default for delay "
                        "models and traces) | timeout:t=SECONDS | fastest:k=K")
    p.add_argument("--c", type=float, default=2.2, help="seconds per unit of normalized load (Lambda fit: 2.2)")
    p.add_argument("--comm", type=float, default=0.0, help="seconds per result vector uploaded (M-SGC uploads W-1+B)")
    p.add_argument("--slowdown", type=float, default=3.0, help="pattern files: a straggler's time multiplier (base 1 s)")
    p.add_argument("--d", type=int, default=4, help="length of the random partial gradients decoded")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output folder")


def make_scheme(spec: str, n: int, **flags):
    """The scheme from ``--scheme`` plus the --s/--B/--W/--lam/--relaxed flags (which must apply)."""
    from distopt._spec import options_of, parse
    from distopt.coding import CODES, make

    name = parse(spec)[0]
    given = {k: v for k, v in flags.items() if v is not None}
    if name in CODES:
        valid = {f.name for f in options_of(CODES[name])}
        extra = sorted(k for k in given if k not in valid)
        if extra:
            flag = "--" + extra[0]
            raise ValueError(f"{flag} does not apply to {name}; its options: {', '.join(sorted(valid - {'n'}))}")
    return make(spec, n=n, **given)


def _sample(args):
    import numpy as np

    from simulator.stragglers import Sample, make_model, read_pattern, read_trace

    if args.pattern:
        flags = read_pattern(args.pattern, args.workers)
        return Sample(np.where(flags, args.slowdown, 1.0), flags), flags.shape[1]
    if args.trace:
        base = read_trace(args.trace, args.workers)
        return Sample(base, None), base.shape[1]
    if args.workers is None or args.rounds is None:
        raise ValueError("--model needs --workers N and --rounds R")
    return make_model(args.model).sample(args.workers, args.rounds, args.seed), args.workers


def run(args) -> int:
    from pathlib import Path

    from distopt._spec import spec_of
    from experiments.report import atomic_write_json, atomic_write_text
    from simulator.straggler_study import simulate
    from simulator.stragglers import TimeModel, make_rule

    sample, n = _sample(args)
    scheme = make_scheme(args.scheme, n, s=args.s, B=args.B, W=args.W, lam=args.lam, relaxed=args.relaxed or None)
    rule = make_rule(args.master or ("pattern" if sample.flags is not None else "deadline:mu=1"))
    time = TimeModel(c=args.c, comm=args.comm)
    res = simulate(scheme, sample, time=time, rule=rule, jobs=args.jobs, numeric=True, d=args.d, seed=args.seed,
                   progress=True)
    out = Path(args.out)
    lines = ["job,decoded_round,correct,delay,max_coef,residual"]
    for r in res.records:
        done = r.decoded_round is not None
        lines.append(f"{r.job},{r.decoded_round if done else ''},{str(bool(r.correct)).lower()},"
                     f"{r.decoded_round - r.job if done else ''},{r.max_coef:.6g},{r.residual:.3g}")
    atomic_write_text(out / "jobs.csv", "\n".join(lines) + "\n")
    source = {"pattern": args.pattern, "model": args.model, "trace": args.trace}
    summary = res.summary() | {
        "code": spec_of(scheme), "master": spec_of(rule), "time_model": {"c": time.c, "comm": time.comm},
        "source": {k: v for k, v in source.items() if v}, "seed": args.seed, "d": args.d,
        "stragglers_proposed": int(sample.flags.sum()) if sample.flags is not None else None,
    }
    atomic_write_json(out / "summary.json", summary)
    s = summary
    print(f"{s['code']} n={n}: load {s['load']:.6g}, T={s['T']}, {s['jobs']} jobs over {s['rounds']} rounds; "
          f"wait-outs {s['wait_outs']}, failures {s['failures']}, decoded correctly {s['correct']}/{s['jobs']}, "
          f"runtime {s['runtime']:.4g} s")
    print(f"written: {out}/jobs.csv, {out}/summary.json")
    return 0 if s["failures"] == 0 and s["correct"] == s["jobs"] else 1
