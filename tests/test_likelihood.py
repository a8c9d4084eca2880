"""The variational bound and the ODE likelihood (ddpm_core.likelihood): checked in closed form on Gaussian data, where
the optimal ε-predictor is linear and the true log-density is known, and on the bundled digits and moons models."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from ddpm_core import likelihood as lk
from ddpm_core.data import load_dataset, make_toy
from ddpm_core.diffusion import Diffusion
from ddpm_core.models import ModelConfig, build_model
from ddpm_core.runs import load_checkpoint
from ddpm_core.schedules import make_schedule
from tests.conftest import ROOT

CHECKPOINTS = ROOT / "assets" / "checkpoints"
M, S = torch.tensor([0.3, -0.2], dtype=torch.float64), 0.5  # the Gaussian data N(m, s² I)


class GaussianOptimum(nn.Module):
    """The exact prediction for data x_0 ~ N(m, s² I) at a (fractional) step index t, with ᾱ from the same linear
    interpolation of ln ᾱ as the ODE's: ε* = √(1 − ᾱ) (x_t − √ᾱ m) / (ᾱ s² + 1 − ᾱ), or the x_0 or v it implies."""

    def __init__(self, schedule, prediction: str = "eps"):
        super().__init__()
        self.config = ModelConfig(kind="mlp", in_channels=2, prediction=prediction)
        self.anchor = nn.Parameter(torch.zeros((), dtype=torch.float64))  # the device and dtype the core reads
        self.schedule = schedule

    def forward(self, x, t, y=None):
        ab = lk.log_alpha_bar_at(self.schedule, t.double()).exp().unsqueeze(1)
        eps = (1 - ab).sqrt() * (x - ab.sqrt() * M) / (ab * S**2 + 1 - ab)
        x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
        return {"eps": eps, "x0": x0, "v": ab.sqrt() * eps - (1 - ab).sqrt() * x0}[self.config.prediction]


def scaled_linear(T: int):
    """Ho et al.'s linear schedule, β from 1e-4 to 0.02 at T = 1000, scaled by 1000/T (improved-diffusion's rule)."""
    return make_schedule("linear", T, beta_start=1e-4 * 1000 / T, beta_end=0.02 * 1000 / T)


def gaussian_data(n: int, seed: int = 0) -> torch.Tensor:
    return M + S * torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def true_log_density(x0: torch.Tensor) -> torch.Tensor:
    return -0.5 * ((x0 - M) ** 2).sum(1) / S**2 - math.log(2 * math.pi * S**2)


def exact_gap(schedule, variance: str) -> float:
    """E[bound] − E[−log q(x_0)] for the optimal predictor, bits/dim: the mean of p_θ(x_{t−1} | x_t) is then exact,
    so the gap is KL(q(x_T) ‖ N(0, I)) plus, at each t, the KL between the true reverse variance β_t v_{t−1}/v_t
    (v_t = ᾱ_t s² + 1 − ᾱ_t, the marginal variance of x_t) and the model's σ_t²."""
    ab, ab_prev = schedule.alpha_bars, schedule.alpha_bars_prev
    v, v_prev = ab * S**2 + 1 - ab, ab_prev * S**2 + 1 - ab_prev
    true_var, sigma2 = schedule.betas * v_prev / v, lk.model_variances(schedule, variance)
    steps = 0.5 * (torch.log(sigma2 / true_var) + true_var / sigma2 - 1)
    prior = 0.5 * (v[-1] + ab[-1] * (M**2).mean() - 1 - torch.log(v[-1]))
    return float((steps.sum() + prior) / math.log(2))


@pytest.fixture(scope="module")
def digits():
    ckpt = load_checkpoint(CHECKPOINTS / "digits.safetensors")
    return ckpt.model, Diffusion(ckpt.config.make_schedule()), load_dataset("digits").x


@pytest.fixture(scope="module")
def moons():
    ckpt = load_checkpoint(CHECKPOINTS / "moons.safetensors")
    return ckpt.model, Diffusion(ckpt.config.make_schedule()), make_toy("moons", 64, seed=12_345)


