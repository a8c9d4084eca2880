"""The diffusion process: against diffusers' DDPMScheduler/DDIMScheduler on identical inputs and noise, and against
the paper's distributions (closed form vs iterated chain, Gaussian conditioning for the posterior)."""

import math

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from ddpm_core import Diffusion, make_schedule
from tests.test_schedules import DIFFUSERS_NAMES

TOL = dict(rtol=1e-9, atol=1e-9)  # float64 throughout


def toy_eps(x: torch.Tensor, t: int) -> torch.Tensor:
    """A deterministic stand-in for ε_θ: depends on x and t, and pushes x̂₀ outside [-1, 1] so clipping matters."""
    return 0.6 * torch.tanh(1.5 * x) + 0.3 * math.sin(t / 37.0)


def their_scheduler(cls, diffusion: Diffusion, **config):
    """A diffusers scheduler for the same schedule, its tables replaced by ours in float64: identical inputs."""
    s = diffusion.schedule
    kwargs = {k: s.params[k] for k in ("beta_start", "beta_end") if k in s.params}
    try:
        sched = cls(num_train_timesteps=s.T, beta_schedule=DIFFUSERS_NAMES[s.name], **kwargs, **config)
    except NotImplementedError:  # DDIMScheduler has no "sigmoid": hand it the betas
        sched = cls(num_train_timesteps=s.T, trained_betas=s.betas.numpy(), **config)
    torch.testing.assert_close(sched.betas, s.betas.float(), rtol=2e-6, atol=1e-6)  # the same schedule…
    sched.betas = s.betas.clone()  # …now at float64
    sched.alphas = 1 - sched.betas
    sched.alphas_cumprod = torch.cumprod(sched.alphas, 0)
    sched.one = torch.tensor(1.0, dtype=torch.float64)
    sched.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    return sched


@pytest.fixture(params=["linear", "cosine", "scaled_linear", "sigmoid"])
def diffusion(request):
    return Diffusion(make_schedule(request.param, 1000))


