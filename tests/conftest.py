"""Test-session settings shared by every test module.

One intra-op thread: the tests' tensors are small, and on a busy 2-core machine (DDP tests
start extra processes; CI runs other jobs) OpenMP threads that busy-wait for a descheduled
sibling turn a 20 microsecond op into milliseconds -- measured 35x slower runs.
"""
import os

import pytest
import torch
from hypothesis import settings

torch.set_num_threads(1)

# Property tests draw the same examples on every run (a CI failure reproduces, and no run passes
# by luck); HYPOTHESIS_PROFILE=explore draws fresh random examples -- run it when you change a
# compressor, and pin what it finds with @example.
settings.register_profile("fixed", derandomize=True, database=None)
settings.register_profile("explore", max_examples=500)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fixed"))

# Diffusion workloads (issue 8) whose mechanism checks run on trained-once, cached base models.
_GENERATIVE_INFERENCE = ("noise_diffusion_interp", "dire_detect", "bdia_inversion", "oms_one_more_step",
                         "red_diff_inverse", "test_generative_inference")


@pytest.fixture(scope="session", autouse=True)
def generative_base_models(request):
    """Train (first run; ~5 min on 2 busy cores) or load (later runs) the cached base models
    and DIRE maps once per session, before the tests that use them -- so no test's own time
    includes a base model's training. Does nothing when none of those tests is collected."""
    if not any(w in item.nodeid for item in request.session.items for w in _GENERATIVE_INFERENCE):
        return
    from experiments.workloads.generative.core.base import DIGITS, base_model
    from experiments.workloads.generative.core.presets import DIGITS_V
    from experiments.workloads.generative.dire_detect import datasets
    from experiments.workloads.generative.noise_diffusion_interp import ND_BASE
    from experiments.workloads.generative.oms_one_more_step import OMSBase

    base_model(DIGITS_V)
    base_model(DIGITS)
    base_model(ND_BASE)
    OMSBase().trained()
    datasets()


@pytest.fixture(scope="session", autouse=True)
def generative_ring_base(request):
    """The 8-Gaussian-ring base model (core.base.RING8) that adjoint_dpm fine-tunes: trained
    (first run, ~30 s) or loaded once per session, outside any test's own time."""
    if not any(w in item.nodeid for item in request.session.items for w in ("adjoint_dpm", "test_generative_mechanisms")):
        return
    from experiments.workloads.generative.core.base import RING8, base_model

    base_model(RING8)


# Mechanism checks that honestly fail at this scale (the workload's docstring says why). Strict:
# the day one starts to hold, the run flags it.
_KNOWN_FAILING_CHECKS = {
    "test_quick_mechanism_check_holds[hiss_hier_ssm]":
        "HiSS beats flat S4D but not the LSTM; at equal size and read-out the hierarchy has no edge here, "
        "tuned lr or 1000-sample sequences included (hiss_hier_ssm.py)",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        reason = _KNOWN_FAILING_CHECKS.get(item.name)
        if reason is not None:
            item.add_marker(pytest.mark.xfail(strict=True, reason=reason))
