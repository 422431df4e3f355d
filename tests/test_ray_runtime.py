"""The Ray runtime (issue 6): one actor per worker under our driver, on a local Ray with
num_cpus=2 (one cluster for the module, actors at 0.25 CPU). Ray == simulator for EF21 + Top-K;
injected delays with and without a code; a worker killed mid-run; resume == uninterrupted;
clear errors for a bad address and a too-small cluster."""
from __future__ import annotations

import time

import pytest
import torch

ray = pytest.importorskip("ray")

from simulator.engine import RunConfig, Simulation, build_method, resolve_lr  # noqa: E402

N = 4
PATTERN = "gilbert-elliott:p=0.25,q=0.5"  # flagging model, pattern rule: the same stragglers on Ray and in the sim


def test_bad_address_fails_fast_with_the_fix():
    from workers.cluster import connect

    if ray.is_initialized():
        pytest.skip("another test left Ray running")
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="cannot reach the Ray cluster at '127.0.0.1:1'.*ray start --head"):
        connect("127.0.0.1:1")
    assert time.perf_counter() - t0 < 10
    with pytest.raises(ValueError, match="is not host:port"):
        connect("nowhere")
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def env(cluster):
    """EF21 + Top-K on logreg (float64) and a RayExecutor reused by the method-round tests."""
    from experiments.workloads import make
    from workers.executor import RayExecutor
    from workers.runtime import WorkerSpec

    w = make("logreg:rows=400,features=12,scale=5,scaled_frac=0.25")
    o = w.oracle(N)
    cfg = _cfg()
    m = build_method(cfg, o)
    ex = RayExecutor(WorkerSpec(w, N, m, resolve_lr(cfg, m, o), seed=0, dtype=torch.float64), o.d, cpus=0.25,
                     snapshot_every=4)
    yield w, o, ex
    ex.close()


def _cfg(**kw):
    return RunConfig(**{"method": "ef21", "compressor": "topk:k=2", "lr": 0.3, "rounds": 12, "progress": False, **kw})


def _committed_mean(ex):
    return torch.stack([s["state"].g for s in ex.snapshot()["states"]]).mean(0)


def test_cluster_too_small_names_the_fix(cluster):
    from workers.cluster import connect

    with pytest.raises(ValueError, match="needs 64 CPUs but the Ray cluster has 2.*--cpus-per-worker"):
        connect(None, need_cpus=64)
    with pytest.raises(ValueError, match="needs 1 GPUs"):
        connect(None, need_gpus=1)


def test_ray_equals_sim_for_ef21_topk(env):
    _, o, ex = env
    sim = Simulation(o, _cfg(), keep_iterates=True)
    sim.run()
    rs = Simulation(o, _cfg(), keep_iterates=True, executor=ex)
    hist = rs.run()
    assert torch.allclose(torch.stack(sim.iterates), torch.stack(rs.iterates), atol=1e-12, rtol=0)
    assert sim.history.column("bits_up") == rs.history.column("bits_up")
    assert hist.last["time_s"] > 0 and hist.last["erased"] == 0  # measured clock, nobody late


def test_delays_drop_stragglers_and_keep_ef21_in_sync(env):
    """Injected delays as real sleeps; the pattern rule erases the model's stragglers, so Ray and
    the simulator make the same decisions. Dropped messages never moved a worker's state."""
    _, o, ex = env
    cfg = _cfg(rounds=10, delays=PATTERN, delay_scale=0.01)
    sim = Simulation(o, cfg, keep_iterates=True)
    sim.run()
    rs = Simulation(o, cfg, keep_iterates=True, executor=ex)
    hist = rs.run()
    assert hist.last["erased"] > 0 and hist.column("stragglers") == sim.history.column("stragglers")
    assert torch.allclose(torch.stack(sim.iterates), torch.stack(rs.iterates), atol=1e-12, rtol=0)
    assert torch.allclose(rs.server_state.g, _committed_mean(ex), atol=1e-13, rtol=0)
    assert hist.last["time_s"] >= 0.8 * sim.history.last["time_s"]  # the sleeps really happened


