"""The DDP comm hook in real DistributedDataParallel: gloo, world size 2, ports from the OS."""
from __future__ import annotations

import math

import pytest
import torch
import torch.multiprocessing as mp

from tests import ddp_procs as P


def _spawn(fn, *args):
    port = P.free_port()
    ctx = mp.start_processes(fn, args=(2, port, *args), nprocs=2, join=True, start_method="fork")
    return ctx


def test_identity_hook_equals_ddp_allreduce(tmp_path):
    out = str(tmp_path / "r.pt")
    _spawn(P.run_identity_vs_default, out)
    r = torch.load(out, weights_only=True)
    assert torch.allclose(r["ours"], r["ref"], atol=1e-15, rtol=0)


@pytest.fixture(scope="module")
def ef21_run(tmp_path_factory):
    from experiments.workloads import make

    w = make("logreg:rows=120,features=8,scale=4,scaled_frac=0.2,reg=0.1")
    shards = w.shards(2)
    data = {"shards": shards, "reg": 0.1, "lr": 0.3, "steps": 40, "k": 2}
    out = str(tmp_path_factory.mktemp("ddp") / "r.pt")
    _spawn(P.run_ef21_parity_and_resume, out, data)
    return torch.load(out, weights_only=True), w, data


def test_ef21_topk_through_ddp_equals_the_simulator(ef21_run):
    from simulator.engine import RunConfig, Simulation

    r, w, data = ef21_run
    sim = Simulation(w.oracle(2), RunConfig(method="ef21", compressor=f"topk:k={data['k']}", lr=data["lr"],
                                            rounds=data["steps"], seed=3, progress=False), keep_iterates=True)
    sim.run()
    ref = torch.stack(sim.iterates)
    assert float((r["xs"] - ref).abs().max()) < 1e-12
    # DDP reuses its bucket buffers from step 0 on (find_unused_parameters): the state must not
    # live in one (it did: EF21's g_i was the round-0 buffer, overwritten by the next gradients)
    assert float((r["xs_unused"] - ref).abs().max()) < 1e-12
    for other in ("xs_view", "xs_static"):  # gradient_as_bucket_view, static_graph
        assert float((r[other] - ref).abs().max()) < 1e-12, other
    # bits: round 0 sends 8 float64 values, then 2 values + 2 int16 indices per step
    assert r["bits"] == 8 * 64 + (data["steps"] - 1) * 2 * (64 + 16)
    assert r["bits_last"] == 2 * (64 + 16)


def test_resume_from_state_dict_is_exact(ef21_run):
    r, _, _ = ef21_run
    assert torch.equal(r["full"], r["resumed"])


def test_flat_and_layerwise_both_train_and_differ(ef21_run):
    r, _, _ = ef21_run
    for key in ("loss_flat", "loss_layer"):
        assert r[key][-1] < 0.7 * r[key][0], key
    assert not torch.equal(r["flat"], r["layer"])
    assert all(math.isfinite(v) for v in r["loss_bf16"])


def test_bad_configurations_fail_at_construction():
    from distopt.ddp import CommState

    with pytest.raises(ValueError, match="unknown method"):
        CommState(method="ef22")
    with pytest.raises(ValueError, match="valid:"):
        CommState(method="ef21", compressor="topkk:k=1")
    with pytest.raises(ValueError, match="weights="):
        CommState(method="ef21-w", compressor="topk:k=1")
    with pytest.raises(ValueError, match="pass lr="):
        CommState(method="ef14", compressor="topk:k=1")
    with pytest.raises(ValueError, match="granularity"):
        CommState(method="ef21", compressor="topk:k=1", granularity="bucket")
    with pytest.raises(ValueError, match="one smoothness constant per rank"):
        CommState(method="ef21-w", compressor="topk:k=1", weights=[1.0, 2.0])


def test_a_donated_bucket_state_gives_the_torch_paths_bits(tmp_path):
    from distopt import _native

    if not _native.parallel_row():
        pytest.skip("a lone bucket takes the torch path without an OpenMP build of the kernel")
    out = str(tmp_path / "r.pt")
    _spawn(P.run_donated_bucket, out)
    r = torch.load(out, weights_only=True)
    for method, (same, unchanged) in r.items():
        assert same, f"{method}: the kernel's in-place step and the torch path differ"
        assert unchanged, f"{method}: a state_dict taken mid-run changed afterwards"
