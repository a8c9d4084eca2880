"""Noise schedules β_1 … β_T and every quantity derived from them.

Index convention: every tensor here has length T, and index ``i = 0 … T-1`` holds the paper's ``t = i + 1``
(as in the course's code: ``betas[0]`` is β_1, ``alpha_bars[T-1]`` is ᾱ_T). All tensors are float64.

    >>> s = make_schedule("linear", 1000, beta_start=1e-4, beta_end=0.02)
    >>> s.betas, s.alphas, s.alpha_bars, s.snr, s.posterior_variance   # (T,) float64 each
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

MAX_T = 100_000  # beyond this a schedule is a memory hazard, not a teaching tool
MIN_BETA = 1e-12  # below this 1 - β rounds to 1 within a few ulps and ᾱ stops decreasing
ALPHA_BAR_FLOOR = 1e-20  # ᾱ used where x̂₀ divides by √ᾱ: zero terminal SNR (or underflow) makes ᾱ_T = 0


# ----------------------------------------------------------------------------------------------------------------
# Families: each returns β (T,) float64 for validated parameters.


def _grid(T: int) -> Tensor:
    """u_i = i / (T - 1) for i = 0 … T-1: the schedule's position from β_1 to β_T, (T,) float64."""
    return torch.linspace(0.0, 1.0, T, dtype=torch.float64)


def linear_betas(T: int, beta_start: float, beta_end: float) -> Tensor:
    """Ho et al. 2020: β_t linear from beta_start to beta_end (Ho et al.'s schedule, the course's)."""
    return beta_start + (beta_end - beta_start) * _grid(T)


def scaled_linear_betas(T: int, beta_start: float, beta_end: float) -> Tensor:
    """√β_t linear from √beta_start to √beta_end (Ho et al.'s "quad", latent diffusion's "scaled_linear")."""
    return (math.sqrt(beta_start) + (math.sqrt(beta_end) - math.sqrt(beta_start)) * _grid(T)) ** 2


def quadratic_betas(T: int, beta_start: float, beta_end: float) -> Tensor:
    """β_t grows with the square of t/T: slow at first, steep at the end."""
    return beta_start + (beta_end - beta_start) * _grid(T) ** 2


def sigmoid_betas(T: int, beta_start: float, beta_end: float, start: float, end: float, tau: float) -> Tensor:
    """GeoDiff (Xu et al. 2022): β_t = β_start + (β_end − β_start)·σ(x_t / τ), x_t linear from start to end."""
    x = start + (end - start) * _grid(T)
    return beta_start + (beta_end - beta_start) * torch.sigmoid(x / tau)


def cosine_betas(T: int, s: float, max_beta: float) -> Tensor:
    """Nichol & Dhariwal 2021: ᾱ(t) = f(t)/f(0), f(t) = cos²((t/T + s)/(1 + s)·π/2).

    β_t = min(1 − ᾱ_t/ᾱ_{t−1}, max_beta): the clip keeps the last steps from having β = 1.
    """
    u = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2  # (T+1,)
    return (1 - f[1:] / f[:-1]).clamp(max=max_beta)


@dataclass(frozen=True)
class ScheduleFamily:
    betas: Callable[..., Tensor]  # (T, **params) -> (T,) float64
    defaults: dict[str, float]  # the literature's values
    latex: str  # the family's defining equation, in the course's notation
    summary: str


_BETA_RANGE = {"beta_start": 1e-4, "beta_end": 0.02}

SCHEDULES: dict[str, ScheduleFamily] = {
    "linear": ScheduleFamily(
        linear_betas,
        dict(_BETA_RANGE),
        r"\beta_t = \beta_{\mathrm{start}} + (\beta_{\mathrm{end}} - \beta_{\mathrm{start}})\,\frac{t-1}{T-1}",
        "Ho et al. 2020 (the course's): β linear in t.",
    ),
    "scaled_linear": ScheduleFamily(
        scaled_linear_betas,
        {"beta_start": 0.00085, "beta_end": 0.012},
        r"\sqrt{\beta_t} = \sqrt{\beta_{\mathrm{start}}} + \left(\sqrt{\beta_{\mathrm{end}}}"
        r" - \sqrt{\beta_{\mathrm{start}}}\right)\frac{t-1}{T-1}",
        "Linear in √β (latent diffusion's defaults).",
    ),
    "quadratic": ScheduleFamily(
        quadratic_betas,
        dict(_BETA_RANGE),
        r"\beta_t = \beta_{\mathrm{start}} + (\beta_{\mathrm{end}} - \beta_{\mathrm{start}})"
        r"\left(\frac{t-1}{T-1}\right)^2",
        "β grows with (t/T)²: gentle early, steep late.",
    ),
    "sigmoid": ScheduleFamily(
        sigmoid_betas,
        {**_BETA_RANGE, "start": -6.0, "end": 6.0, "tau": 1.0},
        r"\beta_t = \beta_{\mathrm{start}} + (\beta_{\mathrm{end}} - \beta_{\mathrm{start}})\,"
        r"\sigma\!\left(\tfrac{1}{\tau}\left(\mathrm{start}"
        r" + (\mathrm{end}-\mathrm{start})\tfrac{t-1}{T-1}\right)\right)",
        "GeoDiff's sigmoid in β (diffusers' 'sigmoid').",
    ),
    "cosine": ScheduleFamily(
        cosine_betas,
        {"s": 0.008, "max_beta": 0.999},
        r"\bar\alpha_t = \frac{f(t)}{f(0)},\; f(t) = \cos^2\!\left(\frac{t/T + s}{1 + s}\cdot\frac{\pi}{2}\right),\;"
        r"\beta_t = \min\!\left(1 - \frac{\bar\alpha_t}{\bar\alpha_{t-1}},\ \beta_{\max}\right)",
        "Nichol & Dhariwal 2021: ᾱ follows a squared cosine.",
    ),
}


