"""Family results tables: every workload of a family trained for the same number of rounds
with n = 4 workers under gd (uncompressed), ef21 + topk 0.01, econtrol + topk 0.01 and
dcgd + topk 0.01 (no error feedback), with the bits each sent -- which models survive
aggressive compression, and whether error feedback is what saves them.

``distopt results FAMILY`` writes ``experiments/results/FAMILY.md`` (and a JSON twin).

The server optimizer matters for the second question. With Adam at the server (the sequence
and generative workloads' default), EF21's estimate g keeps stale entries, and Adam's
per-coordinate normalisation gives a small stale entry a full-size step; DCGD's unsent entries
are zero and their Adam moments decay. The same nonlinearity is why 1-bit Adam (Tang et al.
2021) freezes Adam's second moment before it compresses. ``--optimizers default,sgd`` adds
a section under plain SGD, the EF papers' setting, so the table says which of the two it is.

One seed's verdict can turn on one run: a gd lr at the edge of stability overshoots early at
one seed and not at another, and EF21 diverges only where it did (lnn_linkload's docstring).
``--check-seeds 1,2`` re-runs gd, EF21 and DCGD at the lrs chosen at ``--seed`` and adds a
column that counts the verdict's two parts over all seeds.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Optional

import torch

from experiments.report import atomic_write_json, atomic_write_text, markdown_table

CONFIGS = [("gd", "identity"), ("ef21", "topk:ratio=0.01"), ("econtrol", "topk:ratio=0.01"), ("dcgd", "topk:ratio=0.01")]
# the compressed runs also try smaller steps: error feedback's estimate lags the gradient, and at
# the uncompressed run's lr (tuned for gd) a method can lose for its stepsize, not its mechanism
LR_SCALES = (1.0, 0.3, 0.1)
DEFAULT = "default"  # each workload's own default_optimizer, at its own default_lr
# under another server optimizer the workload's lr is not tuned (Adam's lr is 3-100x too small
# for SGD here), so gd's lr is searched first (search_lr); the compressed methods scale from it
LR_STEP, LR_STEPS = 3.0, 6
LR_SEARCH = f"x{LR_STEP:g} until worse (ties go on), at most {LR_STEPS} steps; else /{LR_STEP:g}"  # in a row's settings


def run_one(workload, method: str, compressor: str, n: int, rounds: int, seed: int, lr: Optional[float] = None,
            optimizer: Optional[str] = None) -> dict:
    """One run's final metric, bits sent and status; ``optimizer`` None or "default": the
    workload's default_optimizer."""
    from simulator.engine import RunConfig, Simulation
    from simulator.oracles import VmapOracle

    oracle = workload.oracle(n, dtype=torch.float32, seed=seed) if hasattr(workload, "oracle") else \
        VmapOracle(workload, n, seed=seed, dtype=torch.float32)
    cfg = RunConfig(method=method, compressor=compressor, lr=lr or workload.default_lr, rounds=rounds, seed=seed,
                    eval_every=rounds, on_nonfinite="stop", progress=False,
                    optimizer=_optimizer(workload, optimizer))
    try:
        sim = Simulation(oracle, cfg)
    except ValueError as e:  # e.g. no theory stepsize for this method: say so in the table
        return {"metric": math.nan, "bits_up": math.nan, "status": f"n/a: {e}", "start": math.nan}
    hist = sim.run()
    last = hist.last
    stop = sim.stopped_at
    return {"metric": last.get(workload.primary_metric, math.nan),
            "bits_up": stop["bits_up"] if stop else last.get("bits_up", math.nan),
            "status": sim.status, "stopped_round": stop["round"] if stop else None,
            "start": hist.rows[0].get(workload.primary_metric, math.nan)}


def _optimizer(workload, optimizer: Optional[str]) -> str:
    return getattr(workload, "default_optimizer", "sgd") if optimizer in (None, DEFAULT) else optimizer


