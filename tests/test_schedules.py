"""Noise schedules: against diffusers' DDPMScheduler, against the paper's formulas, and on bad input."""

import math

import pytest
import torch
from diffusers import DDPMScheduler
from diffusers.schedulers.scheduling_ddpm import rescale_zero_terminal_snr as diffusers_rescale
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_digits

from ddpm_core import SCHEDULES, make_schedule

# Our name → diffusers' beta_schedule. "quadratic" (β ∝ (t/T)²) has no diffusers twin; it is checked on its formula.
DIFFUSERS_NAMES = {
    "linear": "linear",
    "scaled_linear": "scaled_linear",
    "cosine": "squaredcos_cap_v2",
    "sigmoid": "sigmoid",
}


def diffusers_betas(name: str, T: int, rescale: bool) -> torch.Tensor:
    params = SCHEDULES[name].defaults
    kwargs = {k: params[k] for k in ("beta_start", "beta_end") if k in params}
    sched = DDPMScheduler(
        num_train_timesteps=T, beta_schedule=DIFFUSERS_NAMES[name], rescale_betas_zero_snr=rescale, **kwargs
    )
    return sched.betas


@pytest.mark.parametrize("name", sorted(DIFFUSERS_NAMES))
@pytest.mark.parametrize("T", [1000, 50])
@pytest.mark.parametrize("rescale", [False, True])
def test_betas_match_diffusers(name, T, rescale):
    ours = make_schedule(name, T, rescale_zero_terminal_snr=rescale)
    theirs = diffusers_betas(name, T, rescale)  # float32: compare at float32 precision
    assert ours.betas.dtype == torch.float64
    # By design diffusers rescales in float32: near T it divides tiny ᾱ's and keeps ~5 digits. The same rescale
    # in float64 agrees with ours to 1e-12 (test_zero_terminal_snr_matches_diffusers_in_float64).
    rtol = 1e-4 if rescale else 2e-6
    torch.testing.assert_close(ours.betas.float(), theirs, rtol=rtol, atol=1e-6)
    # ᾱ from their betas, accumulated in float64, agrees with ours to float32 precision.
    theirs_ab = torch.cumprod(1 - theirs.double(), 0)
    torch.testing.assert_close(ours.alpha_bars, theirs_ab, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_zero_terminal_snr_matches_diffusers_in_float64(name):
    base = make_schedule(name, 200)
    ours = make_schedule(name, 200, rescale_zero_terminal_snr=True)
    torch.testing.assert_close(ours.betas, diffusers_rescale(base.betas.clone()), rtol=1e-12, atol=1e-12)
    assert ours.alpha_bars[-1] == 0 and ours.snr[-1] == 0 and ours.log_snr[-1] == -math.inf
    assert ours.alpha_bars[0] == pytest.approx(float(base.alpha_bars[0]), rel=1e-12)  # ᾱ_1 kept


def test_linear_is_the_seed_schedule():
    s = make_schedule("linear", 1000, beta_start=1e-4, beta_end=0.02)
    assert s.betas[0].item() == pytest.approx(1e-4, rel=1e-14) and s.betas[-1].item() == pytest.approx(0.02, rel=1e-14)
    torch.testing.assert_close(s.betas, torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), rtol=1e-12, atol=0)
    torch.testing.assert_close(s.betas.diff(), torch.full((999,), (0.02 - 1e-4) / 999, dtype=torch.float64))


def test_quadratic_grows_with_the_square_of_t():
    s = make_schedule("quadratic", 101, beta_start=0.001, beta_end=0.011)
    u = torch.arange(101, dtype=torch.float64) / 100
    torch.testing.assert_close(s.betas, 0.001 + 0.01 * u**2)


def test_cosine_alpha_bar_follows_the_squared_cosine_where_not_clipped():
    T, s_off = 1000, 0.008
    s = make_schedule("cosine", T, s=s_off)
    t = torch.arange(1, T + 1, dtype=torch.float64)
    f = torch.cos((t / T + s_off) / (1 + s_off) * math.pi / 2) ** 2
    f0 = math.cos(s_off / (1 + s_off) * math.pi / 2) ** 2
    unclipped = s.betas < 0.999
    assert unclipped[:-1].all() and not unclipped[-1]  # only the last β hits max_beta
    torch.testing.assert_close(s.alpha_bars[:-1], (f / f0)[:-1], rtol=1e-10, atol=1e-14)


