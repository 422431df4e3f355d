"""Unit tests of the shared sequence pieces (experiments/workloads/sequence/ssm.py, signals.py):
HiPPO, the S4D and PTD diagonalisations, the FFT convolutions against their recurrences, and
the generators' invariants."""
import math

import pytest
import torch

from experiments.workloads.sequence import signals, ssm


def test_hippo_legs_entries_and_normal_part():
    A, B = ssm.hippo_legs(4)
    assert A[2, 0] == pytest.approx(-math.sqrt(5 * 1)) and A[3, 1] == pytest.approx(-math.sqrt(7 * 3))
    assert torch.allclose(torch.diag(A), -torch.arange(1, 5, dtype=torch.float64)) and A[0, 1] == 0
    assert torch.allclose(B, torch.sqrt(2 * torch.arange(4, dtype=torch.float64) + 1))
    AN, _ = ssm.normal_part(8)
    assert torch.allclose(AN + AN.T, -torch.eye(8, dtype=torch.float64))  # A_N + I/2 is skew-symmetric
    lam, V = ssm.s4d_legs_init(8)
    assert torch.allclose(V @ torch.diag(lam) @ V.conj().T, AN.to(V.dtype), atol=1e-12)
    assert torch.allclose(lam.real, torch.full((8,), -0.5, dtype=torch.float64))


