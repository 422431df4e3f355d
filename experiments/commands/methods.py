"""``distopt methods``: every communication method with its options and theory stepsize."""
from __future__ import annotations


def add_arguments(p) -> None:
    pass


def run(args) -> int:
    import dataclasses

    from distopt._spec import options_of
    from distopt.methods import METHODS
    from distopt.stepsizes import LR_RULES
    from experiments.report import format_table

    rows = []
    for name, cls in METHODS.items():
        opts = ",".join(f"{f.name}={str(f.default).lower() if isinstance(f.default, bool) else f.default}"
                        for f in options_of(cls) if f.default is not dataclasses.MISSING) or "-"
        rows.append({"name": name, "options": opts, "what": cls.summary, "theory stepsize": cls.theory})
    print(format_table(rows))
    print("\nrun options (any method): --batch B (stochastic gradients), --participation p (EF21-PP),"
          " --down-compressor C (EF21-BC)")
    print("stepsize rules for --lr:")
    for k, v in LR_RULES.items():
        print(f"  {k}: {v}")
    print("unbiased compressors inside error feedback are scaled by 1/(1+omega) (alpha = 1/(1+omega)); dcgd uses them as given")
    return 0
