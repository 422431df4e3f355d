"""Counter-based randomness: a pure function of (seed, step, worker, stream, index)."""
import math

import torch

from distopt.noise import Noise, bits32, normal, randint, uniform


def test_rows_equal_single_workers_and_prefixes_agree():
    batch = Noise(seed=7, step=3, worker=torch.tensor([0, 5, 2]))
    u = uniform(batch, 1000, stream=2)
    for row, w in enumerate((0, 5, 2)):
        one = uniform(Noise(seed=7, step=3, worker=w), 1000, stream=2)
        assert torch.equal(u[row], one[0])
    # drawing fewer numbers gives a prefix (no hidden generator state)
    assert torch.equal(uniform(batch, 10, stream=2), u[:, :10])


def test_every_coordinate_of_the_key_changes_the_draws():
    base = bits32(Noise(1, 2, 3), 64, 4)
    for other in (bits32(Noise(2, 2, 3), 64, 4), bits32(Noise(1, 3, 3), 64, 4),
                  bits32(Noise(1, 2, 4), 64, 4), bits32(Noise(1, 2, 3), 64, 5),
                  bits32(Noise(1 + 2**40, 2, 3), 64, 4)):
        assert (base != other).float().mean() > 0.99


def test_uniform_and_normal_moments():
    u = uniform(Noise(0, 0, torch.arange(8)), 50_000, 1, torch.float64)
    assert 0 <= float(u.min()) and float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 0.002
    assert abs(float(u.var()) - 1 / 12) < 0.001
    # neighbouring coordinates and neighbouring workers are uncorrelated
    assert abs(float(torch.corrcoef(torch.stack([u[0, :-1], u[0, 1:]]))[0, 1])) < 0.02
    assert abs(float(torch.corrcoef(u[:2])[0, 1])) < 0.02
    z = normal(Noise(0, 0, 0), 100_000, 1, torch.float64)
    assert abs(float(z.mean())) < 0.02 and abs(float(z.std()) - 1) < 0.02
    r = randint(Noise(0, 0, 0), 100_000, 10, 1)
    freq = torch.bincount(r[0], minlength=10).double() / 1e5
    assert float((freq - 0.1).abs().max()) < 5 * math.sqrt(0.09 / 1e5)


def _fmix_ref(h):
    """murmur3 fmix32 on int64 holding uint32 values (textbook form, no tricks)."""
    h = h ^ (h >> 16)
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h = h ^ (h >> 13)
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    return h ^ (h >> 16)


def test_bits_are_two_keyed_fmix_rounds_in_every_piece(monkeypatch):
    """The in-place, piecewise hash (middle xorshifts folded into the key) equals the textbook
    fmix(fmix(j * GOLD ^ k1) ^ k2), however the counters are cut into pieces."""
    import distopt.noise as noise_mod

    w = torch.tensor([0, 3, 9])
    noise = Noise(seed=5, step=2, worker=w)
    k1, k2 = noise_mod._keys(5, 2, w.to(torch.int32), 4)
    k1, k2 = (k1.to(torch.int64) & 0xFFFFFFFF).unsqueeze(1), (k2.to(torch.int64) & 0xFFFFFFFF).unsqueeze(1)
    j = torch.arange(100, 100 + 1000, dtype=torch.int64)
    ref = _fmix_ref(_fmix_ref(((j * 0x9E3779B1) & 0xFFFFFFFF) ^ k1) ^ k2)
    ref = torch.where(ref >= 2**31, ref - 2**32, ref).to(torch.int32)
    for chunk in (1 << 20, 7, 1):
        monkeypatch.setattr(noise_mod, "CHUNK", chunk)
        assert torch.equal(bits32(noise, 1000, 4, start=100), ref), chunk
        u = uniform(noise, 1100, 4)[:, 100:]
        assert torch.equal(u, ((ref.to(torch.int64) & 0xFFFFFFFF) >> 8).float() * 2.0**-24), chunk
