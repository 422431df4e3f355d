"""The diffusion family's shared core (issue 8): schedules, denoisers, losses, samplers, metrics,
data and the trained-once base models. Every generative workload builds on these; nothing here
is copied per workload.

API (import from the submodules, e.g. ``from experiments.workloads.generative.core import samplers as S``):

data.py
    ``rng(*keys) -> torch.Generator``          seeded from any tuple, e.g. rng("noise", seed, worker, step)
    ``digits(split) -> (x [N, 64] in [-1, 1], y [N])``   sklearn's bundled digits; train 1,500 / test 297
    ``ring8(n, gen) / moons(n, gen) / mixture(name, n, gen) -> (x [n, 2], labels)``; ``ring8_centres()``
    ``shard_bounds(N, worker, n)`` (numpy.array_split), ``minibatch(N, B, seed, worker, n, step, tag)``
        -> B row indices from the worker's shard, drawn from (tag, seed, worker, step)

schedules.py   (every schedule: ``alpha_bar(t)``, ``model_time(t)``, ``grid(steps[, start])``, ``sample_times(n, gen)``)
    ``Discrete(kind="linear"|"scaled_linear"|"cosine", T, beta_start, beta_end, zero_snr)``; integer t,
        t = -1 is clean; ``.alpha_bars`` [T], ``.betas``; ``make_schedule("cosine+zsnr", T)``
    ``VPSDE(beta_min, beta_max)``, ``VESDE(sigma_min, sigma_max)``: continuous t in [0, 1]; ``sde(x, t)``
        -> (f, g), ``marginal``, ``prior_logp``, ``discretize`` (reverse-diffusion predictor), VP
        ``alpha_sigma(t)`` and ``rho_to_time`` (rho = sigma/alpha, AdjointDPM)

denoisers.py   pure functions of a parameter dict (vmap-able): ``mlp_init/mlp_apply`` (flat x [B, d]),
    ``unet_init/unet_apply`` (x [B, C, 8, 8]), ``convnet_init/convnet_apply`` (a dilated 3x3 conv stack,
    the cheapest image denoiser); ``apply(params, x, t, cond=None)``, t [B] or [B, k]

losses.py      ``q_sample``, ``eps_loss``, ``v_loss`` (apply, params, sched, x0, t, noise, cond), ``dsm_loss``
    (score, sde, x0, t, z); head conversions ``eps_to_x0``, ``v_to_eps``, ``v_to_x0``, ``score_from_eps``

samplers.py    model as ``eps_fn(x, t)`` / ``score_fn(x, t)`` with t [B] in the schedule's units
    ``ddim_step(x, eps, ab, ab_next, eta, noise, clip) -> (x_next, x0)``   the one update, any direction
    ``ddim_sample(eps_fn, sched, x, times, eta=0, gen, clip, callback)``   any eta; ``callback(i, t, t_next,
        x_next, eps, x0)`` may return a replacement state (hook for extra steps / custom updates);
        ``times`` from ``sched.grid(steps, start)`` (start < T-1 decodes from an intermediate step)
    ``ddim_invert(eps_fn, sched, x0, times, return_path, eps_at="next")``  deterministic inversion
        (approximate: eps at the next time with the current state; ``eps_at="current"``: at the current
        time, guided-diffusion's convention, DIRE's) -- bdia.py replaces it with an exact update
    ``ddpm_sample``, ``pc_sample(score_fn, sde, x, steps, gen, predictor, corrector, snr, n_corrector)``,
    ``ode_sample(score_fn, sde, x, method="rk45"|"euler"|"heun"|"rk4", steps)``,
    ``ode_likelihood(score_fn, sde, x, ..., exact=True|False)`` -> (nll [B] nats, evaluations)

metrics.py     ``mmd``, ``sliced_wasserstein``, ``wasserstein_1d``, ``psnr``, ``kurtosis``, ``mode_fraction``,
    ``digits_classifier()`` (cached MLP trained with outlier exposure, so ``confidence`` measures
        digit-likeness -- ~0.93 on test digits, ~0.2 on noise; ``probs``, ``features``, ``accuracy``),
    ``frechet_distance`` (FID-like on the classifier's features)

cache.py       ``cached(kind, config, build)``: tensors built once, stored atomically under
    ``$DISTOPT_CACHE/generative`` (default ``~/.cache/distopt``) keyed by a hash of the config; a
    missing or corrupt file is rebuilt

base.py        ``DenoiserTraining`` (a Workload: eps/v prediction on digits or a 2-D mixture over a
    discrete schedule or the VP SDE); ``BaseSpec(workload, rounds, lr, workers, seed)``;
    ``base_model(spec) -> Base`` (trained through the simulator with gd + identity + Adam, cached);
    ``Base.eps_fn(dtype)``, ``Base.sched``, ``Base.params``; presets ``DIGITS`` (eps-MLP on digits,
    linear T = 200) and ``RING8`` (eps-MLP 3x128 on the 8-Gaussian ring, VP SDE).
    ``train(workload, seed, rounds, n=2, method="gd", compressor="identity", ...) -> (params, History)``:
    any workload through the simulator; ``fit(workload, seed, rounds, n=2, ...) -> (params, eval rows)``:
    the same gd + identity iterates from one gradient of the workers' mean loss (2-3x faster for conv
    nets; tests check parity) -- what the mechanism checks use

report.py      ``seeds_or``, ``single_thread()``, ``arm_table(arms, metrics)`` (mean ± sd rows), ``mean``,
    ``plot_images``, ``plot_points``, ``save_figure`` (atomic PNGs)

bdia.py        BDIA-DDIM (Zhang et al. 2024): ``bdia_sample(eps_fn, sched, x, times, gamma, x_next,
    return_pair)``, its exact inverse ``bdia_invert(eps_fn, sched, pair, times, gamma)`` and
    ``bdia_encode(eps_fn, sched, x0, times, gamma)`` (real image -> the pair that decodes back to it)

presets.py     ``DIGITS_V`` (the digits base of the inference-time workloads: DIGITS's MLP trained with
    v-prediction -- why: see the module) and ``TrainsTheBase`` (mixin: ``init_params/loss/batch``
    delegated to the base's DenoiserTraining, ``eps_fn(params, dtype)``)

Inference-only workloads (NoiseDiffusion, BDIA, RED-diff, DIRE's extraction) reuse
``base_model(presets.DIGITS_V)`` and delegate ``init_params/loss/batch`` to its ``DenoiserTraining``
(``presets.TrainsTheBase``): the base model's training is what goes through the communication layer.
"""
