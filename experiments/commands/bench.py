"""``distopt bench NAME``: benchmarks that print ratios against a baseline measured in the same run."""
from __future__ import annotations

import importlib

BENCHES: dict[str, str] = {
    "compressors": "experiments.bench.compressors",
    "coding": "experiments.bench.coding",
    "simulator": "experiments.bench.simulator",
    "ddp": "experiments.bench.ddp",
    "ray": "experiments.bench.ray",
    "ray-study": "experiments.bench.ray_study",
}


def add_arguments(p) -> None:
    p.add_argument("name", choices=sorted(BENCHES), help="which benchmark")
    p.add_argument("--d", type=int, default=None, help="vector length (compressors; default 10^7)")
    p.add_argument("--repeat", type=int, default=None, help="timed repetitions (median reported)")
    p.add_argument("--out", default=None, help="also write the table as markdown + JSON into this folder")


def run(args) -> int:
    kwargs = {k: v for k, v in (("d", args.d), ("repeat", args.repeat), ("out", args.out)) if v is not None}
    return importlib.import_module(BENCHES[args.name]).main(**kwargs)
