"""The exact log-likelihood of a 2D model's probability-flow ODE (Song et al. 2021, "Score-based generative modeling
through SDEs"), beside the variational bound of ddpm_core/likelihood.py, which imports from here the two checks both
estimators share (check_x0, math_device). Units as there: nats, and bits per dimension of the sample.
"""

from __future__ import annotations

import bisect
import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ddpm_core.diffusion import Diffusion
from ddpm_core.edit_inputs import sample_shape_of
from ddpm_core.objectives import prediction_of
from ddpm_core.sample import CPU_CHUNK
from ddpm_core.schedules import Schedule

GPU_CHUNK = 4096  # samples per forward pass on a GPU (CPU_CHUNK on the CPU)
ODE_STEPS = 100  # RK4 steps of the probability-flow ODE, uniform in ln σ̄ from σ̄_1 to σ̄_T
DATA_END_STEPS = 2  # RK4 steps from σ̄ = 0 to σ̄_1, where the score is held at σ̄_1's
LN2 = math.log(2.0)


def check_x0(model: nn.Module, x0) -> Tensor:
    """x0 as a float64 (N, *sample shape) batch that fits the model (images in [-1, 1]); ValueError saying why not."""
    if not isinstance(x0, Tensor) or not x0.dtype.is_floating_point:
        raise ValueError("x0 must be a floating-point tensor (N, ...)")
    shape = sample_shape_of(model)
    if x0.dim() != len(shape) + 1 or tuple(x0.shape[1:]) != shape:
        raise ValueError(f"x0 must be a batch (N, {', '.join(map(str, shape))}) for this model, got {tuple(x0.shape)}")
    if len(x0) == 0:
        raise ValueError("x0 holds no samples (N = 0)")
    if not torch.isfinite(x0).all():
        raise ValueError("x0 holds NaN or infinite values")
    if x0.dim() > 2 and x0.abs().max() > 1:
        raise ValueError(f"image data must lie in [-1, 1], got values from {x0.min():.4g} to {x0.max():.4g}")
    return x0.double()


def math_device(model: nn.Module) -> torch.device:
    """Where the float64 arithmetic runs: the network's device, or the CPU beside an Apple GPU (no float64)."""
    device = next(model.parameters()).device
    return torch.device("cpu") if device.type == "mps" else device


# ----------------------------------------------------------------------------------------------------------------
# The probability-flow ODE (2D models)


def log_alpha_bar_at(schedule: Schedule, index: Tensor | float) -> Tensor:
    """ln ᾱ at a fractional step index u ∈ [0, T−1], linear in u between the steps' ln ᾱ_t: the continuous-time
    schedule the ODE runs on (u = 0 is ᾱ_1 = 1 − β_1). float64, u's shape."""
    u = torch.as_tensor(index, dtype=torch.float64).clamp(0, schedule.T - 1)
    table = schedule.log_alpha_bars.to(u.device)
    i = u.floor().long().clamp(max=schedule.T - 2)
    return torch.lerp(table[i], table[i + 1], u - i)


def _continuous_index(descending: list[float], log_alpha_bar: float) -> float:
    """The u at which log_alpha_bar_at gives log_alpha_bar; descending: the schedule's ln ᾱ_t as a list."""
    i = bisect.bisect_left(descending, -log_alpha_bar, key=lambda v: -v) - 1
    i = min(max(i, 0), len(descending) - 2)
    a, b = descending[i], descending[i + 1]
    return i + min(max((a - log_alpha_bar) / (a - b), 0.0), 1.0)


def _eps_and_trace(model: nn.Module, x: Tensor, u: float, alpha_bar: float, y: Tensor | None):
    """ε_θ(x, u) (B, D) and tr ∂ε_θ/∂x (B,), float64, at a fractional index u: the exact trace, one backward pass per
    coordinate. x0- and v-predictions are turned into ε as Diffusion.predict_eps and eps_from_v do, at ᾱ(u)."""
    p = next(model.parameters())
    with torch.enable_grad():
        x_in = x.to(p.device, p.dtype).requires_grad_(True)
        t = torch.full((len(x),), u, dtype=torch.float64, device=p.device)
        out = model(x_in, t) if y is None else model(x_in, t, y=y.to(p.device))
        prediction, a, s = prediction_of(model), math.sqrt(alpha_bar), math.sqrt(1 - alpha_bar)
        eps = {"eps": out, "x0": (x_in - a * out) / s, "v": a * out + s * x_in}[prediction]
        d = x.shape[1]
        trace = sum(torch.autograd.grad(eps[:, j].sum(), x_in, retain_graph=j < d - 1)[0][:, j] for j in range(d))
    return eps.detach().to(x), trace.detach().to(x)


def _rk4(field, x: Tensor, s0: float, s1: float, steps: int) -> tuple[Tensor, Tensor]:
    """Integrate dx/ds = f, dℓ/ds = g (field(x, s) → (f, g)) from s0 to s1 in `steps` RK4 steps; returns x, ℓ."""
    h, ell = (s1 - s0) / steps, torch.zeros(len(x), dtype=x.dtype, device=x.device)
    for k in range(steps):
        s = s0 + k * h
        f1, g1 = field(x, s)
        f2, g2 = field(x + h / 2 * f1, s + h / 2)
        f3, g3 = field(x + h / 2 * f2, s + h / 2)
        f4, g4 = field(x + h * f3, s + h)
        x, ell = x + h / 6 * (f1 + 2 * f2 + 2 * f3 + f4), ell + h / 6 * (g1 + 2 * g2 + 2 * g3 + g4)
    return x, ell