def x_T(shape=(3, 2, 5, 5), seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ---------------------------------------------------------------------------------------------------------------
# Forward process


def test_q_sample_matches_diffusers_add_noise(diffusion):
    theirs = their_scheduler(DDPMScheduler, diffusion)
    x0, noise = x_T(seed=1).clamp(-1, 1), x_T(seed=2)
    t = torch.tensor([0, 499, 999])
    torch.testing.assert_close(diffusion.q_sample(x0, t, noise), theirs.add_noise(x0, noise, t), **TOL)


def test_iterated_chain_agrees_in_distribution_with_the_closed_form():
    d = Diffusion(make_schedule("linear", 200))
    gen = torch.Generator().manual_seed(0)
    n = 40_000
    x0 = torch.tensor([[-1.0, -0.3, 0.5, 1.0]], dtype=torch.float64).expand(n, 4)
    x = x0
    for k in range(120):  # x_k from x_{k-1} = q_step, k = 0 … 119 (paper t = 1 … 120)
        x = d.q_step(x, k, generator=gen)
        if k in (0, 9, 119):
            closed = d.q_sample(x0, k, generator=gen)
            ab = d.schedule.alpha_bars[k]
            se_mean = (1 - ab).sqrt() / math.sqrt(n)  # standard error of a mean of n draws
            for sample in (x, closed):
                torch.testing.assert_close(sample.mean(0), ab.sqrt() * x0[0], rtol=0, atol=5 * float(se_mean))
                torch.testing.assert_close(sample.var(0), (1 - ab).expand(4), rtol=0.05, atol=0)


def test_q_step_draws_from_q_x_t_given_x_t_minus_1():
    d = Diffusion(make_schedule("cosine", 100))
    x_prev, noise = x_T(seed=3), x_T(seed=4)
    beta = d.schedule.betas[40]
    torch.testing.assert_close(d.q_step(x_prev, 40, noise), (1 - beta).sqrt() * x_prev + beta.sqrt() * noise, **TOL)


def test_q_posterior_is_the_gaussian_conditional_of_the_forward_chain():
    # x_{t-1} = √ᾱ_{t-1} x_0 + √(1-ᾱ_{t-1}) z₁ and x_t = √α_t x_{t-1} + √β_t z₂ are jointly Gaussian given x_0;
    # conditioning x_{t-1} on x_t by the Gaussian formula must give q_posterior's mean and variance.
    s = make_schedule("sigmoid", 300)
    d = Diffusion(s)
    x0, x_t = x_T(seed=5).clamp(-1, 1), x_T(seed=6)
    for t in (1, 57, 150, 299):
        ab, ab_prev, alpha = s.alpha_bars[t], s.alpha_bars[t - 1], s.alphas[t]
        var_prev, var_t, cov = 1 - ab_prev, 1 - ab, alpha.sqrt() * (1 - ab_prev)
        mean = ab_prev.sqrt() * x0 + cov / var_t * (x_t - ab.sqrt() * x0)
        post = d.q_posterior(x0, x_t, t)
        torch.testing.assert_close(post.mean, mean, **TOL)
        torch.testing.assert_close(post.variance.flatten(), (var_prev - cov**2 / var_t).reshape(1), **TOL)


def test_posterior_mean_from_eps_is_the_seeds_mu():
    # μ̃(x_t, x_0(ε)) = 1/√α_t (x_t − β_t/√(1−ᾱ_t) ε): Ho et al.'s change of variable.
    s = make_schedule("linear", 1000)
    d = Diffusion(s)
    x0, eps = x_T(seed=7).clamp(-1, 1), x_T(seed=8)
    for t in (3, 500, 999):
        x_t = d.q_sample(x0, t, eps)
        mu = (x_t - s.betas[t] / (1 - s.alpha_bars[t]).sqrt() * eps) / s.alphas[t].sqrt()
        torch.testing.assert_close(d.q_posterior(d.predict_x0(x_t, t, eps), x_t, t).mean, mu, **TOL)


def test_predict_x0_and_predict_eps_invert_q_sample():
    d = Diffusion(make_schedule("cosine", 1000))
    x0, eps = x_T(seed=9).clamp(-1, 1), x_T(seed=10)
    t = torch.tensor([0, 400, 998])
    x_t = d.q_sample(x0, t, eps)
    torch.testing.assert_close(d.predict_x0(x_t, t, eps), x0, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(d.predict_eps(x_t, t, x0), eps, rtol=1e-7, atol=1e-7)


# ---------------------------------------------------------------------------------------------------------------
# Reverse steps against diffusers


@pytest.mark.parametrize("variance, their_variance", [("beta", "fixed_large"), ("posterior", "fixed_small")])
@pytest.mark.parametrize("clip_x0", [False, True])
def test_ddpm_step_matches_diffusers(diffusion, variance, their_variance, clip_x0):
    theirs = their_scheduler(DDPMScheduler, diffusion, variance_type=their_variance, clip_sample=clip_x0)
    x = x_T(seed=11)
    for t in (999, 998, 700, 123, 1, 0):
        eps = toy_eps(x, t)
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(t), dtype=x.dtype)
        ours = diffusion.ddpm_step(eps, t, x, noise=noise, variance=variance, clip_x0=clip_x0)
        out = theirs.step(eps, t, x, generator=torch.Generator().manual_seed(t))
        torch.testing.assert_close(ours.x_prev, out.prev_sample, **TOL)
        torch.testing.assert_close(ours.x0_pred, out.pred_original_sample, **TOL)
        assert clip_x0 == (ours.x0_pred.abs().max() <= 1)  # toy_eps drives x̂₀ out of range unless clipped
    # No noise at t = 0: the step is the posterior mean.
    assert torch.equal(diffusion.ddpm_step(eps, 0, x, noise=noise).x_prev, diffusion.ddpm_step(eps, 0, x).x_prev)


@pytest.mark.parametrize("variance, their_variance", [("beta", "fixed_large"), ("posterior", "fixed_small")])
@pytest.mark.parametrize("clip_x0", [False, True])
@pytest.mark.parametrize("spacing", ["leading", "linspace"])
def test_strided_ddpm_sampling_loop_matches_diffusers(variance, their_variance, clip_x0, spacing):
    d = Diffusion(make_schedule("linear", 1000))
    theirs = their_scheduler(
        DDPMScheduler, d, variance_type=their_variance, clip_sample=clip_x0, timestep_spacing=spacing
    )
    theirs.set_timesteps(25)
    ts = d.timesteps(25, spacing)
    assert torch.equal(ts, theirs.timesteps)
    ours = out = x_T(seed=12)
    for i, t in enumerate(ts.tolist()):
        t_prev = ts[i + 1].item() if i + 1 < len(ts) else -1
        gen_ours, gen_theirs = torch.Generator().manual_seed(i), torch.Generator().manual_seed(i)
        ours = d.ddpm_step(
            toy_eps(ours, t), t, ours, generator=gen_ours, variance=variance, clip_x0=clip_x0, t_prev=t_prev
        ).x_prev
        out = theirs.step(toy_eps(out, t), t, out, generator=gen_theirs).prev_sample
    torch.testing.assert_close(ours, out, **TOL)


def test_trailing_ddpm_adds_no_noise_on_the_last_step_unlike_diffusers():
    # By design: diffusers' DDPMScheduler adds noise whenever t > 0, so with "trailing" spacing (last t = 39) and
    # σ² = β it perturbs the returned x_0. We never add noise on the step that lands on x_0 (t_prev = −1).
    d = Diffusion(make_schedule("linear", 1000))
    theirs = their_scheduler(
        DDPMScheduler, d, variance_type="fixed_large", clip_sample=False, timestep_spacing="trailing"
    )
    theirs.set_timesteps(25)
    t = int(theirs.timesteps[-1])
    x, noise = x_T(seed=13), x_T(seed=14)
    eps = toy_eps(x, t)
    ours = d.ddpm_step(eps, t, x, noise=noise, variance="beta", t_prev=-1).x_prev
    noiseless = d.ddpm_step(eps, t, x, noise=torch.zeros_like(x), variance="beta", t_prev=-1).x_prev
    out = theirs.step(eps, t, x, generator=torch.Generator().manual_seed(0)).prev_sample
    assert t == 39 and torch.equal(ours, noiseless)
    assert (out - ours).abs().max() > 0.01


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("clip_x0", [False, True])
@pytest.mark.parametrize("spacing, steps", [("leading", 50), ("trailing", 20), ("leading", 7)])
def test_ddim_sampling_loop_matches_diffusers(diffusion, eta, clip_x0, spacing, steps):
    theirs = their_scheduler(DDIMScheduler, diffusion, clip_sample=clip_x0, timestep_spacing=spacing)
    theirs.set_timesteps(steps)
    ts = diffusion.timesteps(steps, spacing)
    assert torch.equal(ts, theirs.timesteps)
    ours = out = x_T(seed=15)
    for i, t in enumerate(ts.tolist()):
        t_prev = ts[i + 1].item() if i + 1 < len(ts) else -1
        noise = torch.randn(ours.shape, generator=torch.Generator().manual_seed(100 + i), dtype=ours.dtype)
        step = diffusion.ddim_step(toy_eps(ours, t), t, ours, t_prev, eta=eta, noise=noise, clip_x0=clip_x0)
        ref = theirs.step(toy_eps(out, t), t, out, eta=eta, variance_noise=noise, use_clipped_model_output=clip_x0)
        torch.testing.assert_close(step.x_prev, ref.prev_sample, **TOL)
        torch.testing.assert_close(step.x0_pred, ref.pred_original_sample, **TOL)
        ours, out = step.x_prev, ref.prev_sample


def test_ddim_with_eta_one_has_the_ddpm_posterior_variance():
    d = Diffusion(make_schedule("linear", 1000))
    x, noise = x_T(seed=16), x_T(seed=17)
    eps = toy_eps(x, 600)
    ddim = d.ddim_step(eps, 600, x, 599, eta=1.0, noise=noise)
    ddpm = d.ddpm_step(eps, 600, x, noise=noise, variance="posterior")
    torch.testing.assert_close(ddim.x_prev, ddpm.x_prev, **TOL)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("steps", [1, 3, 10, 999, 1000])
def test_timesteps_match_diffusers_spacing(spacing, steps):
    d = Diffusion(make_schedule("linear", 1000))
    theirs = DDIMScheduler(num_train_timesteps=1000, timestep_spacing=spacing)
    theirs.set_timesteps(steps)
    ts = d.timesteps(steps, spacing)
    assert torch.equal(ts, theirs.timesteps) and len(ts.unique()) == steps and (ts.diff() < 0).all()


# ---------------------------------------------------------------------------------------------------------------
# Shapes, devices, dtypes, errors


def test_points_per_element_t_and_float32_follow_the_input():
    d = Diffusion(make_schedule("linear", 100))
    x0 = torch.rand(6, 2) * 2 - 1  # a batch of 2D points, float32
    t = torch.tensor([0, 10, 20, 50, 98, 99])
    eps = torch.randn_like(x0)
    x_t = d.q_sample(x0, t, eps)
    assert x_t.dtype == torch.float32 and x_t.shape == (6, 2)
    for i in range(6):  # each row uses its own t
        torch.testing.assert_close(x_t[i], d.q_sample(x0[i : i + 1], int(t[i]), eps[i : i + 1])[0])
    step = d.ddpm_step(eps, t, x_t, noise=torch.ones_like(x0))
    assert step.x_prev.dtype == torch.float32
    # Row 0 is at t = 0: no noise there, noise everywhere else.
    torch.testing.assert_close(step.x_prev[0], d.ddpm_step(eps[:1], 0, x_t[:1]).x_prev[0])
    assert (step.x_prev[1:] != d.ddpm_step(eps, t, x_t, noise=torch.zeros_like(x0)).x_prev[1:]).all()
    # The float64 coefficients keep float32 round trips exact to float32 precision, even at t = 0.
    torch.testing.assert_close(d.predict_x0(x_t, t, eps), x0, rtol=1e-5, atol=1e-5)


def test_schedule_tensors_are_buffers_that_move_with_to():
    d = Diffusion(make_schedule("linear", 50))
    names = {name for name, _ in d.named_buffers()}
    assert {"sqrt_alpha_bars", "sqrt_one_minus_alpha_bars", "posterior_variance", "alpha_bars"} <= names
    assert all(b.dtype == torch.float64 for b in d.buffers())
    assert d.state_dict() == {}  # rebuilt from the schedule, never saved in a checkpoint
    meta = d.to("meta")
    assert all(b.device.type == "meta" for b in meta.buffers())
    x = torch.empty(2, 1, 4, 4, device="meta")
    assert meta.q_sample(x, 3, torch.empty_like(x)).device.type == "meta"


def test_zero_terminal_snr_gives_pure_noise_at_T_and_finite_steps():
    d = Diffusion(make_schedule("linear", 100, rescale_zero_terminal_snr=True))
    x0, eps = x_T(seed=18).clamp(-1, 1), x_T(seed=19)
    torch.testing.assert_close(d.q_sample(x0, 99, eps), eps, rtol=0, atol=1e-12)
    step = d.ddpm_step(eps, 99, eps, clip_x0=True)
    assert step.x_prev.isfinite().all() and step.x0_pred.abs().max() <= 1
    assert d.ddim_step(eps, 99, eps, 49).x_prev.isfinite().all()


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda d, x: d.ddpm_step(x, 5, x, variance="learned"), "unknown variance 'learned'.*beta, posterior"),
        (lambda d, x: d.timesteps(10, "uniform"), "unknown timestep spacing 'uniform'.*leading, trailing, linspace"),
        (lambda d, x: d.timesteps(0), "num_steps must be an integer from 1 to T = 50"),
        (lambda d, x: d.timesteps(51), "num_steps must be an integer from 1 to T = 50"),
        (lambda d, x: d.ddim_step(x, 5, x, 2, eta=-0.1), "eta must lie in"),
        (lambda d, x: d.ddim_step(x, 5, x, 5), "t_prev must lie in"),
        (lambda d, x: d.q_sample(x, 50, x), "t must be an integer index in \\[0, 49\\]"),
        (lambda d, x: d.q_sample(x, -1, x), "t must be an integer index"),
        (lambda d, x: d.q_sample(x, torch.tensor([1, 2, 3]), x), "B = 2"),
        (lambda d, x: d.q_sample(x, torch.tensor([1.0, 2.0]), x), "integer timestep"),
    ],
)
def test_bad_arguments_raise_clear_value_errors(call, match):
    d = Diffusion(make_schedule("linear", 50))
    with pytest.raises(ValueError, match=match):
        call(d, torch.zeros(2, 3))


@pytest.mark.parametrize("steps", [50, 7])
def test_ddim_inversion_loop_matches_diffusers(diffusion, steps):
    """DDIM inversion, x_0 up to x_T, against diffusers' DDIMInverseScheduler on the same ε: both evaluate it at the
    step they go to (the start, x_0, has ᾱ = 1)."""
    from diffusers import DDIMInverseScheduler

    theirs = their_scheduler(DDIMInverseScheduler, diffusion, timestep_spacing="leading", clip_sample=False)
    theirs.initial_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    theirs.set_timesteps(steps)
    ts = diffusion.timesteps(steps, "leading").flip(0)
    assert torch.equal(ts, theirs.timesteps)
    ours = out = x_T(seed=21)
    here = -1
    for t in ts.tolist():
        step = diffusion.ddim_invert_step(toy_eps(ours, t), here, ours, t)
        ref = theirs.step(toy_eps(out, t), t, out)
        torch.testing.assert_close(step.x_prev, ref.prev_sample, **TOL)
        ours, out, here = step.x_prev, ref.prev_sample, t