def test_killed_worker_is_a_straggler_and_is_restored(env):
    _, o, ex = env
    ex.faults = {(4, 1)}
    try:
        rs = Simulation(o, _cfg(rounds=9), executor=ex)
        hist = rs.run()
    finally:
        ex.faults = set()
    assert [r["round"] for r in hist.rows] == list(range(10))  # every round recorded
    events = " ".join(r["events"] for r in hist.rows)
    assert "worker 1 killed" in events and "worker 1 died" in events and "restored" in events
    assert hist.last["erased"] >= 1
    assert torch.allclose(rs.server_state.g, _committed_mean(ex), atol=1e-13, rtol=0)
    assert hist.last["loss"] < hist.rows[0]["loss"]


def test_resume_from_a_checkpoint_equals_the_uninterrupted_run(env, tmp_path):
    _, o, ex = env
    cfg = _cfg(rounds=10, delays=PATTERN, delay_scale=0.005, checkpoint_every=4)
    full = Simulation(o, cfg, tmp_path / "a", executor=ex)
    full.run()
    resumed = Simulation(o, cfg, tmp_path / "b", executor=ex, resume=tmp_path / "a")  # from round 8
    resumed.run()
    assert torch.equal(full.final_x, resumed.final_x)
    cols = ("round", "loss", "grad_norm_sq", "bits_up", "bits_down", "stragglers", "erased", "wait_outs")
    assert [[r[c] for c in cols] for r in full.history.rows] == [[r[c] for c in cols] for r in resumed.history.rows]
    with pytest.raises(ValueError, match="holds ray worker states.*--backend ray"):
        Simulation(o, cfg, tmp_path / "c", resume=tmp_path / "a").run()


def test_coded_run_with_delays_decodes_every_job(cluster, tmp_path):
    """`distopt train --backend ray --code m-sgc --delays ...`: every job decoded, and the same
    models as `--backend sim` (pattern rule: identical straggler decisions)."""
    from experiments.cli import main
    from simulator.history import History

    args = ["train", "--workers", str(N), "--cpus-per-worker", "0.25", "--workload", "logreg:rows=200,features=6",
            "--method", "gd", "--compressor", "identity", "--code", "m-sgc:B=1,W=2,lam=2", "--delays",
            "gilbert-elliott:p=0.2,q=0.6", "--delay-scale", "0.01", "--rounds", "12", "--no-progress"]
    assert main(args + ["--backend", "ray", "--out", str(tmp_path / "ray")]) == 0
    assert main(args + ["--backend", "sim", "--out", str(tmp_path / "sim")]) == 0
    ray_rows, sim_rows = History.read(tmp_path / "ray"), History.read(tmp_path / "sim")
    assert ray_rows[-1]["jobs_decoded"] == 11 and ray_rows[-1]["failures"] == 0
    assert [r["stragglers"] for r in ray_rows] == [r["stragglers"] for r in sim_rows]
    assert ray_rows[-1]["erased"] > 0
    for a, b in zip(ray_rows, sim_rows):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-12, abs=1e-14)
    assert '"backend": "ray"' in (tmp_path / "ray" / "config.json").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("kw", [dict(method="ef21-plus", compressor="topk:k=2"), dict(method="ef14", compressor="randk:k=3"),
                                dict(method="econtrol", compressor="permk"), dict(method="ef21", compressor="powersgd:rank=1"),
                                dict(method="ef21", compressor="topk:k=2", participation=0.5, down_compressor="topk:k=4")])
def test_every_method_family_matches_the_simulator_on_ray(env, kw):
    """Payload decoding on the driver with the senders' Noise (Perm-K, Rand-K, PowerSGD's
    state, EF21+'s shipped change, partial participation, downlink): the simulator's iterates."""
    from workers.executor import RayExecutor
    from workers.runtime import WorkerSpec

    w, o, _ = env
    cfg = _cfg(rounds=8, **kw)
    sim = Simulation(o, cfg, keep_iterates=True)
    sim.run()
    m = build_method(cfg, o)
    ex = RayExecutor(WorkerSpec(w, N, m, resolve_lr(cfg, m, o)), o.d, cpus=0.25)
    try:
        rs = Simulation(o, cfg, keep_iterates=True, executor=ex)
        rs.run()
    finally:
        ex.close()
    assert torch.allclose(torch.stack(sim.iterates), torch.stack(rs.iterates), atol=1e-12, rtol=0)
    assert sim.history.column("bits_up") == rs.history.column("bits_up")
