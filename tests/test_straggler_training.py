"""Method rounds under stragglers in the simulator, driver checkpoints, and one worker's runtime
(what each Ray actor runs) without Ray: dropped messages never move a worker's state, replay
after a restart rebuilds it, the worker's own-shard oracle equals the simulator's row."""
from __future__ import annotations

import pytest
import torch

from simulator.engine import RunConfig, Simulation, build_method, resolve_lr

N = 6
DELAYS = "gilbert-elliott:p=0.25,q=0.5"


@pytest.fixture(scope="module")
def logreg():
    from experiments.workloads import make

    w = make("logreg:rows=301,features=10,scale=5,scaled_frac=0.2")
    return w, w.oracle(N)


def _cfg(**kw):
    return RunConfig(**{"method": "ef21", "compressor": "topk:k=2", "lr": 0.3, "rounds": 20, "progress": False, **kw})


def test_dropped_messages_keep_ef21_in_sync(logreg):
    """EF21's server g must equal the mean of the workers' committed g_i even when stragglers'
    messages are dropped (their states must not move)."""
    _, o = logreg
    sim = Simulation(o, _cfg(delays=DELAYS, master="deadline:mu=0.5"))
    hist = sim.run()
    assert hist.last["erased"] > 0, "the test needs dropped messages"
    assert torch.allclose(sim.server_state.g, sim.executor.W.g.mean(0), atol=1e-14, rtol=0)
    assert hist.last["loss"] < hist.rows[0]["loss"]


def test_round_zero_waits_for_everyone_and_columns(logreg):
    _, o = logreg
    hist = Simulation(o, _cfg(rounds=8, delays="bernoulli:p=0.9")).run()
    assert hist.rows[1]["stragglers"] == "" and hist.rows[1]["wait_outs"] == 1  # round 0: a wait-out
    assert {"time_s", "stragglers", "erased", "wait_outs", "events"} <= set(hist.last)
    plain = Simulation(o, _cfg(rounds=2)).run()
    assert "time_s" not in plain.last  # no clock, no clock columns


def test_vectorized_equals_loop_under_stragglers(logreg):
    _, o = logreg
    a = Simulation(o, _cfg(delays=DELAYS), keep_iterates=True)
    a.run()
    b = Simulation(o, _cfg(delays=DELAYS, workers="loop"), keep_iterates=True)
    b.run()
    assert torch.allclose(torch.stack(a.iterates), torch.stack(b.iterates), atol=1e-13, rtol=0)
    assert a.history.column("time_s") == b.history.column("time_s")


def test_resume_is_bit_exact(logreg, tmp_path):
    _, o = logreg
    cfg = _cfg(rounds=14, delays=DELAYS, checkpoint_every=5, down_compressor="topk:k=3")
    full = Simulation(o, cfg, tmp_path / "a")
    full.run()
    assert (tmp_path / "a" / "checkpoint.pt").exists()
    resumed = Simulation(o, cfg, tmp_path / "b", resume=tmp_path / "a")  # the last checkpoint: round 10
    resumed.run()
    assert torch.equal(full.final_x, resumed.final_x)
    cols = ("round", "loss", "grad_norm_sq", "bits_up", "bits_down", "time_s", "erased")
    assert [[r[c] for c in cols] for r in full.history.rows] == [[r[c] for c in cols] for r in resumed.history.rows]
    with pytest.raises(ValueError, match="checkpoint was written with lr=0.3"):
        Simulation(o, _cfg(rounds=14, lr=0.2, delays=DELAYS, down_compressor="topk:k=3"), tmp_path / "c",
                   resume=tmp_path / "a").run()
    with pytest.raises(ValueError, match="no checkpoint"):
        Simulation(o, cfg, tmp_path / "d", resume=tmp_path / "nowhere").run()


def test_bad_straggler_flags():
    with pytest.raises(ValueError, match="--master needs --delays"):
        RunConfig(master="deadline:mu=1")
    from simulator.clock import make_clock

    with pytest.raises(ValueError, match="pattern' needs a flagging model"):
        make_clock("lognormal", "pattern", 4, 10, 0)
    with pytest.raises(ValueError, match="unknown straggler model"):
        make_clock("gilbert", None, 4, 10, 0)


# -- one worker's runtime (what a Ray actor runs) --------------------------------------------
def _spec(logreg, batch=None, seed=0):
    from workers.runtime import WorkerSpec

    w, o = logreg
    cfg = _cfg()
    m = build_method(cfg, o)
    return WorkerSpec(w, N, m, resolve_lr(cfg, m, o), seed=seed, dtype=torch.float64, batch=batch)


def test_two_phase_step_commits_only_on_the_drivers_word(logreg):
    from workers.runtime import WorkerRuntime

    rt = WorkerRuntime(_spec(logreg), 2)
    x0 = torch.zeros(logreg[1].d, dtype=torch.float64)
    rt.step(0, x0, True)
    assert rt.state is None  # pending until settled
    rt.settle(0, True)
    g0 = rt.state.g.clone()
    rt.step(1, x0 + 0.1, False)
    rt.settle(1, False)  # dropped: the state must not move
    assert torch.equal(rt.state.g, g0)
    rt.step(2, x0 + 0.2, False)
    rt.settle(2, True)
    assert not torch.equal(rt.state.g, g0)


def test_restore_with_replay_rebuilds_the_state(logreg):
    from workers.runtime import WorkerRuntime

    xs = [torch.full((logreg[1].d,), 0.05 * t, dtype=torch.float64) for t in range(6)]
    ok = [True, True, False, True, False, True]
    a = WorkerRuntime(_spec(logreg), 4)
    for t in range(6):
        a.step(t, xs[t], t == 0)
        a.settle(t, ok[t])
        if t == 1:
            snap = a.snapshot()
    b = WorkerRuntime(_spec(logreg), 4)  # the restarted actor
    b.restore(snap, [(t, xs[t], False, ok[t]) for t in range(2, 6)])
    assert torch.equal(a.state.g, b.state.g)


@pytest.mark.parametrize("batch", [None, 7])
def test_own_shard_oracle_is_the_simulators_row(logreg, batch):
    from workers.runtime import worker_oracle

    w, _ = logreg
    o = w.oracle(N, batch=batch, seed=5)
    x = torch.linspace(-0.5, 0.5, o.d, dtype=torch.float64)
    rows = o.grads(x, 3, torch.arange(N))
    for i in (0, N - 1):
        mine = worker_oracle(_spec(logreg, batch=batch, seed=5), i)
        # equal up to the last bit or two: bmm over one shard or a batch of n may sum in another order
        assert torch.allclose(mine.grads(x, 3, torch.tensor([i]))[0], rows[i], atol=1e-14, rtol=0)
