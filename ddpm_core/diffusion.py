"""The diffusion process of Ho et al. 2020 (and DDIM's step, Song et al. 2021): one method per equation, each citing
it (the map from equations to functions and pages: ddpm_core/equations.py).

Index convention (as in schedules.py): timestep index ``t = 0 … T-1`` is the paper's t + 1. ``t_prev = -1`` stands
for the clean data x_0, where ᾱ = 1.

Shapes: x is (B, C, H, W) for images or (B, D) for points — any (B, ...) works. ``t`` is an int (the same step for
the whole batch) or a LongTensor (B,) with one step per element. Results take the input's device and dtype; the
schedule's coefficients are float64 buffers that move with ``.to(device)`` and are cast to the input's dtype last; the
reverse steps at an int t (what the samplers use) read them as Python floats from a host copy instead.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple, get_args

import torch
from torch import Tensor, nn

from ddpm_core.schedules import ALPHA_BAR_FLOOR, Schedule

VarianceType = Literal["beta", "posterior"]  # σ_t² = β_t (Ho et al.'s choice for sampling) or β̃_t (the posterior's)
Spacing = Literal["leading", "trailing", "linspace"]
PredictionType = Literal["eps", "x0", "v"]  # what a network outputs: ε, x_0, or v (Salimans & Ho 2022)
PREDICTION_TYPES: tuple[str, ...] = get_args(PredictionType)


class Step(NamedTuple):
    """What one reverse step returns (unpacks as ``x_prev, x0_pred = ...``)."""

    x_prev: Tensor  # x_{t-1} (or x_{t_prev} for strided steps), same shape as x_t
    x0_pred: Tensor  # x̂₀, the model's current estimate of the clean data, same shape


class Posterior(NamedTuple):
    mean: Tensor  # μ̃_t(x_t, x_0), same shape as x_t
    variance: Tensor  # β̃_t, (B, 1, ..., 1): broadcasts against x_t


def _choice(value: str, allowed, what: str) -> str:
    valid = get_args(allowed)
    if value not in valid:
        raise ValueError(f"unknown {what} {value!r}; valid values: {', '.join(valid)}")
    return value


def extract(arr: Tensor, t: int | Tensor, x: Tensor) -> Tensor:
    """arr[t] shaped (B, 1, ..., 1) (or (1, ..., 1) for an int t) to broadcast against x, in x's device and dtype."""
    if isinstance(t, Tensor):
        t = t.to(arr.device)
    out = arr[t].to(device=x.device, dtype=x.dtype)
    return out.reshape(-1, *([1] * (x.dim() - 1)))


def _fit(coef: float | Tensor, x: Tensor) -> float | Tensor:
    """A float64 (B,) or () coefficient shaped (B, 1, ..., 1) in x's device and dtype; a Python float as it is."""
    if isinstance(coef, float):
        return coef
    return coef.to(device=x.device, dtype=x.dtype).reshape(-1, *([1] * (x.dim() - 1)))


def _ddim_point(x0: Tensor, eps: Tensor, alpha_bar, sigma, x: Tensor) -> Tensor:
    """√ᾱ x̂₀ + √(1 − ᾱ − σ²) ε: DDIM's point at noise level ᾱ (Song et al. eq. 12, before its σ z term)."""
    return _fit(_sqrt(alpha_bar), x) * x0 + _fit(_sqrt(1 - alpha_bar - sigma**2), x) * eps


def _sqrt(v: float | Tensor) -> float | Tensor:
    """√v of a float or a float64 tensor; rounding can leave 1 − ᾱ − σ² a hair below 0, read as 0."""
    return math.sqrt(max(v, 0.0)) if isinstance(v, float) else v.clamp(min=0).sqrt()