@dataclass(frozen=True)
class OdeLikelihood:
    log_likelihood: Tensor  # (N,) float64: ln p(x_0) in nats, summed over the coordinates
    bits_per_dim: Tensor  # (N,) float64: −ln p(x_0) / (D ln 2)
    mean_bits_per_dim: float
    stderr: float  # std of bits_per_dim / √N (NaN for N = 1)
    steps: int  # RK4 steps from σ̄_1 to σ̄_T (plus DATA_END_STEPS from σ̄ = 0)
    evaluations: int  # network evaluations per sample (each with D backward passes)
    wall_time: float


def ode_log_likelihood(
    model: nn.Module, diffusion: Diffusion, x0: Tensor, *, steps: int = ODE_STEPS, y: Tensor | None = None
) -> OdeLikelihood:
    """The exact ln p(x_0) of a 2D model's probability-flow ODE (Song et al. 2021, "Score-based generative modeling
    through SDEs", §4.3 and App. D.2), by the instantaneous change of variables, with the exact Jacobian trace.

    In x̄ = x/√ᾱ and σ̄ = √((1 − ᾱ)/ᾱ) the ODE is DDIM's dx̄/dσ̄ = ε_θ(x, t) (Song et al. 2021, DDIM, eq. 14), and
    d ln p(x̄)/dσ̄ = −tr ∂ε_θ/∂x̄ = −√ᾱ tr ∂ε_θ/∂x. From x̄ = x_0 at σ̄ = 0 it is integrated to σ̄_T with fixed-step RK4
    in ln σ̄ (`steps` steps from σ̄_1), and ln p(x_0) = ln N(x_T; 0, I) + (D/2) ln ᾱ_T + ∫ √ᾱ tr ∂ε_θ/∂x dσ̄, the middle
    term the Jacobian of x_T = √ᾱ_T x̄_T (at the data end σ̄ = 0 and x̄ = x_0). The schedule is made continuous by
    interpolating ln ᾱ linearly in the fractional index u (log_alpha_bar_at), which the network gets as its t.

    The data end: the network knows noise levels down to σ̄_1 = √(β_1/(1 − β_1)) only (u = 0). Between σ̄ = 0 and σ̄_1
    the score is held at its value at σ̄_1, i.e. ε(x̄, σ̄) = (σ̄/σ̄_1) ε_θ(√ᾱ_1 x̄, u = 0), integrated in σ̄² in
    DATA_END_STEPS RK4 steps: the model claims no structure finer than σ̄_1 (≈ 0.01 for β_1 = 1e-4).

    x0: (N, D) points; y: (N,) labels of a conditional model. Returns OdeLikelihood (nats and bits/dim per sample).
    """
    start = time.perf_counter()
    if len(shape := sample_shape_of(model)) != 1:
        raise ValueError(f"the ODE likelihood is for 2D point models, not images ({'×'.join(map(str, shape))})")
    x0 = check_x0(model, x0)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps (RK4 steps of the ODE) must be an integer ≥ 1, got {steps!r}")
    table = diffusion.schedule.log_alpha_bars.tolist()
    if not math.isfinite(table[-1]) or diffusion.schedule.alpha_bars[-1] <= 0:
        raise ValueError("the ODE likelihood needs ᾱ_T > 0: a zero-terminal-SNR schedule never reaches N(0, I)")
    ab_1, d = math.exp(table[0]), x0.shape[1]
    sigma_1 = math.sqrt(math.expm1(-table[0]))

    def data_end(x_bar: Tensor, tau: float):  # dx̄/dσ̄² with the score frozen at σ̄_1
        eps, trace = _eps_and_trace(model, math.sqrt(ab_1) * x_bar, 0.0, ab_1, y_part)
        return eps / (2 * sigma_1), math.sqrt(ab_1) * trace / (2 * sigma_1)

    def flow(x_bar: Tensor, rho: float):  # dx̄/d ln σ̄ = σ̄ ε_θ
        sigma = math.exp(rho)
        log_ab = -math.log1p(sigma**2)
        ab = math.exp(log_ab)
        eps, trace = _eps_and_trace(model, math.sqrt(ab) * x_bar, _continuous_index(table, log_ab), ab, y_part)
        return sigma * eps, sigma * math.sqrt(ab) * trace

    rho_T = 0.5 * math.log(math.expm1(-table[-1]))
    device = math_device(model)
    out, chunk = [], CPU_CHUNK if device.type == "cpu" else GPU_CHUNK
    for lo in range(0, len(x0), chunk):
        x_bar, y_part = x0[lo : lo + chunk].to(device), None if y is None else y[lo : lo + chunk]
        x_bar, ell_a = _rk4(data_end, x_bar, 0.0, sigma_1**2, DATA_END_STEPS)
        x_bar, ell_b = _rk4(flow, x_bar, math.log(sigma_1), rho_T, steps)
        x_T = math.exp(0.5 * table[-1]) * x_bar
        prior = -0.5 * (x_T**2).sum(1) - d / 2 * math.log(2 * math.pi) + d / 2 * table[-1]
        out.append((prior + ell_a + ell_b).cpu())
    log_p = torch.cat(out)
    bits = -log_p / (d * LN2)
    stderr = float(bits.std() / math.sqrt(len(bits))) if len(bits) > 1 else math.nan
    nfe = 4 * (steps + DATA_END_STEPS)
    return OdeLikelihood(log_p, bits, float(bits.mean()), stderr, steps, nfe, time.perf_counter() - start)
