"""The ``distopt`` command line: one subcommand per module, imported only when used.

Each module in COMMANDS defines ``add_arguments(parser)`` and ``run(args) -> int``.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("experiments.commands.demo", "the main job: EF21, EF21-W, EControl, EF14, DCGD on 100 heterogeneous workers"),
    "simulate": ("experiments.commands.simulate", "run a method x compressor on a workload in the in-process simulator"),
    "train": ("experiments.commands.train", "the same study on real processes (--backend ray-train) or in process (sim)"),
    "compressors": ("experiments.commands.compressors", "list compressors (flags, alpha/omega, bits); --bench times them"),
    "methods": ("experiments.commands.methods", "list communication methods, their options and theory stepsizes"),
    "workloads": ("experiments.commands.workloads", "list registered workloads with their papers"),
    "results": ("experiments.commands.results", "a workload family's results table under gd / ef21 / econtrol / dcgd"),
    "bench": ("experiments.commands.bench", "benchmarks that print ratios against a baseline run in the same process"),
    "reproduce": ("experiments.commands.reproduce", "run a paper's reproduction checks and say whether they hold"),
    "stragglers": ("experiments.commands.stragglers", "replay a straggler pattern, model or trace through a gradient-coding scheme"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distopt",
        description="distopt: compressed and straggler-tolerant distributed training "
        "(simulator, PyTorch DDP hook, Ray).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except ValueError as e:  # bad input: one clear line, no traceback
        print(f"distopt {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