def test_derived_quantities_follow_their_definitions():
    s = make_schedule("cosine", 300)
    ab = torch.cumprod(1 - s.betas, 0)
    ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
    torch.testing.assert_close(s.alphas, 1 - s.betas)
    torch.testing.assert_close(s.alpha_bars, ab)
    torch.testing.assert_close(s.sqrt_alpha_bars**2 + s.sqrt_one_minus_alpha_bars**2, torch.ones_like(ab))
    torch.testing.assert_close(s.snr, ab / (1 - ab))
    torch.testing.assert_close(s.log_snr.exp(), s.snr)
    torch.testing.assert_close(s.posterior_variance, (1 - ab_prev) / (1 - ab) * s.betas)
    assert s.posterior_variance[0] == 0  # β̃_1 = 0: x_0 is known exactly given x_1 and x_0


def test_prior_kl_of_the_papers_schedule_is_about_1e5_bits_per_dim():
    bits = make_schedule("linear", 1000, beta_start=1e-4, beta_end=0.02).prior_kl_bits_per_dim()
    assert 5e-6 < bits < 2e-5  # Ho et al.: L_T ≈ 10⁻⁵ bits/dim


def test_prior_kl_agrees_with_torch_gaussian_kl_on_real_data():
    s = make_schedule("linear", 1000)
    x0 = torch.from_numpy(load_digits().images).double() / 8 - 1  # digits in [-1, 1]
    ab = s.alpha_bars[-1]
    q = torch.distributions.Normal(ab.sqrt() * x0, (1 - ab).sqrt())
    p = torch.distributions.Normal(torch.zeros_like(x0), torch.ones_like(x0))
    expected = torch.distributions.kl_divergence(q, p).mean().item() / math.log(2)
    assert s.prior_kl_bits_per_dim(x0) == pytest.approx(expected, rel=1e-9)
    # A short schedule leaves x_T far from N(0, I): the prior term is then large.
    assert make_schedule("linear", 10).prior_kl_bits_per_dim(x0) > 1000 * expected


@pytest.mark.parametrize(
    "name, T, params, match",
    [
        ("linear", 1, {}, "at least 2"),
        ("linear", 0, {}, "at least 2"),
        ("linear", -5, {}, "at least 2"),
        ("linear", 10.5, {}, "integer"),
        ("linear", 10**6, {}, "at most"),
        ("linear", 100, {"beta_start": 0.0}, "beta_start must lie strictly between 0 and 1"),
        ("linear", 100, {"beta_start": -0.1}, "beta_start must lie strictly between 0 and 1"),
        ("linear", 100, {"beta_end": 1.0}, "beta_end must lie strictly between 0 and 1"),
        ("linear", 100, {"beta_end": 1.5}, "beta_end must lie strictly between 0 and 1"),
        ("linear", 100, {"beta_start": 0.02, "beta_end": 0.01}, "beta_end .* must not be smaller than beta_start"),
        ("linear", 100, {"beta_start": float("nan")}, "beta_start must be finite"),
        ("scaled_linear", 100, {"beta_end": float("inf")}, "beta_end must be finite"),
        ("linear", 100, {"beta_start": "0.1"}, "beta_start must be a number"),
        ("linear", 100, {"beta_start": 1e-300}, "too small"),
        ("sigmoid", 100, {"tau": 0.0}, "tau must be positive"),
        ("sigmoid", 100, {"start": 3.0, "end": -3.0}, "end .* must be larger than start"),
        ("cosine", 100, {"max_beta": 1.0}, "max_beta must lie strictly between 0 and 1"),
        ("cosine", 100, {"s": -0.5}, "s .* must be ≥ 0"),
        ("cosine", 100, {"beta_start": 0.1}, "unknown parameter.*beta_start.*valid parameters: s, max_beta"),
    ],
)
def test_invalid_parameters_raise_a_value_error_naming_the_value(name, T, params, match):
    with pytest.raises(ValueError, match=match):
        make_schedule(name, T, **params)