def search_lr(run, base_lr: float, higher: bool, step: float = LR_STEP, steps: int = LR_STEPS) -> tuple[float, dict]:
    """gd's lr under a server optimizer the workload's lr was not tuned for. From ``base_lr``,
    multiply by ``step`` until the final metric gets worse than at the previous lr (at most
    ``steps`` times; a tie goes on, so a metric flat at its untrained value does not stop the
    search); if no lr above ``base_lr`` beats it, divide instead, by the same rule. A diverged
    run is worse than any finished one, and one that diverged later is the better of two.
    ``run(lr) -> result``. Returns the best (lr, result), the lowest lr among equals, with
    every lr tried in ``result["lr_tried"]``."""
    def score(r):
        m = r["metric"]
        if r["status"] == "finished" and math.isfinite(m):
            return (1, m if higher else -m)
        return (0, r.get("stopped_round") or -1)

    tried = {base_lr: run(base_lr)}
    best = base_lr
    for direction in (step, 1.0 / step):
        lr = base_lr
        for _ in range(steps):
            prev, lr = lr, lr * direction
            tried[lr] = run(lr)
            if score(tried[lr]) < score(tried[prev]):
                break
            if score(tried[lr]) > score(tried[best]):
                best = lr
        if best != base_lr:  # a larger lr helped: no need to try smaller ones
            break
    return best, {**tried[best], "lr_tried": sorted(tried)}


def verdict_parts(higher: bool, gd: float, ef: float, dc: float, start: float = math.nan) -> tuple[bool, str]:
    """(EF21 survives: within reach of gd or better; EF21 against DCGD: "close", "ahead" or
    "behind"). Two final metrics are close when they differ by at most 10% of the second's
    value and, given the round-0 value ``start``, by at most 10% of the way gd went from it: on a
    metric that barely moves in training (accuracy 0.54 -> 0.60), 10% of the value alone would
    call any two runs close."""
    progress = abs(gd - start) if math.isfinite(start) and math.isfinite(gd) else math.inf

    def close(a, b):
        return (math.isfinite(a) and math.isfinite(b) and abs(a - b) <= 0.1 * max(abs(b), 1e-12)
                and abs(a - b) <= 0.1 * progress)

    def better(a, b):
        return math.isfinite(a) and (not math.isfinite(b) or (a > b if higher else a < b))

    return close(ef, gd) or better(ef, gd), "close" if close(ef, dc) else "ahead" if better(ef, dc) else "behind"


def verdict(higher: bool, gd: float, ef: float, dc: float, start: float = math.nan) -> str:
    """The table's verdict, from ``verdict_parts``."""
    survives, vs = verdict_parts(higher, gd, ef, dc, start)
    ef_vs_dc = {"close": "dcgd does as well", "behind": "dcgd does better",
                "ahead": "error feedback is what saves it" if survives else "error feedback helps"}[vs]
    return ("survives top-1%" if survives else "degraded at top-1%") + "; " + ef_vs_dc


def best_of(runs: dict[float, dict], higher: bool) -> tuple[float, dict]:
    """The (lr scale, result) with the best final metric among the runs that finished; if none
    finished, the one that lasted longest (its divergence is what the table reports)."""
    done = {s: r for s, r in runs.items() if r["status"] == "finished" and math.isfinite(r["metric"])}
    if not done:
        return max(runs.items(), key=lambda sr: (sr[1].get("stopped_round") or -1, -sr[0]))
    return (max if higher else min)(done.items(), key=lambda sr: (sr[1]["metric"], sr[0]))


def _fingerprint(workload) -> dict:
    """What a cached row depends on besides the run settings: the workload's configuration
    and the source of the file that defines it (a changed default or model reruns its row)."""
    import dataclasses
    import hashlib
    import inspect

    config = dataclasses.asdict(workload) if dataclasses.is_dataclass(workload) else repr(workload)
    source = Path(inspect.getsourcefile(type(workload))).read_bytes()
    return {"config": config, "source": hashlib.sha256(source).hexdigest()[:16]}


