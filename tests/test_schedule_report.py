"""The Schedules page's numbers, without Streamlit: against the schedule's own tensors, the definitions, brute force."""

import csv
import io
import math
import sys

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ddpm_core.schedule_report import (
    PRIOR_SIGNAL_MAX,
    SUMMARY_FIELDS,
    X0_GAIN_MAX,
    describe,
    display_indices,
    plottable,
    schedule_curves,
    schedule_summary,
    schedule_warnings,
    short_number,
    snr_crossing_t,
    summary_csv,
)
from ddpm_core.schedules import SCHEDULES, make_schedule

PAPER = {"beta_start": 1e-4, "beta_end": 0.02}  # Ho et al. 2020, T = 1000


def brute_force_crossing(snr) -> int | None:
    """Scan t = 1 … T for the step where SNR goes from ≥ 1 to < 1, with SNR_0 = ∞."""
    prev = math.inf
    for i, value in enumerate(snr):
        if prev >= 1 > value:
            return i + 1
        prev = value
    return None


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("rescale", [False, True])
def test_summary_matches_the_schedule_tensors_and_the_definitions(name, rescale):
    s = make_schedule(name, 300, rescale_zero_terminal_snr=rescale)
    row = schedule_summary(s)
    assert list(row) == list(SUMMARY_FIELDS)
    ab = float(np.prod(1 - s.betas.numpy()))  # ᾱ_T = ∏ α_t, recomputed from β
    assert row["alpha_bar_T"] == pytest.approx(ab, rel=1e-12, abs=1e-300)
    assert row["alpha_bar_T"] == float(s.alpha_bars[-1])
    assert row["terminal_snr"] == pytest.approx(ab / (1 - ab), rel=1e-12, abs=1e-300)
    kl_nats = 0.5 * (ab / 3 - ab - math.log1p(-ab))  # KL(N(√ᾱ x0, 1−ᾱ) ‖ N(0, 1)), E[x0²] = 1/3 on [-1, 1]
    assert row["prior_kl_bits_per_dim"] == pytest.approx(kl_nats / math.log(2), rel=1e-9, abs=1e-300)
    assert row["max_beta"] == float(s.betas.max())
    assert row["snr_crosses_1_at_t"] == brute_force_crossing(s.snr.tolist())
    assert row["T"] == 300 and row["schedule"] == describe(s)
    if rescale:
        assert row["x0_error_gain_T"] == math.inf and row["max_beta"] == 1.0
    else:
        assert row["x0_error_gain_T"] == pytest.approx(math.sqrt((1 - ab) / ab), rel=1e-9)


def test_snr_crossing_of_the_paper_linear_schedule():
    betas = np.linspace(1e-4, 0.02, 1000)
    alpha_bars = np.cumprod(1 - betas)
    t = brute_force_crossing(alpha_bars / (1 - alpha_bars))  # ᾱ from the paper's β, in numpy
    assert snr_crossing_t(alpha_bars / (1 - alpha_bars)) == t
    assert alpha_bars[t - 2] >= 0.5 > alpha_bars[t - 1]  # paper's t: index t − 1 is the first ᾱ below ½
    assert schedule_summary(make_schedule("linear", 1000, **PAPER))["snr_crosses_1_at_t"] == t


def test_snr_crossing_edge_cases():
    assert snr_crossing_t(np.array([5.0, 2.0, 1.0, 0.99, 0.1])) == 4  # exactly 1 is not below 1 yet
    assert snr_crossing_t(np.array([0.5, 0.2])) == 1  # from SNR_0 = ∞
    assert snr_crossing_t(np.array([9.0, 3.0])) is None
    assert schedule_summary(make_schedule("linear", 2, **PAPER))["snr_crosses_1_at_t"] is None


def test_warnings_fire_for_small_T_and_cosine_blow_up_but_not_for_the_paper_schedule():
    paper = make_schedule("linear", 1000, **PAPER)
    assert schedule_warnings(paper) == []
    # The thresholds sit where the docstrings say: the paper's schedule is inside both, with room to spare.
    assert math.sqrt(float(paper.alpha_bars[-1])) < PRIOR_SIGNAL_MAX * 0.7
    assert schedule_summary(paper)["x0_error_gain_T"] < X0_GAIN_MAX / 5

    short = schedule_warnings(make_schedule("linear", 50, **PAPER))
    assert len(short) == 1 and "not pure noise" in short[0]
    assert f"{float(make_schedule('linear', 50, **PAPER).alpha_bars[-1]):.3g}" in short[0]

    stable_diffusion = make_schedule("scaled_linear", 1000)  # Lin et al.'s example of a leaky x_T
    assert any("not pure noise" in w for w in schedule_warnings(stable_diffusion))

    cosine = make_schedule("cosine", 1000)
    blow_up = schedule_warnings(cosine)
    assert len(blow_up) == 1 and "blows up" in blow_up[0] and "β_max" in blow_up[0]
    assert schedule_summary(cosine)["x0_error_gain_T"] > X0_GAIN_MAX
    # The remedy it suggests works: a lower β_max clip keeps the last step's gain under the threshold.
    assert schedule_warnings(make_schedule("cosine", 1000, max_beta=0.5)) == []


def test_zero_terminal_snr_gives_alpha_bar_T_zero_and_no_nan():
    for name in SCHEDULES:
        s = make_schedule(name, 200, rescale_zero_terminal_snr=True)
        row = schedule_summary(s)
        assert row["alpha_bar_T"] == 0 and row["terminal_snr"] == 0 and row["prior_kl_bits_per_dim"] == 0
        curves = schedule_curves(s)
        assert not any(np.isnan(v).any() for v in curves.values())
        assert curves["log_snr"][-1] == -math.inf and np.isfinite(curves["log_snr"][:-1]).all()
        x, y, dropped = plottable(curves["t"], curves["log_snr"], log_y=False)
        assert dropped == 1 and x[-1] == 199 and np.isfinite(y).all()
        assert any("undefined at t = T" in w for w in schedule_warnings(s))
        assert not any("not pure noise" in w for w in schedule_warnings(s))


