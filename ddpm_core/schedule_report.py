"""What the Schedules page shows about a noise schedule: its curves, its summary numbers and the warnings they raise.

No UI here: each function takes a Schedule and returns numpy arrays or plain Python values, so a page can cache them
keyed on ``Schedule.to_dict()`` and the tests can check them without Streamlit. Index ``i`` of every array is the
paper's ``t = i + 1``, as in ``ddpm_core.schedules``; the curves carry that t explicitly.

    >>> s = make_schedule("linear", 50)
    >>> schedule_summary(s)["alpha_bar_T"], schedule_warnings(s)   # ᾱ_T ≈ 0.6: x_T is far from N(0, I)
"""

from __future__ import annotations

import csv
import io
import math

import numpy as np

from ddpm_core.schedules import Schedule

# A warning threshold on √ᾱ_T, the weight of x_0 left in x_T = √ᾱ_T x_0 + √(1 − ᾱ_T) ε. Sampling draws x_T from
# N(0, I), which assumes that weight is 0. Above 0.01 the leftover signal is visible to the model: Stable Diffusion's
# scaled_linear schedule (√ᾱ_T ≈ 0.068) leaks enough low-frequency content of x_0 into x_T that its samples cannot
# stray far from mid-gray brightness (Lin et al. 2024), whereas the paper's linear T = 1000 (√ᾱ_T ≈ 0.0064,
# L_T ≈ 1e-5 bits/dim) is treated as pure noise. 0.01 lies between them: ᾱ_T = 1e-4, L_T ≈ 2.4e-5 bits/dim for
# data uniform on [-1, 1].
PRIOR_SIGNAL_MAX = 0.01

# A warning threshold on the x̂₀ error gain 1/√SNR_T = √(1 − ᾱ_T)/√ᾱ_T (≈ 1/√ᾱ_T once ᾱ_T is small):
# x̂₀ = (x_t − √(1 − ᾱ_t) ε_θ)/√ᾱ_t turns an error δ in ε_θ into an error δ/√SNR_t in x̂₀. The paper's linear T = 1000
# reaches ≈ 157× and samples fine with ε-prediction; the cosine schedule's last step, clipped at β_max = 0.999,
# reaches ≈ 2·10⁴×. Above 1000× a 0.1 % error in ε — far better than a trained network does near t = T — already
# moves x̂₀ by half the data range [-1, 1], so x̂₀ in the first reverse steps is amplified noise unless it is clipped.
X0_GAIN_MAX = 1000.0

MAX_POINTS = 2000  # points per curve sent to a browser; T goes up to 100 000

# Summary field (the CSV header) → the table's column label.
SUMMARY_FIELDS: dict[str, str] = {
    "schedule": "schedule",
    "T": "T",
    "alpha_bar_T": "ᾱ_T",
    "terminal_snr": "SNR_T",
    "prior_kl_bits_per_dim": "L_T (bits/dim)",
    "snr_crosses_1_at_t": "SNR < 1 from t",
    "max_beta": "max β_t",
    "x0_error_gain_T": "x̂₀ error gain 1/√SNR_T",
}

_FAMILY_PARAMS = {  # how describe() writes each family's parameters
    "linear": "β {beta_start}→{beta_end}",
    "scaled_linear": "β {beta_start}→{beta_end}",
    "quadratic": "β {beta_start}→{beta_end}",
    "sigmoid": "β {beta_start}→{beta_end}, x {start}→{end}, τ={tau}",
    "cosine": "s={s}, β_max={max_beta}",
}


def short_number(value: float) -> str:
    """1e-4 rather than 0.0001: legends stay short and read like the literature."""
    if value != 0 and abs(value) < 1e-3:
        mantissa, exponent = f"{value:.2e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return f"{value:.4g}"


def describe(schedule: Schedule) -> str:
    """A one-line label, e.g. "linear T=1000 (β 1e-4→0.02)", "+ zero SNR" when rescaled."""
    params = _FAMILY_PARAMS[schedule.name].format(**{k: short_number(v) for k, v in schedule.params.items()})
    zero = " + zero SNR" if schedule.rescale_zero_terminal_snr else ""
    return f"{schedule.name} T={schedule.T} ({params}){zero}"


def display_indices(T: int, max_points: int | None) -> np.ndarray:
    """Indices 0 … T-1 thinned evenly to at most max_points, always keeping the first and the last step (where the
    cosine blow-up and the zero-terminal-SNR −∞ live). None keeps them all."""
    if max_points is None or max_points >= T:
        return np.arange(T)
    return np.unique(np.linspace(0, T - 1, max_points).round().astype(np.int64))


def schedule_curves(schedule: Schedule, max_points: int | None = None) -> dict[str, np.ndarray]:
    """The page's curves as float64 numpy arrays of one common length (≤ max_points), keyed by quantity:

    t (the paper's t = index + 1), beta β_t, alpha_bar ᾱ_t, sqrt_alpha_bar √ᾱ_t, sqrt_one_minus_alpha_bar
    √(1 − ᾱ_t), snr ᾱ_t/(1 − ᾱ_t), log_snr (−inf at t = T under zero terminal SNR), posterior_variance β̃_t.
    """
    idx = display_indices(schedule.T, max_points)
    tensors = {
        "beta": schedule.betas,
        "alpha_bar": schedule.alpha_bars,
        "sqrt_alpha_bar": schedule.sqrt_alpha_bars,
        "sqrt_one_minus_alpha_bar": schedule.sqrt_one_minus_alpha_bars,
        "snr": schedule.snr,
        "log_snr": schedule.log_snr,
        "posterior_variance": schedule.posterior_variance,
    }
    return {"t": (idx + 1).astype(np.float64), **{k: v.numpy()[idx].copy() for k, v in tensors.items()}}