# ----------------------------------------------------------------------------------------------------------------
# Validation: every message names the value and says what is wrong with it.


def _check_T(T) -> int:
    if isinstance(T, bool) or not isinstance(T, numbers.Integral):
        raise ValueError(f"T (number of timesteps) must be an integer, got {T!r}")
    if T < 2:
        raise ValueError(f"T (number of timesteps) must be at least 2, got {T}")
    if T > MAX_T:
        raise ValueError(f"T (number of timesteps) must be at most {MAX_T}, got {T}")
    return int(T)


def _check_params(name: str, given: dict) -> dict[str, float]:
    family = SCHEDULES[name]
    unknown = sorted(set(given) - set(family.defaults))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(unknown)} for schedule {name!r}; "
            f"valid parameters: {', '.join(family.defaults)}"
        )
    params = {**family.defaults, **given}
    for key, value in params.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"{key} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{key} must be finite, got {value}")
        params[key] = float(value)
    for key in ("beta_start", "beta_end"):
        if key in params and not 0.0 < params[key] < 1.0:
            raise ValueError(f"{key} must lie strictly between 0 and 1, got {params[key]}")
    if "beta_start" in params and params["beta_end"] < params["beta_start"]:
        raise ValueError(
            f"beta_end ({params['beta_end']}) must not be smaller than beta_start ({params['beta_start']}): "
            "noise is added faster as t grows"
        )
    if name == "sigmoid":
        if params["tau"] <= 0:
            raise ValueError(f"tau must be positive, got {params['tau']}")
        if params["end"] <= params["start"]:
            raise ValueError(f"end ({params['end']}) must be larger than start ({params['start']})")
    if name == "cosine":
        if params["s"] < 0:
            raise ValueError(f"s (the cosine offset) must be ≥ 0, got {params['s']}")
        if not 0.0 < params["max_beta"] < 1.0:
            raise ValueError(f"max_beta must lie strictly between 0 and 1, got {params['max_beta']}")
    return params


def _check_betas(betas: Tensor, allow_one_at_end: bool) -> None:
    body = betas[:-1] if allow_one_at_end else betas
    if not torch.isfinite(betas).all():
        raise ValueError("the schedule produced non-finite β values; check its parameters")
    if (body < MIN_BETA).any():
        i = int(torch.nonzero(body < MIN_BETA)[0])
        raise ValueError(
            f"β_{i + 1} = {float(body[i]):.3g} is too small: each β must be at least {MIN_BETA:g} "
            "so that 1 − β differs from 1 in float64"
        )
    if (body >= 1).any():
        i = int(torch.nonzero(body >= 1)[0])
        raise ValueError(f"β_{i + 1} = {float(body[i]):.6g} must be below 1")


# ----------------------------------------------------------------------------------------------------------------


def rescale_betas_zero_terminal_snr(betas: Tensor) -> Tensor:
    """Lin et al. 2024, Algorithm 1: shift and scale √ᾱ so that ᾱ_T = 0 (SNR_T = 0) while ᾱ_1 is unchanged.

    betas: (T,) float64. Returns (T,) float64 with β_T = 1.
    """
    sqrt_ab = torch.cumprod(1 - betas, 0).sqrt()
    if sqrt_ab[-1] ** 2 < ALPHA_BAR_FLOOR:
        # The shift is below 1e-10 and the squares would underflow: take the algorithm's limit, ᾱ_T → 0.
        return torch.cat([betas[:-1], torch.ones(1, dtype=betas.dtype)])
    first, last = sqrt_ab[0].clone(), sqrt_ab[-1].clone()
    sqrt_ab = (sqrt_ab - last) * first / (first - last)
    alpha_bars = sqrt_ab**2
    alphas = torch.cat([alpha_bars[:1], alpha_bars[1:] / alpha_bars[:-1]])
    return 1 - alphas


