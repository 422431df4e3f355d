"""``distopt compressors``: every compressor with its options, alpha/omega and bits per coordinate."""
from __future__ import annotations


def add_arguments(p) -> None:
    p.add_argument("--bench", action="store_true", help="also time every compressor (same as `distopt bench compressors`)")
    p.add_argument("--d", type=int, default=None, help="vector length for --bench (default 10^7)")


def table() -> list[dict]:
    import dataclasses

    from distopt._spec import options_of
    from distopt.compressors import COMPRESSORS

    rows = []
    for name, cls in COMPRESSORS.items():
        opts = []
        for f in options_of(cls):
            default = f.default if f.default is not dataclasses.MISSING else None
            opts.append(f"{f.name}={'' if default is None else str(default).lower() if isinstance(default, bool) else default}")
        kind = "unbiased" if cls.unbiased is True else ("biased" if cls.unbiased is False else "biased|unbiased")
        rows.append({
            "name": name,
            "options": ",".join(opts) or "-",
            "kind": kind + (", random" if cls.random else ""),
            "alpha/omega": cls.formula,
            "bits/coord": cls.bits_per_coord,
            "what": cls.summary,
        })
    return rows


def run(args) -> int:
    from experiments.report import format_table

    print(format_table(table(), ["name", "options", "kind", "alpha/omega", "bits/coord", "what"]))
    print("\nspec strings: name or name:key=value,..., e.g. topk:ratio=0.01, randk:k=10,scaled=true, qsgd:levels=4")
    print("unbiased compressors used inside error feedback are scaled by 1/(1+omega), giving alpha = 1/(1+omega)")
    if args.bench:
        from experiments.bench import compressors as bench

        return bench.main(d=args.d)
    return 0