def test_unknown_name_lists_the_valid_names():
    valid = "linear, scaled_linear, quadratic, sigmoid, cosine"
    with pytest.raises(ValueError, match=rf"unknown schedule 'cosin'.*{valid}"):
        make_schedule("cosin", 100)


def test_to_dict_rebuilds_the_schedule():
    s = make_schedule("sigmoid", 123, tau=0.7, rescale_zero_terminal_snr=True)
    again = make_schedule(**s.to_dict())
    assert again.to_dict() == s.to_dict()
    torch.testing.assert_close(again.betas, s.betas, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------------------
# Properties over the whole parameter space.

beta_pairs = st.tuples(st.floats(1e-6, 0.5, allow_nan=False), st.floats(0.0, 1.0, allow_nan=False)).map(
    lambda p: {"beta_start": p[0], "beta_end": p[0] + (0.999 - p[0]) * p[1]}
)


@st.composite
def valid_schedules(draw):
    name = draw(st.sampled_from(sorted(SCHEDULES)))
    T = draw(st.integers(2, 3000))
    if name == "cosine":
        params = {"s": draw(st.floats(0.0, 0.5)), "max_beta": draw(st.floats(0.01, 0.9999))}
    else:
        params = draw(beta_pairs)
    if name == "sigmoid":
        start = draw(st.floats(-12, 11))
        params |= {"start": start, "end": start + draw(st.floats(0.1, 12)), "tau": draw(st.floats(0.05, 5))}
    return name, T, params


@settings(max_examples=150, deadline=None)
@given(valid_schedules())
def test_valid_schedules_are_well_formed(args):
    name, T, params = args
    s = make_schedule(name, T, **params)
    for value in (s.betas, s.alphas, s.alpha_bars, s.snr, s.log_snr, s.posterior_variance):
        assert value.shape == (T,) and value.dtype == torch.float64 and not value.isnan().any()
    assert ((s.betas > 0) & (s.betas < 1)).all()
    assert ((s.alpha_bars >= 0) & (s.alpha_bars < 1)).all()
    assert (s.log_alpha_bars.diff() < 0).all() and s.log_alpha_bars.isfinite().all()  # strictly decreasing
    assert (s.log_snr.diff() < 0).all() and s.log_snr.isfinite().all()
    representable = s.alpha_bars > 1e-300  # a long, steep schedule's ᾱ_T can underflow float64
    assert (s.alpha_bars[representable] > 0).all() and (s.alpha_bars[representable].diff() < 0).all()
    assert (s.posterior_variance <= s.betas).all()
    assert 0 <= s.prior_kl_bits_per_dim() < math.inf


@settings(max_examples=60, deadline=None)
@given(valid_schedules())
def test_zero_terminal_snr_keeps_the_schedule_monotone(args):
    name, T, params = args
    s = make_schedule(name, T, rescale_zero_terminal_snr=True, **params)
    assert s.alpha_bars[-1] == 0 and s.betas[-1] == 1 and not s.posterior_variance.isnan().any()
    assert (s.alpha_bars.diff() <= 0).all()
    assert (s.alpha_bars[s.alpha_bars > 1e-300].diff() < 0).all()


bad_numbers = st.sampled_from([0.0, -1e-3, -1.0, 1.0, 1.5, float("nan"), float("inf"), float("-inf")])


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(["linear", "scaled_linear", "quadratic", "sigmoid"]),
    st.sampled_from(["beta_start", "beta_end"]),
    bad_numbers,
)
def test_any_beta_outside_the_open_unit_interval_is_rejected(name, key, value):
    with pytest.raises(ValueError, match=key):
        make_schedule(name, 100, **{key: value})


@settings(max_examples=50, deadline=None)
@given(st.integers(-(10**6), 1))
def test_too_few_steps_are_rejected(T):
    with pytest.raises(ValueError, match="T"):
        make_schedule("linear", T)