def test_curves_are_the_schedule_tensors_and_thinning_keeps_both_ends():
    s = make_schedule("cosine", 5000)
    full = schedule_curves(s)
    np.testing.assert_array_equal(full["t"], np.arange(1, 5001))
    np.testing.assert_array_equal(full["beta"], s.betas.numpy())
    np.testing.assert_array_equal(full["sqrt_one_minus_alpha_bar"], s.sqrt_one_minus_alpha_bars.numpy())
    np.testing.assert_array_equal(full["posterior_variance"], s.posterior_variance.numpy())
    thin = schedule_curves(s, max_points=400)
    assert len(thin["t"]) <= 400 and thin["t"][0] == 1 and thin["t"][-1] == 5000
    assert np.all(np.diff(thin["t"]) > 0)
    for key, values in thin.items():
        np.testing.assert_array_equal(values, full[key][thin["t"].astype(int) - 1])
    np.testing.assert_array_equal(display_indices(7, 10), np.arange(7))


def test_plottable_drops_what_a_log_axis_cannot_show():
    curves = schedule_curves(make_schedule("linear", 100, **PAPER))
    assert curves["posterior_variance"][0] == 0  # β̃_1 = 0: q(x_0 | x_1, x_0) is a point
    x, y, dropped = plottable(curves["t"], curves["posterior_variance"], log_y=True)
    assert dropped == 1 and x[0] == 2 and (y > 0).all()
    assert plottable(curves["t"], curves["posterior_variance"], log_y=False)[2] == 0


def test_csv_parses_back_with_the_same_numbers():
    schedules = [
        make_schedule("linear", 1000, **PAPER),
        make_schedule("cosine", 1000, rescale_zero_terminal_snr=True),  # gain = inf
        make_schedule("linear", 2, **PAPER),  # SNR never crosses 1: None
    ]
    rows = [schedule_summary(s) for s in schedules]
    parsed = list(csv.DictReader(io.StringIO(summary_csv(rows))))
    assert len(parsed) == len(rows)
    for row, back in zip(rows, parsed, strict=True):
        assert list(back) == list(SUMMARY_FIELDS)
        assert back["schedule"] == row["schedule"] and int(back["T"]) == row["T"]
        for key in ("alpha_bar_T", "terminal_snr", "prior_kl_bits_per_dim", "max_beta", "x0_error_gain_T"):
            assert float(back[key]) == row[key], key  # full precision
        crossing = row["snr_crosses_1_at_t"]
        assert back["snr_crosses_1_at_t"] == ("" if crossing is None else str(crossing))


def test_legend_labels_are_short_and_name_the_parameters():
    assert describe(make_schedule("linear", 1000, **PAPER)) == "linear T=1000 (β 1e-4→0.02)"
    assert describe(make_schedule("cosine", 50, rescale_zero_terminal_snr=True)).endswith("+ zero SNR")
    assert "τ=2" in describe(make_schedule("sigmoid", 10, tau=2.0))
    assert short_number(0.00085) == "8.5e-4" and short_number(0.999) == "0.999" and short_number(-6.0) == "-6"


@st.composite
def schedules(draw):
    name = draw(st.sampled_from(sorted(SCHEDULES)))
    T = draw(st.integers(2, 3000))
    unit = st.floats(1e-6, 0.999)
    if name == "cosine":
        params = {"s": draw(st.floats(0, 0.5)), "max_beta": draw(st.floats(0.01, 0.999))}
    else:
        lo, hi = sorted((draw(unit), draw(unit)))
        params = {"beta_start": lo, "beta_end": hi}
        if name == "sigmoid":
            start = draw(st.floats(-10, 9))
            params |= {"start": start, "end": draw(st.floats(start + 0.1, 10)), "tau": draw(st.floats(0.05, 5))}
    try:
        return make_schedule(name, T, rescale_zero_terminal_snr=draw(st.booleans()), **params)
    except ValueError:  # e.g. a cosine β below MIN_BETA: make_schedule's own tests cover the refusals
        assume(False)


@settings(max_examples=60, deadline=None)
@given(schedules())
def test_summary_is_never_nan_and_finite_where_it_should_be(s):
    row = schedule_summary(s)
    for key in ("alpha_bar_T", "terminal_snr", "prior_kl_bits_per_dim", "max_beta"):
        assert math.isfinite(row[key]), key
    assert 0 <= row["alpha_bar_T"] < 1 and row["terminal_snr"] >= 0 and row["prior_kl_bits_per_dim"] >= 0
    assert 0 < row["max_beta"] <= 1
    gain = row["x0_error_gain_T"]
    assert not math.isnan(gain) and gain >= 0
    # only ᾱ_T = 0 makes x̂₀ undefined: exactly 0, or below float64's normal range (cumprod leaves a denormal such
    # as 5e-324 where the exact ln ᾱ_T, a sum of logs, is below −1400)
    assert math.isfinite(gain) or row["alpha_bar_T"] < sys.float_info.min
    crossing = row["snr_crosses_1_at_t"]
    assert crossing == brute_force_crossing(s.snr.tolist())
    assert crossing is None or 1 <= crossing <= s.T
    curves = schedule_curves(s, max_points=500)
    assert not any(np.isnan(v).any() for v in curves.values())
    assert curves["t"][-1] == s.T
    assert all(isinstance(w, str) and w for w in schedule_warnings(s))