# ----------------------------------------------------------------------------------------------------------------
# Closed form: Gaussian data


def test_the_bound_of_the_optimal_model_is_above_the_true_nll_by_the_exact_gap():
    x0 = gaussian_data(2000)
    true_bits = -true_log_density(x0) / (2 * math.log(2))
    measured = {}
    for T in (50, 200, 1000):
        schedule = scaled_linear(T)
        for variance in ("beta", "posterior"):
            b = lk.bound(GaussianOptimum(schedule), Diffusion(schedule), x0, variance=variance, seed=1)
            assert b.full
            gap = b.per_sample - true_bits
            se = float(gap.std() / math.sqrt(len(gap)))
            exact = exact_gap(schedule, variance)
            measured[T, variance] = float(gap.mean())
            print(f"T={T:4d} σ²={variance:9s} bound {b.bits_per_dim:.4f} ± {b.stderr:.4f}, true NLL "
                  f"{float(true_bits.mean()):.4f}, gap {gap.mean():+.4f} ± {se:.4f} (exact {exact:.4f})")  # fmt: skip
            assert b.bits_per_dim >= float(true_bits.mean()) - 3 * b.stderr
            assert abs(float(gap.mean()) - exact) < 4 * se
    for variance in ("beta", "posterior"):
        exact = [exact_gap(scaled_linear(T), variance) for T in (50, 200, 1000)]
        assert exact[0] > exact[1] > exact[2] > 0
    # β̃_t is far too small for data with spread at the finest scales: its gap shrinks with T but stays large
    assert measured[50, "posterior"] > measured[200, "posterior"] > measured[1000, "posterior"] > 0.5
    assert exact_gap(scaled_linear(1000), "beta") < 0.002 and abs(measured[1000, "beta"]) < 0.08


def test_the_ode_log_likelihood_of_the_optimal_model_is_the_true_log_density():
    """The flow of the exact ε maps N(m, s²) onto x_T = √ᾱ_T (m + (x_0 − m) √((s² + σ̄_T²)/s²)) exactly; the model's
    density differs from the true one only by its prior N(0, I) in place of q(x_T) (a few 1e-3 nats here)."""
    schedule = scaled_linear(1000)
    x0 = gaussian_data(500, seed=2)
    ab_T = float(schedule.alpha_bars[-1])
    x_T = math.sqrt(ab_T) * (M + (x0 - M) * math.sqrt(1 + (1 - ab_T) / ab_T / S**2))
    v_T = ab_T * S**2 + 1 - ab_T
    log_q_T = -0.5 * ((x_T - math.sqrt(ab_T) * M) ** 2).sum(1) / v_T - math.log(2 * math.pi * v_T)
    model_log_p = true_log_density(x0) - log_q_T + (-0.5 * (x_T**2).sum(1) - math.log(2 * math.pi))
    errors = {}
    for steps in (100, 200):
        ode = lk.ode_log_likelihood(GaussianOptimum(schedule), Diffusion(schedule), x0, steps=steps)
        errors[steps] = float((ode.log_likelihood - model_log_p).abs().max())
        off_true = float((ode.log_likelihood - true_log_density(x0)).abs().max())
        print(f"ODE {steps} RK4 steps: max error {errors[steps]:.2e} nats (vs the true density {off_true:.2e}), "
              f"{ode.wall_time:.2f} s")  # fmt: skip
        assert off_true < 0.01
        bits = -ode.log_likelihood / (2 * math.log(2))
        assert torch.allclose(ode.bits_per_dim, bits) and ode.mean_bits_per_dim == pytest.approx(float(bits.mean()))
    assert errors[100] < 1e-4 and errors[200] < 1e-5


