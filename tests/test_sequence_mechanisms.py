"""Unit tests of the sequence workloads' mechanisms (pvrnn, dbpm, seld_synth, coral_rca) and of
the shared side-by-side trainer; registration, the CLI run and the quick checks are covered by
tests/test_workloads.py."""
import torch

from experiments.workloads.sequence import common as C
from experiments.workloads.sequence.coral_rca import CORAL
from experiments.workloads.sequence.dbpm import DBPM
from experiments.workloads.sequence.pvrnn import PVRNN
from experiments.workloads.sequence.seld_synth import SELDSynth, seld_metrics
from simulator.engine import RunConfig, Simulation
from simulator.oracles import VmapOracle

TINY_PVRNN = PVRNN(d_units=6, n_train=4, n_test=2, seq_len=10, period=5, er_from=4, er_horizon=2, er_iters=2)


def test_pvrnn_adaptive_vectors_stay_on_their_worker():
    o = VmapOracle(TINY_PVRNN, 2, seed=0, dtype=torch.float64)
    weights = sum(v.numel() for k, v in TINY_PVRNN.init_params(0).items() if k != "A")
    assert o.d == weights, "A is not part of the communicated vector"
    before = o.local["A"].clone()  # [2 workers, N, T, 2Z]
    o.grads(o.x0(), 0, torch.arange(2))
    moved = (o.local["A"] != before).flatten(2).any(2)  # [worker, sequence]
    owner = torch.arange(4) % 2
    assert torch.equal(moved, torch.stack([owner == 0, owner == 1])), "each worker updates only its own sequences' A"


def _two_worker_batch(w, step):
    return tuple(torch.cat([u, v]) for u, v in zip(w.batch(0, 2, step), w.batch(1, 2, step)))


def test_train_many_is_the_simulators_round():
    w = TINY_PVRNN
    o = VmapOracle(w, 2, seed=3, dtype=torch.float64)
    sim = Simulation(o, RunConfig(method="gd", compressor="identity", lr=w.default_lr, rounds=3, eval_every=3,
                                  optimizer="adam", progress=False))
    sim.run()
    p64 = {k: v.double() for k, v in w.init_params(3).items()}
    P = C.train_many(w, [p64, p64], lambda t: _two_worker_batch(w, t), 3, w.default_lr)
    got = o.spec.unflatten(sim.final_x)
    for k, v in got.items():
        assert torch.allclose(P[k][0], v, atol=1e-10), k
    s = torch.arange(4)
    assert torch.allclose(P["A"][1], o.local["A"][s % 2, s], atol=1e-10)


def test_dbpm_memory_is_written_exactly_and_stays_local():
    w = DBPM(n_train=16, n_probe=12, length=64, wreck_pieces=16, epochs=5, warm_epochs=2, batch_size=8, channels=4,
             rep_dim=8, proj_dim=4)  # one minibatch per epoch: step = epoch
    o = VmapOracle(w, 2, seed=0, dtype=torch.float64)
    assert o.d == sum(v.numel() for k, v in w.init_params(0).items() if k != "memory")
    x = o.x0()
    for step in range(3):
        b = w.batch(0, 2, step)
        before = o.local["memory"][0].clone()
        o.grads(x, step, torch.arange(2))
        P = {**o.spec.unflatten(x), "memory": before}
        loss = w.pair_losses(P, b[0].double(), b[1].double())
        inc = (step + 1) / w.epochs * loss
        assert torch.allclose(o.local["memory"][0][b[2], 0] - before[b[2], 0], inc, atol=1e-12)
    own = torch.arange(16) % 2
    assert torch.equal(o.local["memory"][0][:, 1], 3.0 * (own == 0)), "3 epochs counted, own rows only"
    assert torch.equal(o.local["memory"][1][:, 1], 3.0 * (own == 1))


def test_dbpm_flags_and_downweights_outlying_pairs():
    w = DBPM(beta_np=1.0, beta_fp=1.0)
    _, _, noisy, faulty = w.train_set()
    g = torch.Generator().manual_seed(0)
    m = 2.0 + 0.05 * torch.randn(w.n_train, generator=g)
    m = torch.where(noisy, 1.0, torch.where(faulty, 3.0, m))  # injected: far below / above
    memory = torch.stack([m, torch.ones_like(m)], 1)
    np_flag, fp_flag = w.flags(memory)
    assert torch.equal(np_flag, noisy) and torch.equal(fp_flag, faulty)
    assert w.mining(memory)["recall"] == 1.0
    # after warm-up a flagged pair's loss is scaled by the Gaussian pdf (a far-out loss: ~0)
    P = {**w.init_params(0), "memory": memory}
    b = w.batch(0, 1, w.warm_epochs * w.steps_per_epoch(1))  # the first step after warm-up
    plain = w.objective(P, b, torch.tensor([0.0, 1.0, 1.0]))
    mined = w.objective(P, b, torch.tensor([1.0, 1.0, 1.0]))
    assert mined < plain


def test_coral_acyclicity_and_root_cause_walk():
    w = CORAL()
    S = w.system()
    assert abs(float(w.acyclicity(S["W_post"]))) < 1e-4, "the true graph is a DAG"
    cyc = torch.zeros(w.d, w.d)
    cyc[0, 1] = cyc[1, 0] = 1.0
    assert float(w.acyclicity(cyc)) > 0.5
    assert w.rca(S["W_post"])["pr5"] == 1.0, "on the true post-change graph the walk finds the root cause"
    assert w.rca(S["W"])["pr5"] == 0.0, "the pre-change graph does not (the fault is chosen so)"
    t = w.detect()
    assert w.history <= t < w.history + 20, "SSA + CUSUM fires shortly after the change"


def test_seld_metrics_and_unlabelled_interferers():
    w = SELDSynth(n_train=32, n_test=16)
    D = w.generate("test")
    act = D["target"].norm(dim=-1) > 0.5
    perfect = seld_metrics(act, D["target"], D["ref_doa"], D["ref_mask"])
    assert perfect["le_cd"] < 1e-2 and perfect["f20"] > 0.9 and perfect["lr_cd"] == 1.0
    silent = seld_metrics(torch.zeros_like(act), D["target"], D["ref_doa"], D["ref_mask"])
    assert silent["er20"] == 1.0 and silent["f20"] == 0.0
    clean = SELDSynth(n_train=32, n_test=16, interferers=False).generate("test")
    assert torch.equal(clean["target"], D["target"]), "interferers are not annotated"
    assert not torch.allclose(clean["x"], D["x"])