def family_results(family: str, n: int = 4, rounds: Optional[int] = None, seed: int = 0,
                   out: str | Path = "experiments/results", progress: bool = True,
                   lr_scales: tuple[float, ...] = LR_SCALES, max_rounds: Optional[int] = None,
                   optimizers: tuple[str, ...] = (DEFAULT,), check_seeds: tuple[int, ...] = ()) -> list[dict]:
    """``rounds``: every workload's rounds (default: its ``default_rounds``), capped at
    ``max_rounds``. ``optimizers``: one table section per server optimizer ("default": each
    workload's own, at its own lr; any other: gd's lr searched first, see ``search_lr``).
    ``check_seeds``: more seeds at which gd, EF21 and DCGD re-run at the lrs chosen at ``seed``;
    the row's "across seeds" column counts the verdict's two parts over all of them (one seed's
    verdict can turn on one run's early overshoot).
    Each finished workload's row is kept under ``out/.partial/FAMILY/`` (with the settings it
    ran under and the workload's fingerprint), so an interrupted run resumes where it stopped;
    a row is reused only if both still match. Returns the rows, each with its "optimizer"."""
    from tqdm.auto import tqdm

    from experiments.workloads import FAMILIES, make

    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; valid: {', '.join(sorted(FAMILIES))}")
    from distopt import optim

    for opt in set(optimizers) - {DEFAULT}:
        optim.make(opt)  # an unknown optimizer fails here, before any run
    if seed in check_seeds or len(set(check_seeds)) != len(check_seeds):
        raise ValueError(f"check seeds must differ from the table's seed ({seed}) and from each other; "
                         f"got {list(check_seeds)}")
    out = Path(out)
    rows = []
    todo = [(opt, wid) for opt in optimizers for wid in FAMILIES[family]]
    for opt, wid in tqdm(todo, desc=family, disable=not progress):
        w = make(wid)
        row, finals, lrs = _workload_row(family, w, opt, n, rounds, max_rounds, seed, lr_scales, out)
        if check_seeds:
            row["across seeds"] = _across_seeds(family, w, opt, n, row["rounds"], seed, check_seeds, finals, lrs, out)
        rows.append(row)
    write_table(family, rows, n=n, seed=seed, lr_scales=lr_scales, max_rounds=max_rounds, out=out,
                rounds=rounds, optimizers=optimizers, check_seeds=check_seeds)
    return rows


def _partial_name(w, opt) -> str:
    """The default's file name is as before optimizers were added."""
    return w.name + ("" if opt == DEFAULT else "." + "".join(ch if ch.isalnum() else "_" for ch in opt))


def _scale_shown(cell) -> Optional[float]:
    """The lr scale in a compressed cell, "0.2017 (x0.3)"; None for a run that did not finish."""
    m = re.search(r"\(x([0-9.e+-]+)\)$", cell) if isinstance(cell, str) else None
    return float(m.group(1)) if m else None