def test_every_prediction_target_gives_the_same_bound_and_ode():
    schedule = scaled_linear(100)
    d, x0 = Diffusion(schedule), gaussian_data(64, seed=3)
    results = {p: lk.bound(GaussianOptimum(schedule, p), d, x0, seed=4) for p in ("eps", "x0", "v")}
    odes = {p: lk.ode_log_likelihood(GaussianOptimum(schedule, p), d, x0, steps=20) for p in ("eps", "x0", "v")}
    for p in ("x0", "v"):
        assert torch.allclose(results[p].per_sample, results["eps"].per_sample, rtol=1e-7, atol=1e-7)
        assert torch.allclose(odes[p].log_likelihood, odes["eps"].log_likelihood, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize(("T", "k"), [(1000, 50), (1000, 1), (1000, 999), (200, 10), (10, 9), (2, 1), (4000, 50)])
def test_the_strata_partition_t_2_to_T_single_t_first_widest_last(T, k):
    strata = lk.geometric_strata(T, k)
    assert len(strata) == k and strata[0][0] == 1 and strata[-1][1] == T
    assert all(hi == lo for (_, hi), (lo, _) in itertools.pairwise(strata))  # contiguous: each index once
    sizes = [hi - lo for lo, hi in strata]
    assert min(sizes) >= 1 and (sizes[0] == 1 or k == 1) and sizes[-1] == max(sizes)


def test_stratified_estimate_is_unbiased_on_gaussian_data():
    schedule = scaled_linear(200)
    d, x0 = Diffusion(schedule), gaussian_data(4000, seed=5)
    model = GaussianOptimum(schedule)
    full = lk.bound(model, d, x0, variance="posterior", seed=6)
    strat = lk.bound(model, d, x0, variance="posterior", full=False, strata=10, seed=7)
    diff = strat.per_sample - full.per_sample
    se = float(diff.std() / math.sqrt(len(diff)))
    print(f"stratified (K = 10) {strat.bits_per_dim:.4f} ± {strat.stderr:.4f} vs full {full.bits_per_dim:.4f}")
    assert abs(float(diff.mean())) < 4 * se
    assert strat.evaluations == 11 * len(x0) and int(strat.draws.sum()) == 11 * len(x0)


# ----------------------------------------------------------------------------------------------------------------
# The terms


def test_the_prior_term_is_the_schedules_prior_kl(digits):
    _, diffusion, x = digits
    for x0 in (x[:50], make_toy("moons", 100)):
        terms = lk.prior_term(diffusion.schedule, x0)
        assert terms.shape == (len(x0),) and terms.dtype == torch.float64
        assert float(terms.mean()) == pytest.approx(diffusion.schedule.prior_kl_bits_per_dim(x0), rel=1e-12)


def test_the_kl_term_is_lambda_times_the_squared_eps_error_plus_a_constant():
    """Ho et al. eq. 12: L_{t−1} = λ_t mean((ε − ε_θ)²) + ½ (ln(σ²/β̃) + β̃/σ² − 1), per coordinate, in nats."""
    torch.manual_seed(0)
    net = build_model(ModelConfig(kind="mlp", in_channels=2, base_channels=16, num_layers=1)).eval()
    schedule = make_schedule("linear", 100)
    d = Diffusion(schedule)
    x0 = torch.randn(32, 2, dtype=torch.float64).clamp(-2, 2)
    noise = torch.randn(32, 2, dtype=torch.float64)
    for variance in ("beta", "posterior"):
        weights = lk.loss_weights(schedule, variance)
        sigma2 = lk.model_variances(schedule, variance)
        for i in (1, 2, 10, 50, 99):
            x_t = d.q_sample(x0, i, noise)
            with torch.no_grad():
                eps = net(x_t.float(), torch.full((32,), i)).double()
            lam, beta_tilde = float(weights.bound[i - 1]), float(schedule.posterior_variance[i])
            constant = 0.5 * (math.log(sigma2[i] / beta_tilde) + beta_tilde / sigma2[i] - 1)
            expected = (lam * ((noise - eps) ** 2).mean(1) + constant) / math.log(2)
            got = lk.kl_term(net, d, x0, i, variance=variance, noise=noise)
            assert torch.allclose(got, expected, rtol=1e-9, atol=1e-12), (variance, i)
    assert torch.equal(weights.t, torch.arange(2, 101)) and torch.equal(
        weights.simple, torch.ones(99, dtype=torch.float64)
    )
    assert (lk.loss_weights(schedule, "beta").bound < weights.bound).all()  # β̃_t < β_t: σ² = β weighs less


def test_the_discretised_decoder_is_a_probability_over_the_levels():
    for levels in (17, 256):
        grid = torch.linspace(-1, 1, levels, dtype=torch.float64)
        for mean, variance in ((0.0, 1e-4), (0.37, 1e-2), (-0.99, 1e-6), (1.7, 0.5), (-3.0, 1e-3), (0.2, 40.0)):
            log_p = lk.discretised_gaussian_log_likelihood(grid, torch.tensor(mean, dtype=torch.float64), variance,
                                                           levels)  # fmt: skip
            assert torch.isfinite(log_p).all() and (log_p <= 0).all()
            assert float(log_p.exp().sum()) == pytest.approx(1.0, abs=1e-6), (levels, mean, variance)
    # a bin 40 σ from the mean keeps a true, tiny mass (no 1e-12 clamp): ln Φ(−39.5) − … ≈ −785 nats
    far = lk.discretised_gaussian_log_likelihood(torch.tensor([0.0]), torch.tensor([0.4]), 1e-4, 256)
    assert -800 < float(far) < -700


def test_the_decoder_of_the_digits_model(digits):
    model, diffusion, x = digits
    terms = lk.decoder_term(model, diffusion, x[:16], levels=17, generator=torch.Generator().manual_seed(0))
    assert terms.shape == (16,) and (terms >= 0).all() and (terms < 0.1).all()  # a mass: −log P ≥ 0


def test_data_levels():
    assert lk.data_levels("digits") == 17 == torch.unique(load_dataset("digits").x).numel()
    assert lk.data_levels("mnist") == lk.data_levels("cifar10") == 256 and lk.data_levels("moons") is None
    with pytest.raises(ValueError, match="unknown dataset 'svhn'"):
        lk.data_levels("svhn")


# ----------------------------------------------------------------------------------------------------------------
# The bundled models


def test_the_full_bound_of_the_digits_model_adds_up_and_the_stratified_one_agrees(digits):
    model, diffusion, x = digits
    x0 = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:8]]
    calls = []
    full = lk.bound(model, diffusion, x0, levels=17, progress=lambda done, total: calls.append((done, total)))
    assert full.full and calls[-1] == (8000, 8000) and full.evaluations == 8000
    assert full.per_t[0] == pytest.approx(full.decoder) and float(full.per_t[1:].sum()) == pytest.approx(full.kl)
    assert full.prior + float(full.per_t.sum()) == pytest.approx(full.bits_per_dim, rel=1e-12)
    assert torch.equal(full.draws, torch.full((1000,), 8))
    strat = lk.bound(model, diffusion, x0, levels=17, full=False, strata=50, seed=1)
    diff = strat.per_sample - full.per_sample
    se = float(diff.std() / math.sqrt(len(diff)))
    print(f"digits, 8 images: full {full.bits_per_dim:.3f} ± {full.stderr:.3f} bits/dim (L_T {full.prior:.2e}, "
          f"L_0 {full.decoder:.2e}) in {full.wall_time:.1f} s; stratified {strat.bits_per_dim:.3f} ± "
          f"{strat.stderr:.3f} in {strat.wall_time:.1f} s")  # fmt: skip
    assert abs(float(diff.mean())) < 4 * se
    assert strat.stderr < 2 * full.stderr  # geometric strata: about the full sum's spread at 51 evaluations, not 1000
    assert strat.per_t.isnan().sum() > 0 and not strat.per_t[0].isnan() and int(strat.draws.sum()) == 8 * 51
    assert 1.0 < full.bits_per_dim < math.log2(17)  # better than a uniform guess over the 17 levels


