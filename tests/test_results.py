"""The family results table (experiments/results.py): verdict wording and what a diverged run reports."""
import math
import re

import pytest

from experiments.results import best_of, run_one, verdict
from experiments.workloads import make


@pytest.mark.parametrize("higher, gd, ef, dc, expected", [
    (False, 0.10, 0.105, 0.9, "survives top-1%; error feedback is what saves it"),
    (False, 0.10, 0.50, 0.9, "degraded at top-1%; error feedback helps"),
    (False, 0.10, 0.50, 0.51, "degraded at top-1%; dcgd does as well"),
    (False, 0.10, 0.50, 0.12, "degraded at top-1%; dcgd does better"),
    (True, 0.90, 0.89, math.nan, "survives top-1%; error feedback is what saves it"),  # dcgd diverged
    (True, 0.90, math.nan, 0.80, "degraded at top-1%; dcgd does better"),  # ef21 diverged
])
def test_verdict(higher, gd, ef, dc, expected):
    assert verdict(higher, gd, ef, dc) == expected


def test_verdict_measures_closeness_against_how_far_gd_went():
    # accuracy 0.54 -> 0.60 under gd: 0.57 is within 10% of 0.60, but half of gd's progress short
    assert verdict(True, 0.60, 0.57, 0.54) == "survives top-1%; dcgd does as well"  # no start: value only
    assert verdict(True, 0.60, 0.57, 0.54, start=0.54) == "degraded at top-1%; error feedback helps"
    assert verdict(True, 0.60, 0.598, 0.597, start=0.54) == "survives top-1%; dcgd does as well"
    # and 10% of the value still applies where gd went far: rmse 1.7 -> 0.034, 0.17 is 5x worse
    assert verdict(False, 0.034, 0.17, 0.045, start=1.7) == "degraded at top-1%; dcgd does better"


def test_diverged_run_reports_round_and_bits_sent():
    w = make("logreg")
    ok = run_one(w, "ef21", "topk:ratio=0.1", n=4, rounds=5, seed=0)
    assert ok["status"] == "finished" and ok["stopped_round"] is None and ok["bits_up"] > 0
    bad = run_one(make("lstsq"), "dcgd", "topk:ratio=0.1", n=4, rounds=2000, seed=0, lr=1e3)
    assert bad["status"].startswith("diverged") and bad["stopped_round"] is not None
    assert bad["bits_up"] > 0  # what it sent before it diverged, not the round-0 row's zero


def test_best_of_prefers_finished_runs_then_the_longest_lasting():
    fin = lambda m: {"status": "finished", "metric": m, "stopped_round": None}  # noqa: E731
    div = lambda t: {"status": "diverged: nan", "metric": math.nan, "stopped_round": t}  # noqa: E731
    assert best_of({1.0: fin(0.5), 0.3: fin(0.2), 0.1: div(4)}, higher=False)[0] == 0.3
    assert best_of({1.0: fin(0.5), 0.3: fin(0.2), 0.1: div(4)}, higher=True)[0] == 1.0
    assert best_of({1.0: div(3), 0.3: div(40), 0.1: div(7)}, higher=True)[0] == 0.3


def test_results_command_rejects_bad_lr_scales():
    from experiments.cli import main

    assert main(["results", "sequence", "--lr-scales", "1,zero"]) == 2
    assert main(["results", "sequence", "--lr-scales", "1,-0.1"]) == 2


def test_family_results_resume_from_finished_workloads(tmp_path, monkeypatch):
    import experiments.results as R

    rows = R.family_results("convex", rounds=3, out=tmp_path, progress=False, lr_scales=(1.0,))
    assert (tmp_path / "convex.md").exists() and len(rows) == 3

    def boom(*a, **k):
        raise AssertionError("a finished workload ran again")

    monkeypatch.setattr(R, "run_one", boom)
    again = R.family_results("convex", rounds=3, out=tmp_path, progress=False, lr_scales=(1.0,))
    assert [r["workload"] for r in again] == [r["workload"] for r in rows]
    with pytest.raises(AssertionError, match="ran again"):  # other settings: not reused
        R.family_results("convex", rounds=4, out=tmp_path, progress=False, lr_scales=(1.0,))
    fingerprint = R._fingerprint
    monkeypatch.setattr(R, "_fingerprint", lambda w: {**fingerprint(w), "source": "edited"})
    with pytest.raises(AssertionError, match="ran again"):  # the workload's code changed: not reused
        R.family_results("convex", rounds=3, out=tmp_path, progress=False, lr_scales=(1.0,))


def test_search_lr_climbs_while_the_metric_improves_then_tries_down():
    from experiments.results import search_lr

    def fake(best):  # final metric is |log10(lr / best)|, lower is better; lr > 10 diverges
        def run(lr):
            if lr > 10:
                return {"status": "diverged: nan", "metric": math.nan, "stopped_round": 3}
            return {"status": "finished", "metric": abs(math.log10(lr / best)), "stopped_round": None}
        return run

    lr, r = search_lr(fake(0.9), 0.01, higher=False)
    assert lr == pytest.approx(0.81) and r["lr_tried"] == pytest.approx([0.01, 0.03, 0.09, 0.27, 0.81, 2.43])
    lr, r = search_lr(fake(1e-4), 0.01, higher=False)  # first step up is worse: go down instead
    assert lr == pytest.approx(0.01 / 81) and min(r["lr_tried"]) == pytest.approx(0.01 / 243)
    lr, _ = search_lr(fake(50.0), 1.0, higher=False)  # divergence stops the climb
    assert lr == pytest.approx(9.0)
    lr, r = search_lr(fake(0.01), 0.01, higher=False)  # already best: one try each way
    assert lr == 0.01 and len(r["lr_tried"]) == 3

    def blowup(lr):  # above 0.05 diverges, the sooner the larger lr; below, best at 0.01
        if lr > 0.05:
            return {"status": "diverged: nan", "metric": math.nan, "stopped_round": int(1 / lr)}
        return {"status": "finished", "metric": abs(math.log10(lr / 0.01)), "stopped_round": None}

    lr, r = search_lr(blowup, 1.0, higher=False)  # diverged base: later divergence counts as better, then finish
    assert lr == pytest.approx(1 / 81) and len(r["lr_tried"]) == 7

    def flat(lr):  # untrained (1.0) below lr 0.5, then 0.2 at every larger lr; higher is worse
        return {"status": "finished", "metric": 1.0 if lr < 0.5 else 0.2, "stopped_round": None}

    lr, r = search_lr(flat, 0.01, higher=False)  # ties do not stop the climb; the first best lr is kept
    assert lr == pytest.approx(0.81) and max(r["lr_tried"]) == pytest.approx(0.01 * 3 ** 6)