def _workload_row(family, w, opt, n, rounds, max_rounds, seed, lr_scales, out) -> tuple[dict, dict, dict]:
    """(the table's row, each config's final metric and gd's "start", each config's lr: a
    number, None for the workload's own "theory" rule, or NaN where the shown run did not
    finish)."""
    import json

    r = rounds or w.default_rounds
    r = min(r, max_rounds) if max_rounds else r
    settings = {"n": n, "rounds": r, "seed": seed, "lr_scales": list(lr_scales), "configs": CONFIGS,
                "workload": _fingerprint(w)}
    if opt != DEFAULT:  # the default's settings are as before optimizers were added
        settings.update(optimizer=opt, lr_search=LR_SEARCH)
    settings = json.loads(json.dumps(settings, default=str))  # as it reads back from the file
    partial = out / ".partial" / family / f"{_partial_name(w, opt)}.json"
    numeric = isinstance(w.default_lr, (int, float))

    def lrs_of(row):  # rows cached before lrs were stored carry the scale in their cells
        scales = {k: (1.0 if k == "gd+identity" else _scale_shown(row[k])) for k in (f"{m}+{c}" for m, c in CONFIGS)}
        return {k: (None if not numeric else math.nan if sc is None else row["lr"] * sc) for k, sc in scales.items()}

    if partial.exists():
        saved = json.loads(partial.read_text())
        if saved.get("settings") == settings and "finals" in saved:  # the verdict's rule may have changed since
            row = {"optimizer": _optimizer(w, opt), **saved["row"], "verdict": _verdict(w, saved["finals"])}
            return row, saved["finals"], lrs_of(saved["row"])
    base_lr = w.default_lr
    scales = lr_scales if numeric else (1.0,)  # "theory" stepsizes: as resolved

    def run(m, c, lr):
        return run_one(w, m, c, n, r, seed, lr=lr, optimizer=opt)

    if opt != DEFAULT and numeric:
        base_lr, gd = search_lr(lambda lr: run("gd", "identity", lr), base_lr, w.higher_is_better)
    else:
        gd = run("gd", "identity", None)
    res, chosen = {"gd+identity": gd}, {"gd+identity": 1.0}
    for m, c in CONFIGS[1:]:
        runs = {sc: run(m, c, base_lr * sc if numeric else None) for sc in scales}
        chosen[f"{m}+{c}"], res[f"{m}+{c}"] = best_of(runs, w.higher_is_better)
    row = {"workload": w.name, "metric": f"{w.primary_metric} ({'higher' if w.higher_is_better else 'lower'} is better)",
           "rounds": r, "lr": base_lr, "start": gd["start"]}
    if "lr_tried" in gd:
        row["gd lrs tried"] = ", ".join(f"{x:.3g}" for x in gd["lr_tried"])
    for key, v in res.items():
        shown = v["metric"] if v["status"] == "finished" else (
            f"diverged at round {v['stopped_round']}" if v.get("stopped_round") is not None else v["status"])
        row[key] = shown if key == "gd+identity" or isinstance(shown, str) else f"{shown:.4g} (x{chosen[key]:g})"
        row[f"bits {key.split('+')[0]}"] = v["bits_up"]
    finals = _finals(res, gd["start"])
    row["verdict"] = _verdict(w, finals)
    atomic_write_json(partial, {"settings": settings, "row": row, "finals": finals})
    return {"optimizer": _optimizer(w, opt), **row}, finals, lrs_of(row)


def _across_seeds(family, w, opt, n, r, seed, seeds, finals, lrs, out) -> str:
    """gd, EF21 and DCGD re-run at ``lrs`` (chosen at ``seed``) at each of ``seeds``, each
    seed's runs cached like a row; over all seeds, in how many EF21 survives and how it stands
    against DCGD (``verdict_parts``)."""
    import json

    keys = ("gd+identity", "ef21+topk:ratio=0.01", "dcgd+topk:ratio=0.01")
    per_seed = [finals]
    for s in seeds:
        settings = json.loads(json.dumps({"n": n, "rounds": r, "seed": s, "optimizer": opt, "workload": _fingerprint(w),
                                          "lrs": {k: repr(lrs[k]) for k in keys}}, default=str))  # repr: NaN == NaN
        partial = out / ".partial" / family / f"{_partial_name(w, opt)}.seed{s}.json"
        saved = json.loads(partial.read_text()) if partial.exists() else {}
        if saved.get("settings") != settings:
            got = {}
            for k in keys:
                m, c = k.split("+")
                if lrs[k] is not None and math.isnan(lrs[k]):  # the shown run did not finish: no lr to re-run
                    got[k] = {"metric": math.nan, "status": "not run", "start": math.nan}
                else:
                    got[k] = run_one(w, m, c, n, r, s, lr=lrs[k], optimizer=opt)
            saved = {"settings": settings, "finals": _finals(got, got["gd+identity"]["start"])}
            atomic_write_json(partial, saved)
        per_seed.append(saved["finals"])
    parts = [verdict_parts(*_verdict_args(w, f)) for f in per_seed]
    count = {v: sum(p[1] == v for p in parts) for v in ("ahead", "close", "behind")}
    return (f"survives {sum(p[0] for p in parts)}/{len(parts)}; vs dcgd: {count['ahead']} ahead, "
            f"{count['close']} close, {count['behind']} behind")