def test_a_class_conditional_model_takes_labels():
    ckpt = load_checkpoint(CHECKPOINTS / "digits_cond.safetensors")
    ds = load_dataset("digits")
    d = Diffusion(ckpt.config.make_schedule())
    given = lk.bound(ckpt.model, d, ds.x[:4], y=ds.y[:4], levels=17, full=False, strata=5, seed=0)
    null = lk.bound(ckpt.model, d, ds.x[:4], levels=17, full=False, strata=5, seed=0)
    assert math.isfinite(given.bits_per_dim) and given.bits_per_dim != null.bits_per_dim


def test_the_moons_model_bound_and_ode(moons):
    model, diffusion, x0 = moons
    b = lk.bound(model, diffusion, x0, variance="beta")
    odes = {steps: lk.ode_log_likelihood(model, diffusion, x0, steps=steps) for steps in (50, 100)}
    drift = float((odes[50].bits_per_dim - odes[100].bits_per_dim).abs().max())
    print(f"moons, 64 points: bound (σ² = β) {b.bits_per_dim:.3f} ± {b.stderr:.3f} bits/dim, L_0 {b.decoder:.3f}; "
          f"ODE {odes[100].mean_bits_per_dim:.3f} ± {odes[100].stderr:.3f} in {odes[100].wall_time:.1f} s; "
          f"50 vs 100 steps: {drift:.1e}")  # fmt: skip
    assert b.full and b.decoder < 0  # a density: continuous bits/dim go below 0
    assert drift < 0.05 and odes[100].evaluations == 4 * 102