def test_family_results_one_section_per_server_optimizer(tmp_path, monkeypatch):
    import experiments.results as R

    monkeypatch.setattr(type(make("logreg")), "default_lr", 0.5)  # a tuned lr: searched under momentum
    rows = R.family_results("convex", rounds=3, out=tmp_path, progress=False, lr_scales=(1.0,),
                            optimizers=("default", "momentum"))
    assert len(rows) == 6 and [r["optimizer"] for r in rows] == ["sgd"] * 3 + ["momentum"] * 3
    text = (tmp_path / "convex.md").read_text()
    assert "--optimizers default,momentum" in text
    assert "## Server optimizer: each workload's default (sgd)" in text and "## Server optimizer: momentum" in text
    by = {(r["optimizer"], r["workload"]): r for r in rows}
    assert len(by["momentum", "logreg"]["gd lrs tried"].split(", ")) >= 3  # 0.5 and a step each way at least
    lr = by["momentum", "logreg"]["lr"]
    assert any(float(x) == pytest.approx(lr, rel=0.01) for x in by["momentum", "logreg"]["gd lrs tried"].split(", "))
    assert "gd lrs tried" not in by["sgd", "logreg"] and "gd lrs tried" not in by["momentum", "lstsq"]  # theory lr
    with pytest.raises(ValueError, match="optimizer"):
        R.family_results("convex", rounds=3, out=tmp_path, progress=False, optimizers=("default", "adamw"))


def test_check_seeds_rerun_the_chosen_lrs_and_count_the_verdicts(tmp_path, monkeypatch):
    import experiments.results as R

    real = R.run_one
    calls = []

    def spy(w, m, c, n, r, seed, lr=None, optimizer=None):
        calls.append((w.name, m, seed, lr))
        return real(w, m, c, n, r, seed, lr=lr, optimizer=optimizer)

    monkeypatch.setattr(R, "run_one", spy)
    monkeypatch.setattr(type(make("logreg")), "default_lr", 0.5)
    rows = R.family_results("convex", rounds=3, out=tmp_path, progress=False, lr_scales=(1.0, 0.1),
                            check_seeds=(1, 2))
    logreg = next(r for r in rows if r["workload"] == "logreg")
    extra = [c for c in calls if c[0] == "logreg" and c[2] != 0]
    # gd, ef21 and dcgd (not econtrol) once per extra seed, each at the lr the seed-0 row shows
    assert sorted((m, s) for _, m, s, _ in extra) == sorted((m, s) for m in ("gd", "ef21", "dcgd") for s in (1, 2))
    ef_scale = R._scale_shown(logreg["ef21+topk:ratio=0.01"])
    assert [lr for _, m, _, lr in extra if m == "ef21"] == pytest.approx([0.5 * ef_scale] * 2)
    text = logreg["across seeds"]
    survives, ahead, close, behind = (int(x) for x in re.findall(r"(\d+)(?:/3| ahead| close| behind)", text))
    assert ahead + close + behind == 3 and 0 <= survives <= 3, text
    md = (tmp_path / "convex.md").read_text()
    assert "--check-seeds 1,2" in md and "across seeds" in md
    n = len(calls)  # the extra seeds are cached like rows
    R.family_results("convex", rounds=3, out=tmp_path, progress=False, lr_scales=(1.0, 0.1), check_seeds=(1, 2))
    assert len(calls) == n
    with pytest.raises(ValueError, match="differ"):
        R.family_results("convex", rounds=3, out=tmp_path, progress=False, check_seeds=(0,))


def test_across_seeds_counts_each_seeds_verdict(tmp_path, monkeypatch):
    import experiments.results as R

    finals = {1: (1.0, 1.05, 3.0), 2: (1.0, 3.0, 2.0)}  # seed: gd, ef21, dcgd (lower is better, start 10)

    def fake(w, m, c, n, r, seed, lr=None, optimizer=None):
        return {"metric": finals[seed][("gd", "ef21", "dcgd").index(m)], "status": "finished", "start": 10.0}

    monkeypatch.setattr(R, "run_one", fake)
    w = make("logreg")
    seed0 = {"gd+identity": 1.0, "ef21+topk:ratio=0.01": 1.0, "dcgd+topk:ratio=0.01": 1.02, "start": 10.0}
    lrs = {"gd+identity": 0.1, "ef21+topk:ratio=0.01": 0.03, "dcgd+topk:ratio=0.01": 0.1}
    text = R._across_seeds("t", w, "default", 4, 3, 0, (1, 2), seed0, lrs, tmp_path)
    assert text == "survives 2/3; vs dcgd: 1 ahead, 1 close, 1 behind"