def _finals(results: dict[str, dict], start: float) -> dict[str, float]:
    """Each config's final metric (NaN if its run did not finish) and gd's round-0 "start"."""
    return {**{k: (v["metric"] if v["status"] == "finished" else math.nan) for k, v in results.items()}, "start": start}


def _verdict_args(w, finals: dict) -> tuple:
    """``verdict``'s (and ``verdict_parts``') arguments from ``_finals``."""
    return (w.higher_is_better, finals["gd+identity"], finals["ef21+topk:ratio=0.01"], finals["dcgd+topk:ratio=0.01"],
            finals["start"])


def _verdict(w, finals: dict) -> str:
    return verdict(*_verdict_args(w, finals))


def write_table(family: str, rows: list[dict], n: int, seed: int, lr_scales, max_rounds: Optional[int],
                out: str | Path, rounds: Optional[int] = None, optimizers: tuple[str, ...] = (DEFAULT,),
                check_seeds: tuple[int, ...] = ()) -> None:
    """``out/FAMILY.md`` (with the command that regenerates it; one section per server
    optimizer when there are several) and ``out/FAMILY.json``."""
    out = Path(out)
    cmd = f"distopt results {family}"
    if n != 4:
        cmd += f" --workers {n}"
    if rounds:
        cmd += f" --rounds {rounds}"
    if max_rounds:
        cmd += f" --max-rounds {max_rounds}"
    if seed:
        cmd += f" --seed {seed}"
    if tuple(lr_scales) != LR_SCALES:
        cmd += " --lr-scales " + ",".join(f"{x:g}" for x in lr_scales)
    single = tuple(optimizers) == (DEFAULT,)  # the table as before optimizers were added
    if not single:
        cmd += " --optimizers " + ",".join(optimizers)
    if check_seeds:
        cmd += " --check-seeds " + ",".join(str(x) for x in check_seeds)
    cols = (["workload", "metric", "rounds", "lr", "start"] + [f"{m}+{c}" for m, c in CONFIGS]
            + [f"bits {m}" for m, _ in CONFIGS] + ["verdict"] + (["across seeds"] if check_seeds else []))
    scales = f"{{{', '.join(f'{x:g}' for x in lr_scales)}}}"
    text = (f"# {family}: final metric after equal rounds, n = {n} workers\n\n"
            f"Generated by `{cmd}` (seed {seed}, float32"
            + (", each workload's default lr and server optimizer). " if single else "; one section per server optimizer). ")
            + f"gd runs at that lr; each compressed method runs at lr x {scales} and shows its best final metric, "
            "with the scale in parentheses.\n"
            "bits = uplink bits per worker, cumulative (round 0 of ef21/econtrol sends the full gradient); "
            "for a diverged run, what it sent before it stopped.\n"
            + (f"across seeds: gd, EF21 and DCGD re-run at seeds {', '.join(str(x) for x in check_seeds)} at the lrs "
               f"chosen at seed {seed}; over all {len(check_seeds) + 1} seeds, how often EF21 survives (within 10% "
               "of gd, or better) and how it stands against DCGD (close, ahead or behind).\n" if check_seeds else "")
            + "\n")
    if single:
        text += markdown_table(rows, cols)
    else:
        per = len(rows) // len(optimizers)
        for i, opt in enumerate(optimizers):
            part = rows[i * per:(i + 1) * per]
            if opt == DEFAULT:
                used = ", ".join(sorted({r["optimizer"] for r in part}))
                text += f"## Server optimizer: each workload's default ({used}), at its default lr\n\n"
            else:
                text += (f"## Server optimizer: {opt}\n\n"
                         f"The workloads' lrs are tuned for their default optimizer, so gd's lr (the lr column) is "
                         f"searched first: from the workload's lr, x{LR_STEP:g} until gd's final metric gets worse "
                         f"(ties go on; at most {LR_STEPS} steps), or /{LR_STEP:g} if no larger lr is better; the "
                         f"compressed methods run at that lr x {scales}.\n\n")
            text += markdown_table(part, cols + (["gd lrs tried"] if opt != DEFAULT else [])) + "\n"
    atomic_write_text(out / f"{family}.md", text)
    atomic_write_json(out / f"{family}.json", rows)