class Diffusion(nn.Module):
    """q(x_t | x_0), its posterior, and the reverse steps p_θ(x_{t-1} | x_t) for one noise schedule.

    >>> d = Diffusion(make_schedule("linear", 1000))
    >>> x_t = d.q_sample(x0, t, noise)
    >>> x_prev, x0_pred = d.ddpm_step(eps_pred, t, x_t, variance="posterior", clip_x0=True)
    >>> x_prev, x0_pred = d.ddim_step(eps_pred, t, x_t, t_prev, eta=0.0)
    """

    def __init__(self, schedule: Schedule):
        super().__init__()
        self.schedule = schedule
        self.num_timesteps = schedule.num_timesteps
        # x̂₀ = (x_t − √(1 − ᾱ_t) ε)/√ᾱ_t needs ᾱ_t > 0: zero terminal SNR (or a schedule so long that ᾱ underflows)
        # gets a floor far below any ᾱ a normal schedule reaches (cosine's ᾱ_T ≈ 2e-9).
        alpha_bars = schedule.alpha_bars.clamp(min=ALPHA_BAR_FLOOR)

        def buffer(name: str, value: Tensor) -> None:
            self.register_buffer(name, value.to(torch.float64), persistent=False)

        # q_sample: x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε
        buffer("sqrt_alpha_bars", schedule.sqrt_alpha_bars)
        buffer("sqrt_one_minus_alpha_bars", schedule.sqrt_one_minus_alpha_bars)
        # q_step: x_t = √α_t x_{t−1} + √β_t ε
        buffer("sqrt_alphas", schedule.alphas.sqrt())
        buffer("sqrt_betas", schedule.betas.sqrt())
        # predict_x0 / predict_eps: x̂₀ = x_t/√ᾱ_t − √(1/ᾱ_t − 1) ε, computed in float64 for float32 inputs
        buffer("sqrt_recip_alpha_bars", alpha_bars.rsqrt())
        buffer("sqrt_recipm1_alpha_bars", (1 / alpha_bars - 1).sqrt())
        # every reverse step: ᾱ at t and at t_prev + 1 (index 0 is ᾱ = 1, for x_0)
        buffer("alpha_bars", alpha_bars)
        buffer("alpha_bars_padded", torch.cat([torch.ones(1, dtype=torch.float64), alpha_bars]))
        # q_posterior: β̃ (μ̃'s coefficients come from ᾱ_t and ᾱ_{t_prev}, for strided steps too)
        buffer("posterior_variance", schedule.posterior_variance)
        # The same tables as Python floats, never moved: a sampler's step at an int t reads its scalars here, so a
        # step costs no gather, cast or kernel launch per coefficient and no device sync.
        self._host = {name: value.tolist() for name, value in self.named_buffers()}

    # ------------------------------------------------------------------------------------------------------------
    # Forward process

    def q_sample(self, x0: Tensor, t: int | Tensor, noise: Tensor | None = None, generator=None) -> Tensor:
        """Sample q(x_t | x_0) in closed form (Ho et al. eq. 4): x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε, ε ~ N(0, I).

        x0, noise: (B, ...); t: int or (B,). Returns x_t, (B, ...).
        """
        self._check_t(t, x0)
        if noise is None:
            noise = self._randn(x0, generator)
        return extract(self.sqrt_alpha_bars, t, x0) * x0 + extract(self.sqrt_one_minus_alpha_bars, t, x0) * noise

    def q_step(self, x_prev: Tensor, t: int | Tensor, noise: Tensor | None = None, generator=None) -> Tensor:
        """One forward step q(x_t | x_{t−1}) (Ho et al. eq. 2):
        x_t = √α_t x_{t−1} + √β_t ε = √(1 − β_t) x_{t−1} + √β_t ε.

        Iterating it for t = 0 … k from x_0 gives x_k with the same law as q_sample(x_0, k).
        x_prev, noise: (B, ...); t: int or (B,). Returns x_t, (B, ...).
        """
        self._check_t(t, x_prev)
        if noise is None:
            noise = self._randn(x_prev, generator)
        return extract(self.sqrt_alphas, t, x_prev) * x_prev + extract(self.sqrt_betas, t, x_prev) * noise

    def q_posterior(self, x0: Tensor, x_t: Tensor, t: int | Tensor, t_prev: int | Tensor | None = None) -> Posterior:
        """The diffusion posterior q(x_{t−1} | x_t, x_0) = N(μ̃_t, β̃_t I) (Ho et al. eqs. 6–7), with
        μ̃_t = √ᾱ_{t−1} β_t / (1 − ᾱ_t) · x_0 + √α_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · x_t and
        β̃_t = (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · β_t.

        t_prev: the step to land on, for strided sampling (default t − 1): α_t then means ᾱ_t/ᾱ_{t_prev}, and
        β_t means 1 − α_t. x0, x_t: (B, ...). Returns Posterior(mean (B, ...), variance (B, 1, ..., 1)).
        """
        ab_t, ab_prev = self._alpha_bar_pair(t, x_t, t - 1 if t_prev is None else t_prev)
        coef_x0, coef_xt, variance = self._posterior(ab_t, ab_prev)
        mean = _fit(coef_x0, x_t) * x0 + _fit(coef_xt, x_t) * x_t
        shape = (-1, *([1] * (x_t.dim() - 1)))
        return Posterior(mean, torch.as_tensor(variance, dtype=x_t.dtype, device=x_t.device).reshape(shape))

    @staticmethod
    def _posterior(ab_t, ab_prev) -> tuple:
        """μ̃'s two coefficients and β̃ of eqs. 6–7, from ᾱ_t and ᾱ_{t_prev} (floats, or float64 tensors): the one
        place they are computed, for q_posterior and ddpm_step alike."""
        alpha = ab_t / ab_prev
        beta = 1 - alpha
        coef_x0 = _sqrt(ab_prev) * beta / (1 - ab_t)
        coef_xt = _sqrt(alpha) * (1 - ab_prev) / (1 - ab_t)
        return coef_x0, coef_xt, (1 - ab_prev) / (1 - ab_t) * beta

    # ------------------------------------------------------------------------------------------------------------
    # Reparametrisations

    def predict_x0(self, x_t: Tensor, t: int | Tensor, eps: Tensor) -> Tensor:
        """x̂₀ = (x_t − √(1 − ᾱ_t) ε) / √ᾱ_t, the forward equation solved for x_0 (Ho et al. eq. 15).

        x_t, eps: (B, ...). Returns x̂₀, (B, ...).
        """
        return self._at("sqrt_recip_alpha_bars", t, x_t) * x_t - self._at("sqrt_recipm1_alpha_bars", t, x_t) * eps

    def predict_eps(self, x_t: Tensor, t: int | Tensor, x0: Tensor) -> Tensor:
        """ε = (x_t − √ᾱ_t x_0) / √(1 − ᾱ_t), the forward equation solved for ε. Shapes as predict_x0."""
        recip = self._at("sqrt_recip_alpha_bars", t, x_t)
        return (recip * x_t - x0) / self._at("sqrt_recipm1_alpha_bars", t, x_t)

    def velocity(self, x0: Tensor, t: int | Tensor, noise: Tensor) -> Tensor:
        """v = √ᾱ_t ε − √(1 − ᾱ_t) x_0 (Salimans & Ho 2022, §4), the v-prediction target. Shapes as q_sample."""
        return self._at("sqrt_alpha_bars", t, x0) * noise - self._at("sqrt_one_minus_alpha_bars", t, x0) * x0

    def eps_from_v(self, x_t: Tensor, t: int | Tensor, v: Tensor) -> Tensor:
        """ε̂ = √ᾱ_t v + √(1 − ᾱ_t) x_t: the ε a predicted v stands for. Shapes as predict_x0."""
        return self._at("sqrt_alpha_bars", t, x_t) * v + self._at("sqrt_one_minus_alpha_bars", t, x_t) * x_t

    # ------------------------------------------------------------------------------------------------------------
    # Reverse steps

    def ddpm_step(
        self,
        eps_pred: Tensor,
        t: int | Tensor,
        x_t: Tensor,
        t_prev: int | Tensor | None = None,
        *,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        clip_x0: bool = False,
        variance: VarianceType = "posterior",
    ) -> Step:
        """One ancestral step of p_θ(x_{t−1} | x_t) = N(μ_θ(x_t, t), σ_t² I) (Ho et al. eq. 11 and Algorithm 2):

            x_{t−1} = 1/√α_t · (x_t − (1 − α_t)/√(1 − ᾱ_t) · ε_θ(x_t, t)) + σ_t z,   z ~ N(0, I).

        With clip_x0 the mean is the posterior mean μ̃_t(x_t, x̂₀) of q_posterior, with x̂₀ clipped to [-1, 1] (the
        two forms agree when nothing is clipped).

        Args (the first four as in ddim_step):
            eps_pred: ε_θ(x_t, t), (B, ...).
            t: current step, int or (B,).
            x_t: current sample, (B, ...).
            t_prev: the step to land on, for strided sampling (default t − 1); β_t then means 1 − ᾱ_t/ᾱ_{t_prev}.
                No noise is added when t_prev = −1 (the step that returns x_0).
            noise: z for the step; drawn from ``generator`` when None.
            clip_x0: clip x̂₀ to [-1, 1] and step through the posterior mean.
            variance: "beta" for σ_t² = β_t (Ho et al.'s), "posterior" for σ_t² = β̃_t.

        Returns:
            Step(x_prev, x0_pred).
        """
        _choice(variance, VarianceType, "variance")
        if t_prev is None:
            t_prev = t - 1
        ab_t, ab_prev = self._alpha_bar_pair(t, x_t, t_prev)
        alpha = ab_t / ab_prev  # α_t, or ᾱ_t/ᾱ_{t_prev} across a stride
        beta = 1 - alpha
        x0_pred = self.predict_x0(x_t, t, eps_pred)
        coef_x0, coef_xt, posterior_variance = self._posterior(ab_t, ab_prev)
        if clip_x0:
            x0_pred = x0_pred.clamp(-1, 1)
            mean = _fit(coef_x0, x_t) * x0_pred + _fit(coef_xt, x_t) * x_t  # μ̃_t(x_t, x̂₀), eq. 7
        else:
            mean = (x_t - _fit(beta / _sqrt(1 - ab_t), x_t) * eps_pred) / _fit(_sqrt(alpha), x_t)  # eq. 11
        var = beta if variance == "beta" else posterior_variance
        if isinstance(t_prev, int) and t_prev == -1:
            return Step(mean, x0_pred)  # no noise on the step that returns x_0
        sigma = _sqrt(var) * (ab_prev < 1)  # the same, per element, when t is a (B,) tensor
        if noise is None:
            noise = self._randn(x_t, generator)
        return Step(mean + _fit(sigma, x_t) * noise, x0_pred)

    def ddim_step(
        self,
        eps_pred: Tensor,
        t: int | Tensor,
        x_t: Tensor,
        t_prev: int | Tensor | None = None,
        *,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        clip_x0: bool = False,
        eta: float = 0.0,
    ) -> Step:
        """One DDIM step (Song et al. 2021, eq. 12) from t to t_prev < t (default t − 1):

            x_{t_prev} = √ᾱ_{t_prev} x̂₀ + √(1 − ᾱ_{t_prev} − σ_t²) · ε_θ + σ_t z,
            σ_t = η √((1 − ᾱ_{t_prev})/(1 − ᾱ_t)) √(1 − ᾱ_t/ᾱ_{t_prev}).

        η = 0 is deterministic; η = 1 has DDPM's posterior variance. With clip_x0, x̂₀ is clipped to [-1, 1] and ε is
        re-derived from the clipped x̂₀ (improved-diffusion's choice; diffusers' ``use_clipped_model_output=True``).
        t_prev = −1 returns x_0 (ᾱ = 1). Arguments and shapes as in ddpm_step. Returns Step(x_prev, x0_pred).
        """
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must lie in [0, 1] (0: deterministic DDIM, 1: DDPM-like), got {eta}")
        if t_prev is None:
            t_prev = t - 1
        ab_t, ab_prev = self._alpha_bar_pair(t, x_t, t_prev)
        x0_pred = self.predict_x0(x_t, t, eps_pred)
        eps = eps_pred
        if clip_x0:
            x0_pred = x0_pred.clamp(-1, 1)
            eps = self.predict_eps(x_t, t, x0_pred)
        sigma = eta * _sqrt((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev))
        x_prev = _ddim_point(x0_pred, eps, ab_prev, sigma, x_t)
        if eta > 0:
            if noise is None:
                noise = self._randn(x_t, generator)
            x_prev = x_prev + _fit(sigma, x_t) * noise
        return Step(x_prev, x0_pred)

    def ddim_invert_step(self, eps_pred: Tensor, t_prev: int, x_prev: Tensor, t: int) -> Step:
        """DDIM inversion (Song et al. 2021, eq. 12 with η = 0 run upward, the ODE of their eq. 13): from x_{t_prev}
        to x_t, t > t_prev,

            x̂₀ = (x_{t_prev} − √(1 − ᾱ_{t_prev}) ε_θ) / √ᾱ_{t_prev},   x_t = √ᾱ_t x̂₀ + √(1 − ᾱ_t) ε_θ,

        with ε_θ = ε_θ(x_{t_prev}, t) evaluated at the target step (the usual approximation: x_t is not known yet).
        t_prev = −1 starts from x_0 itself. Nothing is clipped, so that ddim_step can walk back. Returns
        Step(x_t, x̂₀).
        """
        ab_t, ab_prev = self._alpha_bar_pair(t, x_prev, t_prev)
        x0_pred = (x_prev - _fit(_sqrt(1 - ab_prev), x_prev) * eps_pred) / _fit(_sqrt(ab_prev), x_prev)
        return Step(_ddim_point(x0_pred, eps_pred, ab_t, 0.0, x_prev), x0_pred)

    def q_sample_from(
        self, x_s: Tensor, s: int, t: int, noise: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Jump forward from step s to step t > s: q(x_t | x_s) = N(√(ᾱ_t/ᾱ_s) x_s, (1 − ᾱ_t/ᾱ_s) I), eq. 2 iterated
        from s (Ho et al. eq. 4 is the case s = −1, x_s = x_0). Used by RePaint's resampling jumps."""
        ab_t, ab_s = self._alpha_bar_pair(t, x_s, s)
        if noise is None:
            noise = self._randn(x_s, generator)
        return _fit(_sqrt(ab_t / ab_s), x_s) * x_s + _fit(_sqrt(1 - ab_t / ab_s), x_s) * noise

    def timesteps(self, num_steps: int, spacing: Spacing = "leading", start: int | None = None) -> Tensor:
        """The descending timesteps of a sampler that takes num_steps of the T steps, as a LongTensor (num_steps,).
        start: a chain that begins at the paper's t = start instead of T (SDEdit's t_start, 1 … T): the steps are
        then chosen from the first `start` indices, as if the schedule had T = start.

        "leading": 0, k, 2k, … with k = T // num_steps (DDIM's paper); "trailing": T−1, T−1−T/n, … (always starts
        at the last step, Lin et al. 2024); "linspace": num_steps points evenly from 0 to T−1, rounded. Pair each
        with the next one, and the last with −1 (x_0).
        """
        _choice(spacing, Spacing, "timestep spacing")
        T = self.num_timesteps if start is None else start
        if isinstance(T, bool) or not isinstance(T, int) or not 1 <= T <= self.num_timesteps:
            raise ValueError(f"start must be an integer from 1 to T = {self.num_timesteps}, got {start!r}")
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or not 1 <= num_steps <= T:
            raise ValueError(f"num_steps must be an integer from 1 to T = {T}, got {num_steps!r}")
        if spacing == "leading":
            ts = torch.arange(num_steps, dtype=torch.float64) * (T // num_steps)
        elif spacing == "trailing":
            ts = torch.round(torch.arange(T, 0, -T / num_steps, dtype=torch.float64)) - 1
        else:
            ts = torch.round(torch.linspace(0, T - 1, num_steps, dtype=torch.float64))
        ts = ts.long()
        return ts.flip(0) if spacing != "trailing" else ts

    # ------------------------------------------------------------------------------------------------------------

    def _alpha_bar_pair(
        self, t: int | Tensor, x: Tensor, t_prev: int | Tensor
    ) -> tuple[float, float] | tuple[Tensor, Tensor]:
        """ᾱ_t and ᾱ_{t_prev} (ᾱ = 1 for t_prev = −1): Python floats when both are ints, else float64 (B,) or ()
        on the buffers' device."""
        self._check_t(t, x)
        if isinstance(t_prev, int) and not -1 <= t_prev < (t if isinstance(t, int) else self.num_timesteps):
            raise ValueError(f"t_prev must lie in [-1, t), got t_prev={t_prev} for t={t}")
        if isinstance(t, int) and isinstance(t_prev, int):
            return self._host["alpha_bars"][t], self._host["alpha_bars_padded"][t_prev + 1]
        device = self.alpha_bars.device
        t_idx = t.to(device) if isinstance(t, Tensor) else t
        prev_idx = (t_prev.to(device) if isinstance(t_prev, Tensor) else t_prev) + 1
        return self.alpha_bars[t_idx], self.alpha_bars_padded[prev_idx]

    def _at(self, name: str, t: int | Tensor, x: Tensor) -> float | Tensor:
        """The table `name` at t, to broadcast against x: a Python float for an int t, else extract(...)."""
        return self._host[name][t] if isinstance(t, int) else extract(getattr(self, name), t, x)

    def _check_t(self, t: int | Tensor, x: Tensor) -> None:
        if isinstance(t, Tensor):
            if t.dim() > 1 or (t.dim() == 1 and t.shape[0] not in (1, x.shape[0])):
                raise ValueError(f"t must be an int or a (B,) tensor with B = {x.shape[0]}, got shape {tuple(t.shape)}")
            if t.dtype.is_floating_point:
                raise ValueError("t must hold integer timestep indices, got a floating-point tensor")
        elif isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < self.num_timesteps:
            raise ValueError(f"t must be an integer index in [0, {self.num_timesteps - 1}], got {t!r}")

    @staticmethod
    def _randn(x: Tensor, generator: torch.Generator | None) -> Tensor:
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