def test_ptd_is_a_well_conditioned_diagonalisation_close_to_hippo():
    N = 32
    A, B = ssm.hippo_legs(N)
    kappa_direct = float(torch.linalg.cond(torch.linalg.eig(A)[1]))
    out = ssm.ptd_init(A, eps=(0.3, 1.0), gamma=300.0, generator=torch.Generator().manual_seed(0))
    lam, V, E = out["Lambda"], out["V"], out["E"]
    assert float(torch.linalg.matrix_norm(E, 2)) == pytest.approx(out["eps"])
    assert torch.allclose(V @ torch.diag(lam) @ torch.linalg.inv(V), (A + E).to(V.dtype), atol=1e-8)
    assert out["kappa"] < 1e4 < kappa_direct  # the direct eigendecomposition is hopeless (~1e19)
    assert float(lam.real.max()) < 0          # stable
    C = torch.randn(N, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    s = 1j * torch.logspace(-2, 4, 300, dtype=torch.float64)
    G = ssm.transfer_dense(A, B, C, s)
    Bc, Cc = B.to(torch.complex128), C.to(torch.complex128)
    gap_ptd = (ssm.transfer(lam, torch.linalg.solve(V, Bc), Cc @ V, s) - G).abs().max()
    lam_s, V_s = ssm.s4d_legs_init(N)
    s_all = torch.cat([s, 1j * lam_s.imag.abs()])  # S4D's resonances sit at its eigen-frequencies
    gap_s4d = (ssm.transfer(lam_s, V_s.conj().T @ (Bc / 2), Cc @ V_s, s_all) - ssm.transfer_dense(A, B, C, s_all)).abs().max()
    assert gap_ptd < 0.1 * gap_s4d, (float(gap_ptd), float(gap_s4d))


def test_balance_keeps_the_transfer_function():
    g = torch.Generator().manual_seed(0)
    lam = torch.complex(-torch.rand(6, dtype=torch.float64, generator=g) - 0.1, torch.randn(6, dtype=torch.float64, generator=g))
    Bt = torch.randn(6, 3, dtype=torch.complex128, generator=g) * 100
    Ct = torch.randn(2, 6, dtype=torch.complex128, generator=g) / 100
    Bb, Cb = ssm.balance(Bt, Ct)
    s = 1j * torch.linspace(0, 10, 7, dtype=torch.float64)
    assert torch.allclose(ssm.transfer(lam, Bt, Ct, s), ssm.transfer(lam, Bb, Cb, s))
    assert torch.allclose(Bb.abs().pow(2).sum(1), Cb.abs().pow(2).sum(0))


def test_fft_scan_equals_the_recurrence():
    g = torch.Generator().manual_seed(0)
    lam = torch.complex(-torch.rand(5, generator=g, dtype=torch.float64), 3 * torch.randn(5, generator=g, dtype=torch.float64))
    lam_bar, _ = ssm.zoh(lam, 0.1)
    v = torch.randn(2, 37, 5, dtype=torch.complex128, generator=g)
    assert torch.allclose(ssm.diag_scan(lam_bar, v), ssm.diag_scan_loop(lam_bar, v), atol=1e-10)


def test_s4d_convolution_kernel_equals_the_recurrence():
    """y = K * u with K_k = 2 Re(C A_bar^k B_bar) equals running x_k = A_bar x_{k-1} + B_bar u_k,
    y_k = 2 Re(C x_k) for every channel."""
    g = torch.Generator().manual_seed(0)
    H, N, L = 3, 4, 25
    lam = ssm.s4d_lin_init(N).expand(H, N)
    B = torch.randn(H, N, dtype=torch.complex128, generator=g)
    C = torch.randn(H, N, dtype=torch.complex128, generator=g)
    dt = torch.tensor([0.01, 0.05, 0.2], dtype=torch.float64)
    u = torch.randn(2, L, H, dtype=torch.float64, generator=g)
    y = ssm.causal_conv(u, ssm.s4d_kernel(lam, B, C, dt, L))
    lam_bar, gain = ssm.zoh(lam, dt[:, None])
    x = torch.zeros(2, H, N, dtype=torch.complex128)
    ref = []
    for k in range(L):
        x = lam_bar * x + gain * B * u[:, k, :, None]
        ref.append(2 * (C * x).sum(-1).real)
    assert torch.allclose(y, torch.stack(ref, 1), atol=1e-10)


def test_real_pairs_round_trip_and_gradients():
    z = torch.randn(4, 3, dtype=torch.complex64)
    assert torch.equal(ssm.as_complex(ssm.as_pairs(z)), z)
    t = ssm.as_pairs(z).requires_grad_(True)
    (ssm.as_complex(t).abs() ** 2).sum().backward()
    assert torch.allclose(t.grad, 2 * t.detach())


def test_mesh_routing_and_failure():
    edges, w = signals.mesh(0)
    R = signals.route(8, edges, w)
    assert R.sum(-1)[~torch.eye(8, dtype=torch.bool)].min() >= 1  # every OD pair is connected
    assert torch.equal(R, R.transpose(0, 1))                        # symmetric weights: same path both ways
    Rf = signals.route(8, edges, w, failed=3)
    assert Rf[..., 3].sum() == 0 and Rf.sum(-1)[~torch.eye(8, dtype=torch.bool)].min() >= 1
    loads = signals.mesh_link_loads(100, 0, failed=3, t_fail=60)
    assert torch.equal(loads[:60], signals.mesh_link_loads(100, 0)[:60]) and (loads[60:, 3] == 0).all()


def test_time_to_convergence_by_hand():
    err = torch.tensor([0.0, 0.0, 5.0, 3.0, 0.5, 2.0, 0.5, 0.5, 0.5, 9.0])
    assert signals.time_to_convergence(err, 2, level=1.0, hold=3) == 4  # steps 6, 7, 8 are the first 3 in a row
    assert signals.time_to_convergence(err, 2, level=0.1, hold=2) == 8  # never: the rest of the stream


def test_generators_are_deterministic():
    assert torch.equal(signals.seasonal_series(500, 3, 7), signals.seasonal_series(500, 3, 7))
    a, b = signals.sensor_sequences(4, 6, 5, 3, 11), signals.sensor_sequences(4, 6, 5, 3, 11)
    assert torch.equal(a[0], b[0]) and a[1].shape == (4, 6) and a[0].shape == (4, 30, 3)


def test_s5_ptd_layers_start_at_the_hippo_system_and_s5_does_not():
    """The PTD-initialised S5 layer (after balancing and the float32 cast) is the HiPPO system
    (A, B, C) with the layer's own B, C; the S5 initialisation is not, at high frequencies."""
    from experiments.workloads.sequence.s5_ptd import S5PTD

    theta = torch.linspace(0.1, math.pi, 50, dtype=torch.float64)
    z = torch.exp(1j * theta)
    A, _ = ssm.hippo_legs(16)
    gaps = {}
    for init in ("ptd", "s5"):
        w = S5PTD(init=init, state=16, width=8)
        p, wt = w.init_params(0), w.weights(0)
        lam = torch.complex(-torch.exp(p["l0.log_neg_re"].double()), p["l0.im"].double())
        lam_bar, gain = ssm.zoh(lam, math.exp(float(p["l0.log_dt"])))
        H = ssm.transfer(lam_bar, gain[:, None] * ssm.as_complex(p["l0.B"].double()), ssm.as_complex(p["l0.C"].double()), z)
        Xd = torch.linalg.matrix_exp(A * w.dt)
        Bd = torch.linalg.solve(A, (Xd - torch.eye(16, dtype=torch.float64)) @ wt["l0.B"])
        H_hippo = ssm.transfer_dense(Xd, Bd, wt["l0.C"], z)
        gaps[init] = float(torch.linalg.matrix_norm(H - H_hippo).max() / torch.linalg.matrix_norm(H_hippo).max())
    assert gaps["ptd"] < 0.15 and gaps["s5"] > 0.5, gaps  # PTD's residual: its ||E|| (<= 3 here) and float32