def test_auto_mode_follows_the_named_rule():
    schedule = scaled_linear(1000)
    model, d = GaussianOptimum(schedule), Diffusion(schedule)
    n = lk.FULL_SUM_MAX // 1000
    assert not lk.bound(model, d, gaussian_data(n + 1), strata=4).full
    assert lk.bound(model, d, gaussian_data(8)).full


# ----------------------------------------------------------------------------------------------------------------
# Bad arguments


def test_bad_arguments_raise_value_errors(digits, moons):
    image_model, diffusion, x = digits
    points_model, points_diffusion, points = moons
    cases = [
        (lambda: lk.bound(points_model, points_diffusion, points, variance="learned"), "unknown variance 'learned'"),
        (lambda: lk.loss_weights(diffusion.schedule, "fixed"), "unknown variance"),
        (lambda: lk.bound(points_model, points_diffusion, x[:2]), r"x0 must be a batch \(N, 2\)"),
        (lambda: lk.bound(image_model, diffusion, points, levels=17), r"x0 must be a batch \(N, 1, 8, 8\)"),
        (lambda: lk.bound(image_model, diffusion, x[:2] * 1.5, levels=17), r"must lie in \[-1, 1\]"),
        (lambda: lk.bound(image_model, diffusion, x[:0], levels=17), "no samples"),
        (lambda: lk.bound(image_model, diffusion, x[:2]), "images need their number of levels"),
        (lambda: lk.bound(points_model, points_diffusion, points, levels=256), "2D points are continuous"),
        (lambda: lk.bound(points_model, points_diffusion, points, full=False, strata=0), "strata must be"),
        (lambda: lk.bound(points_model, points_diffusion, points, y=torch.zeros(3, dtype=torch.long)), "one label"),
        (lambda: lk.bound(points_model, points_diffusion, points * torch.nan), "NaN"),
        (lambda: lk.kl_term(points_model, points_diffusion, points, 0), "index must lie in 1"),
        (lambda: lk.kl_term(points_model, points_diffusion, points, 1000), "index must lie in 1"),
        (lambda: lk.ode_log_likelihood(points_model, points_diffusion, points, steps=0), "steps"),
        (lambda: lk.ode_log_likelihood(image_model, diffusion, x[:2]), "ODE likelihood is for 2D point models"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
    zero_snr = Diffusion(make_schedule("linear", 100, rescale_zero_terminal_snr=True))
    with pytest.raises(ValueError, match="ᾱ_T > 0"):
        lk.ode_log_likelihood(points_model, zero_snr, points)