def snr_crossing_t(snr: np.ndarray) -> int | None:
    """The paper's t at which the SNR crosses 1, going from SNR_{t−1} ≥ 1 to SNR_t < 1 (ᾱ_t drops below ½), with
    SNR_0 = ∞; None when SNR never drops below 1. snr: (T,), index i is t = i + 1; SNR falls with t as every β > 0."""
    below = np.flatnonzero(np.asarray(snr) < 1)
    return int(below[0]) + 1 if below.size else None


def x0_error_gain(log_snr_T: float) -> float:
    """1/√SNR_T = exp(−½ log-SNR_T), the factor x̂₀ = (x_t − √(1 − ᾱ_t) ε)/√ᾱ_t puts on an error in ε at t = T;
    inf when ᾱ_T = 0 (zero terminal SNR, or ᾱ_T underflowing float64)."""
    return math.inf if log_snr_T < -1400 else math.exp(-0.5 * log_snr_T)


def schedule_summary(schedule: Schedule) -> dict:
    """The table row: plain Python numbers keyed as SUMMARY_FIELDS.

    alpha_bar_T ᾱ_T; terminal_snr SNR_T; prior_kl_bits_per_dim L_T = KL(q(x_T | x_0) ‖ N(0, I)) per dimension, for
    data uniform on [-1, 1]; snr_crosses_1_at_t (paper's t, or None); max_beta; x0_error_gain_T 1/√SNR_T.
    """
    return {
        "schedule": describe(schedule),
        "T": schedule.T,
        "alpha_bar_T": float(schedule.alpha_bars[-1]),
        "terminal_snr": float(schedule.snr[-1]),
        "prior_kl_bits_per_dim": schedule.prior_kl_bits_per_dim(),
        "snr_crosses_1_at_t": snr_crossing_t(schedule.snr.numpy()),
        "max_beta": float(schedule.betas.max()),
        "x0_error_gain_T": x0_error_gain(float(schedule.log_snr[-1])),
    }


def schedule_warnings(schedule: Schedule) -> list[str]:
    """Markdown warnings for the two ways the end of a schedule goes wrong (thresholds PRIOR_SIGNAL_MAX and
    X0_GAIN_MAX, reasoned above): x_T is not N(0, I), or x̂₀ amplifies the error of ε_θ too much."""
    out = []
    ab_T = float(schedule.alpha_bars[-1])
    if math.sqrt(ab_T) > PRIOR_SIGNAL_MAX:
        out.append(
            f"**x_T is not pure noise.** ᾱ_T = {ab_T:.3g}, so x_T = √ᾱ_T x₀ + √(1−ᾱ_T) ε still carries "
            f"√ᾱ_T = {math.sqrt(ab_T):.3g} of x₀ (above {PRIOR_SIGNAL_MAX:g}): L_T = "
            f"{schedule.prior_kl_bits_per_dim():.3g} bits/dim. Sampling starts from N(0, I), off the distribution "
            "the model saw at t = T. Use more steps T, larger β, or rescale to zero terminal SNR."
        )
    gain = x0_error_gain(float(schedule.log_snr[-1]))
    lower_clip = " or lower the β_max clip" if "max_beta" in schedule.params else ""
    if math.isinf(gain):
        out.append(
            "**x̂₀ is undefined at t = T.** ᾱ_T = 0, so x̂₀ = (x_t − √(1−ᾱ_t) ε)/√ᾱ_t divides by zero: an "
            "ε-predicting model cannot give x̂₀ there (Lin et al. 2024 predict v instead). Clip x̂₀ to [-1, 1] "
            "when sampling."
        )
    elif gain > X0_GAIN_MAX:
        out.append(
            f"**1/√ᾱ blows up at the end.** x̂₀ = (x_t − √(1−ᾱ_t) ε)/√ᾱ_t multiplies the error of ε_θ by "
            f"{gain:,.0f}× at t = T (above {X0_GAIN_MAX:,.0f}×: a 0.1 % error in ε moves x̂₀ by half the data range). "
            f"Clip x̂₀ to [-1, 1] when sampling{lower_clip}."
        )
    return out


def summary_csv(rows: list[dict]) -> str:
    """The summary rows as CSV, header SUMMARY_FIELDS' keys; floats at full precision (repr), None as empty."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(SUMMARY_FIELDS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def plottable(x: np.ndarray, y: np.ndarray, log_y: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """The points a chart can draw: finite, and positive on a log axis. Returns (x, y, how many were dropped):
    zero terminal SNR makes log-SNR_T = −∞ and ᾱ_T = 0, and β̃_1 = 0 has no place on a log axis."""
    keep = np.isfinite(y) & ((y > 0) if log_y else True)
    return x[keep], y[keep], int((~keep).sum())