class Schedule:
    """A noise schedule and its derived quantities; all (T,) float64, index i is the paper's t = i + 1.

    Attributes:
        betas: β_t, the forward variance of q(x_t | x_{t-1}).
        alphas: α_t = 1 − β_t.
        alpha_bars: ᾱ_t = ∏_{s≤t} α_s.
        alpha_bars_prev: ᾱ_{t−1}, with ᾱ_0 = 1.
        sqrt_alpha_bars, sqrt_one_minus_alpha_bars: √ᾱ_t and √(1 − ᾱ_t), the weights of x_0 and ε in x_t.
        log_alpha_bars: ln ᾱ_t, summed in log space (finite where a long schedule's ᾱ underflows float64).
        snr: ᾱ_t / (1 − ᾱ_t); log_snr its natural log.
        posterior_variance: β̃_t = (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · β_t, the variance of q(x_{t−1} | x_t, x_0).
    """

    def __init__(self, name: str, params: dict[str, float], betas: Tensor, rescaled: bool):
        self.name = name
        self.params = dict(params)
        self.rescale_zero_terminal_snr = rescaled
        self.num_timesteps = len(betas)
        self.betas = betas
        self.alphas = 1 - betas
        self.alpha_bars = torch.cumprod(self.alphas, 0)
        self.log_alpha_bars = torch.cumsum(torch.log1p(-betas), 0)  # finite even where ᾱ underflows to 0
        self.alpha_bars_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bars[:-1]])
        self.sqrt_alpha_bars = self.alpha_bars.sqrt()
        self.sqrt_one_minus_alpha_bars = (1 - self.alpha_bars).sqrt()
        self.snr = self.alpha_bars / (1 - self.alpha_bars)
        self.log_snr = self.log_alpha_bars - torch.log1p(-self.alpha_bars)
        self.posterior_variance = (1 - self.alpha_bars_prev) / (1 - self.alpha_bars) * betas

    @property
    def T(self) -> int:
        return self.num_timesteps

    def prior_kl_bits_per_dim(self, x0: Tensor | None = None) -> float:
        """L_T = KL(q(x_T | x_0) ‖ N(0, I)) per dimension, in bits, for data in [-1, 1].

        q(x_T | x_0) = N(√ᾱ_T x_0, (1 − ᾱ_T) I), so per dimension
        KL = ½ (ᾱ_T x_0² − ᾱ_T − ln(1 − ᾱ_T)). It depends on the data only through mean(x_0²): pass x0 (any shape)
        to use yours; without it, x_0 is taken uniform on [-1, 1] (mean x_0² = 1/3).
        """
        mean_sq = 1.0 / 3.0 if x0 is None else float(x0.double().pow(2).mean())
        ab = self.alpha_bars[-1]
        nats = 0.5 * (ab * mean_sq - ab - torch.log1p(-ab))
        return float(nats) / math.log(2.0)

    def to_dict(self) -> dict:
        """The arguments that rebuild this schedule with make_schedule(**d): JSON-ready and hashable as a tuple."""
        return {
            "name": self.name,
            "T": self.num_timesteps,
            "rescale_zero_terminal_snr": self.rescale_zero_terminal_snr,
            **self.params,
        }

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v:g}" for k, v in self.params.items())
        zero = ", rescale_zero_terminal_snr=True" if self.rescale_zero_terminal_snr else ""
        return f"Schedule({self.name!r}, T={self.num_timesteps}, {params}{zero})"


def make_schedule(name: str, T: int, *, rescale_zero_terminal_snr: bool = False, **params: float) -> Schedule:
    """Build a noise schedule by name: one of SCHEDULES ('linear', 'scaled_linear', 'quadratic', 'sigmoid', 'cosine').

    Args:
        name: the schedule family.
        T: number of diffusion steps, 2 … MAX_T.
        rescale_zero_terminal_snr: shift and scale √ᾱ so that ᾱ_T = 0 exactly (Lin et al. 2024); then β_T = 1.
        **params: the family's parameters (SCHEDULES[name].defaults lists them with the literature's values).

    Raises:
        ValueError: naming the offending value — unknown name or parameter, T < 2, β outside (0, 1),
            beta_end < beta_start, or a non-finite number.
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; valid names: {', '.join(SCHEDULES)}")
    T = _check_T(T)
    checked = _check_params(name, params)
    betas = SCHEDULES[name].betas(T, **checked)
    _check_betas(betas, allow_one_at_end=False)
    if rescale_zero_terminal_snr:
        betas = rescale_betas_zero_terminal_snr(betas)
        _check_betas(betas, allow_one_at_end=True)
    return Schedule(name, checked, betas, bool(rescale_zero_terminal_snr))
