"""How many bits per dimension a trained model needs for the data: the variational bound of Ho et al. 2020, term by
term, and for 2D models the exact log-likelihood of the probability-flow ODE (Song et al. 2021).

    L = L_T + Σ_{t>1} L_{t−1} + L_0                                         (Ho et al. eq. 5)
    L_T     = KL(q(x_T | x_0) ‖ N(0, I))                                     prior_term
    L_{t−1} = KL(q(x_{t−1} | x_t, x_0) ‖ p_θ(x_{t−1} | x_t)),  t = 2 … T     kl_term (eq. 7 against eq. 11)
    L_0     = −log p_θ(x_0 | x_1)                                            decoder_term (§3.3, eq. 13)

Units: each term is per sample, in bits per dimension (nats averaged over the sample's C·H·W or 2 coordinates, over
ln 2), so the terms add up to the bound. Images have a discrete decoder: L_0 is minus the log of a probability mass
and the bound bounds −log₂ P(x_0) / D of the quantised data — Ho et al.'s convention (CIFAR-10: ≤ 3.75 bits/dim),
with no dequantisation noise and no offset; a uniform guess over L levels costs log₂ L (8 for 8-bit images, 4.09
for the 17-level digits). 2D points are continuous, so their "bits/dim" are a differential entropy: they can be
negative, and only differences between models (or against the ODE) mean something.

Index convention (as in schedules.py): index i = 0 … T−1 is the paper's t = i + 1. Per-t arrays hold L_i at index i:
the decoder L_0 at 0, L_{t−1} at t − 1.

CLI: python -m ddpm_core.likelihood --checkpoint assets/checkpoints/moons.safetensors --n 500 --json out.json
"""

from __future__ import annotations

import itertools
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import get_args

import torch
from torch import Tensor, nn

from ddpm_core.data import IMAGE_DATASETS, POINT_DATASETS
from ddpm_core.diffusion import Diffusion, VarianceType, extract
from ddpm_core.likelihood_ode import (  # the ODE's API, re-exported: one import for both estimators
    GPU_CHUNK,
    LN2,
    ODE_STEPS,
    OdeLikelihood,
    check_x0,
    log_alpha_bar_at,
    math_device,
    ode_log_likelihood,
)
from ddpm_core.objectives import output_to_eps, prediction_of
from ddpm_core.sample import CPU_CHUNK
from ddpm_core.schedules import Schedule

__all__ = ["Bound", "LossWeights", "OdeLikelihood", "bound", "data_levels", "decoder_term", "geometric_strata",
           "kl_term", "log_alpha_bar_at", "loss_weights", "model_variances", "ode_log_likelihood",
           "prior_term"]  # fmt: skip

FULL_SUM_MAX = 2_000_000  # bound() sums every t when N·T sample-steps are at most this (all 1797 digits × T = 1000)
DEFAULT_STRATA = 50  # strata of t = 2 … T in the stratified estimate: K + 1 network evaluations per sample

Progress = Callable[[int, int], None]


def data_levels(dataset: str) -> int | None:
    """The number of intensity levels of a data set's pixels, for the discretised decoder: 17 for the 8×8 digits
    (values 0 … 16), 256 for every other image set (8 bits), None for the 2D toys (continuous points)."""
    if dataset in POINT_DATASETS:
        return None
    if dataset not in IMAGE_DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; valid names: {', '.join(IMAGE_DATASETS + POINT_DATASETS)}")
    return 17 if dataset == "digits" else 256


def model_variances(schedule: Schedule, variance: VarianceType) -> Tensor:
    """σ_t² of p_θ(x_{t−1} | x_t) = N(μ_θ, σ_t² I), (T,) float64: β_t ("beta") or β̃_t ("posterior"). At t = 1 the
    posterior's β̃_1 is 0, which would leave the decoder no width: "posterior" takes β̃_2 there instead (the clipped
    log-variance of improved-diffusion, Nichol & Dhariwal 2021)."""
    if variance not in get_args(VarianceType):
        raise ValueError(f"unknown variance {variance!r}; valid values: {', '.join(get_args(VarianceType))}")
    if variance == "beta":
        return schedule.betas.clone()
    return torch.cat([schedule.posterior_variance[1:2], schedule.posterior_variance[1:]])


# ----------------------------------------------------------------------------------------------------------------
# The decoder's densities (per element, nats)


def quantise(x0: Tensor, levels: int) -> Tensor:
    """x0 in [-1, 1] moved to the nearest of `levels` evenly spaced values (−1 and 1 included)."""
    return torch.round((x0 + 1) / 2 * (levels - 1)) / (levels - 1) * 2 - 1


def discretised_gaussian_log_likelihood(x0: Tensor, mean: Tensor, variance: float, levels: int) -> Tensor:
    """ln P(x_0) per element under Ho et al.'s discretised decoder (§3.3, eq. 13): the mass of N(μ, σ²) on x_0's bin
    [x_0 − h, x_0 + h], h = 1/(levels − 1) (half the spacing of the levels), the outermost bins reaching to ±∞ so that
    the masses of all levels add up to 1. x0 (read as its nearest level) and mean broadcast; float64 advised.

    The mass Φ(b) − Φ(a) is taken in log space (log Φ from torch.special.log_ndtr, in the tail nearer the bin), so
    it needs none of the usual clamps at 1e-12: a bin far out in a tail keeps its true, tiny mass.
    """
    h = 1.0 / (levels - 1)
    x = quantise(x0, levels)
    scale = 1.0 / math.sqrt(variance)
    upper = torch.where(x > 1 - h, math.inf, (x - mean + h) * scale)
    lower = torch.where(x < -1 + h, -math.inf, (x - mean - h) * scale)
    return _log_normal_mass(lower, upper)


def _log_normal_mass(a: Tensor, b: Tensor) -> Tensor:
    """ln(Φ(b) − Φ(a)) for a < b: a bin above 0 is read as Φ(−a) − Φ(−b), so that both ends lie in the lower tail
    and ln Φ(b) + ln(1 − e^{ln Φ(a) − ln Φ(b)}) suffers no cancellation."""
    flip = a > 0
    a, b = torch.where(flip, -b, a), torch.where(flip, -a, b)
    log_b = torch.special.log_ndtr(b)
    return log_b + torch.log(-torch.expm1(torch.special.log_ndtr(a) - log_b))


def gaussian_log_likelihood(x0: Tensor, mean: Tensor, variance: float) -> Tensor:
    """ln N(x_0; μ, σ²) per element: the continuous decoder of 2D points (a density, so it can exceed 0)."""
    return -0.5 * (math.log(2 * math.pi * variance) + (x0 - mean) ** 2 / variance)


# ----------------------------------------------------------------------------------------------------------------
# The terms of eq. 5


def prior_term(schedule: Schedule, x0: Tensor) -> Tensor:
    """L_T = KL(q(x_T | x_0) ‖ N(0, I)) per sample, bits/dim, (N,) float64 for x0 (N, ...). q(x_T | x_0) =
    N(√ᾱ_T x_0, (1 − ᾱ_T) I), so per coordinate KL = ½ (ᾱ_T x_0² − ᾱ_T − ln(1 − ᾱ_T)); the batch mean is
    Schedule.prior_kl_bits_per_dim(x0)."""
    ab = float(schedule.alpha_bars[-1])
    nats = 0.5 * (ab * x0.double() ** 2 - ab - math.log1p(-ab))
    return nats.flatten(1).mean(1) / LN2


def _eps_theta(model: nn.Module, diffusion: Diffusion, x_t: Tensor, index: Tensor, y: Tensor | None) -> Tensor:
    """ε_θ(x_t, t[, y]) as float64 (B, ...), from whatever the network predicts (ε, x_0 or v; objectives.
    output_to_eps). x_t: float64 (B, ...); index: (B,) long. The network runs in its own device and dtype."""
    p = next(model.parameters())
    x, t = x_t.to(p.device, p.dtype), index.to(p.device)
    output = model(x, t) if y is None else model(x, t, y=y.to(p.device))
    return output_to_eps(diffusion, prediction_of(model), output.to(x_t.device, torch.float64), x_t, index)


def _mu_theta(diffusion: Diffusion, x_t: Tensor, index: Tensor, eps: Tensor) -> Tensor:
    """μ_θ(x_t, t) = 1/√α_t (x_t − β_t/√(1 − ᾱ_t) ε_θ) (Ho et al. eq. 11), computed as the posterior mean μ̃_t at
    x̂₀ (eq. 7 at eq. 15's x̂₀: the same number). At t = 1 it is x̂₀ itself. Nothing is clipped: this is p_θ."""
    return diffusion.q_posterior(diffusion.predict_x0(x_t, index, eps), x_t, index).mean


def _kl_nats(model, diffusion, x0, index, noise, y, sigma2) -> Tensor:
    """L_{t−1} in nats per coordinate, (B,): KL of two isotropic Gaussians, N(μ̃, β̃) against N(μ_θ, σ²)."""
    x_t = diffusion.q_sample(x0, index, noise)
    posterior = diffusion.q_posterior(x0, x_t, index)  # μ̃_t(x_t, x_0), β̃_t: eq. 7
    mu = _mu_theta(diffusion, x_t, index, _eps_theta(model, diffusion, x_t, index, y))
    var, beta_tilde = extract(sigma2, index, x_t), posterior.variance
    kl = 0.5 * (torch.log(var / beta_tilde) + beta_tilde / var - 1 + (posterior.mean - mu) ** 2 / var)
    return kl.flatten(1).mean(1)


def _decoder_nats(model, diffusion, x0, noise, y, sigma2, levels) -> Tensor:
    """L_0 in nats per coordinate, (B,): −ln p_θ(x_0 | x_1), discretised (levels) or continuous (None)."""
    index = torch.zeros(len(x0), dtype=torch.long, device=x0.device)
    x_1 = diffusion.q_sample(x0, index, noise)
    mean = _mu_theta(diffusion, x_1, index, _eps_theta(model, diffusion, x_1, index, y))
    var = float(sigma2[0])
    if levels is None:
        log_p = gaussian_log_likelihood(x0, mean, var)
    else:
        log_p = discretised_gaussian_log_likelihood(x0, mean, var, levels)
    return -log_p.flatten(1).mean(1)


def _check_levels(x0: Tensor, levels) -> None:
    if x0.dim() == 2 and levels is not None:
        raise ValueError(f"2D points are continuous: levels must be None, got {levels!r}")
    if x0.dim() > 2 and (isinstance(levels, bool) or not isinstance(levels, int) or levels < 2):
        raise ValueError(f"images need their number of levels ≥ 2 (data_levels(dataset)), got {levels!r}")


def _noise(x0: Tensor, generator: torch.Generator | None) -> Tensor:
    """ε ~ N(0, I) like x0, float64, drawn on the generator's device (the CPU when None) and moved to x0's."""
    device = generator.device if generator is not None else "cpu"
    return torch.randn(x0.shape, generator=generator, device=device, dtype=torch.float64).to(x0.device)


def _index(diffusion: Diffusion, index, n: int, device) -> Tensor:
    T = diffusion.num_timesteps
    index = torch.as_tensor(index, device=device)
    if index.dtype.is_floating_point or index.dim() > 1 or index.numel() not in (1, n):
        raise ValueError(f"index must be an int or a (N,) integer tensor, got {index!r}")
    if (index < 1).any() or (index > T - 1).any():
        raise ValueError(f"kl_term's index must lie in 1 … T−1 = {T - 1} (the paper's t = 2 … T)")
    return index.long().expand(n)


@torch.no_grad()
def kl_term(
    model: nn.Module,
    diffusion: Diffusion,
    x0: Tensor,
    index: int | Tensor,
    *,
    variance: VarianceType = "posterior",
    y: Tensor | None = None,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """L_{t−1} = KL(q(x_{t−1} | x_t, x_0) ‖ p_θ(x_{t−1} | x_t)) (Ho et al. eq. 5) at x_t ~ q(x_t | x_0) (eq. 4), per
    sample in bits/dim, (N,) float64. In closed form for two isotropic Gaussians, per coordinate

        ½ (ln(σ_t²/β̃_t) + β̃_t/σ_t² − 1) + ‖μ̃_t(x_t, x_0) − μ_θ(x_t, t)‖² / (2σ_t²),

    whose second part is λ_t (ε − ε_θ)² (eq. 12; loss_weights).

    Args:
        x0: (N, ...) clean data; index: the step index i = t − 1 ∈ 1 … T−1 (the paper's t = 2 … T), int or (N,).
        variance: σ_t² = β_t ("beta") or β̃_t ("posterior").
        y: (N,) class labels of a class-conditional model (no guidance); None: unconditional.
        noise: the ε of x_t, like x0; drawn from generator when None.
    """
    sigma2 = model_variances(diffusion.schedule, variance)
    x0 = check_x0(model, x0).to(math_device(model))
    noise = _noise(x0, generator) if noise is None else noise.to(x0)
    index = _index(diffusion, index, len(x0), x0.device)
    return _kl_nats(model, diffusion, x0, index, noise, y, sigma2.to(x0.device)) / LN2


@torch.no_grad()
def decoder_term(
    model: nn.Module,
    diffusion: Diffusion,
    x0: Tensor,
    *,
    variance: VarianceType = "posterior",
    levels: int | None = None,
    y: Tensor | None = None,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """L_0 = −log p_θ(x_0 | x_1) per sample in bits/dim, (N,) float64, with x_1 ~ q(x_1 | x_0) and the decoder
    N(μ_θ(x_1, 1), σ_1² I): for images the discretised Gaussian of Ho et al. §3.3 (eq. 13) over `levels` bins in
    [-1, 1] (data_levels), a probability mass; for 2D points (levels None) the density −log N(x_0; μ_θ, σ_1² I),
    which can be negative. σ_1² is β_1 ("beta"), or β̃_2 for "posterior" (β̃_1 = 0; see model_variances).
    Arguments as kl_term."""
    sigma2 = model_variances(diffusion.schedule, variance)
    x0 = check_x0(model, x0).to(math_device(model))
    _check_levels(x0, levels)
    noise = _noise(x0, generator) if noise is None else noise.to(x0)
    return _decoder_nats(model, diffusion, x0, noise, y, sigma2, levels) / LN2


# ----------------------------------------------------------------------------------------------------------------
# The whole bound


@dataclass(frozen=True)
class Bound:
    """The bound of eq. 5 for a batch x0, bits/dim. In the full sum per_t[i] is the batch mean of L_i, so L_T plus
    per_t's sum is the total; in the stratified estimate per_t[i] is the mean of L_i over the samples that drew it
    (draws[i] of them; NaN where none did), a picture of the terms, not a part of the total."""

    bits_per_dim: float  # mean over samples of the per-sample totals L_T + Σ L_{t−1} + L_0
    stderr: float  # std of the per-sample totals / √N (NaN for N = 1): covers the noise and the t draws
    prior: float  # mean L_T
    kl: float  # mean of Σ_{t=2…T} L_{t−1} (summed, or its stratified estimate)
    decoder: float  # mean L_0
    per_t: Tensor  # (T,) float64: index 0 = L_0, index t − 1 = L_{t−1}
    draws: Tensor  # (T,) long: how many samples each per_t entry averages
    per_sample: Tensor  # (N,) float64: each sample's total
    full: bool  # every t summed (else one t per stratum and sample)
    strata: int | None  # K, in the stratified estimate
    variance: str
    levels: int | None  # the decoder's levels (None: continuous)
    evaluations: int  # network evaluations, in samples
    wall_time: float  # seconds


def geometric_strata(T: int, k: int) -> list[tuple[int, int]]:
    """K strata [lo, hi) partitioning the indices 1 … T−1 (t = 2 … T), edges ≈ T^(i/K): single t where L_{t−1} is
    largest, ever wider towards T. Unbiased like any partition; on the bundled digits its standard error is 0.016
    bits/dim against equal strata's 0.12 (the full sum's: 0.015), at the same K + 1 evaluations (bench/RESULTS.md)."""
    edges = [1]
    for i in range(1, k):
        edges.append(min(max(round(T ** (i / k)), edges[-1] + 1), T - (k - i)))  # rising; room for the rest
    return list(itertools.pairwise([*edges, T]))


def _steps(T: int, n: int, strata: list | None, generator: torch.Generator):
    """(index (n,), weight) per network evaluation of a chunk of n samples: L_0, then every t (strata None) or one
    t per stratum with the stratum's size as weight (its sum's unbiased estimate)."""
    yield torch.zeros(n, dtype=torch.long), 1.0
    if strata is None:
        yield from ((torch.full((n,), i, dtype=torch.long), 1.0) for i in range(1, T))
    else:
        yield from ((torch.randint(lo, hi, (n,), generator=generator), float(hi - lo)) for lo, hi in strata)


@torch.no_grad()
def bound(
    model: nn.Module,
    diffusion: Diffusion,
    x0: Tensor,
    *,
    variance: VarianceType = "posterior",
    y: Tensor | None = None,
    levels: int | None = None,
    full: bool | None = None,
    strata: int = DEFAULT_STRATA,
    seed: int = 0,
    progress: Progress | None = None,
) -> Bound:
    """The variational bound L = L_T + Σ_{t>1} L_{t−1} + L_0 (Ho et al. eq. 5) of each sample of x0 (N, ...), in
    bits/dim, with its mean and standard error over the samples.

    full: sum every t = 1 … T (N·T network evaluations); None chooses it when N·T ≤ FULL_SUM_MAX. Otherwise the
    stratified estimate: t = 2 … T split into `strata` strata (geometric_strata: narrow at small t), one t drawn
    uniformly per stratum and sample, its L_{t−1} weighted by the stratum's size — unbiased, at strata + 1
    evaluations per sample; the standard error then covers the t draws too. levels: the decoder's
    (data_levels(dataset); required for images, None for 2D points). y: (N,) labels of a class-conditional model
    (no guidance). seed: the noise and the t draws. progress(done, total) is called after each batch of network
    evaluations, in samples.
    """
    start = time.perf_counter()
    T, sigma2 = diffusion.num_timesteps, model_variances(diffusion.schedule, variance)
    x0 = check_x0(model, x0)
    _check_levels(x0, levels)
    n = len(x0)
    full = n * T <= FULL_SUM_MAX if full is None else bool(full)
    if not full and (isinstance(strata, bool) or not isinstance(strata, int) or not 1 <= strata <= T - 1):
        raise ValueError(f"strata must be an integer from 1 to T − 1 = {T - 1}, got {strata!r}")
    if y is not None and len(y) != n:
        raise ValueError(f"y must hold one label per sample ({n}), got {len(y)}")
    device = math_device(model)
    x0, sigma2 = x0.to(device), sigma2.to(device)
    generator = torch.Generator().manual_seed(seed)
    sums, draws = torch.zeros(T, dtype=torch.float64), torch.zeros(T, dtype=torch.long)
    kl, decoder = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    chunk = CPU_CHUNK if device.type == "cpu" else GPU_CHUNK
    total, done, strata_edges = n * (T if full else strata + 1), 0, None if full else geometric_strata(T, strata)
    for lo in range(0, n, chunk):
        part = slice(lo, lo + chunk)
        xb, yb = x0[part], None if y is None else y[part]
        for index, weight in _steps(T, len(xb), strata_edges, generator):
            noise = _noise(xb, generator)
            if index[0] == 0:
                bits = _decoder_nats(model, diffusion, xb, noise, yb, sigma2, levels).cpu() / LN2
                decoder[part] = bits
            else:
                bits = _kl_nats(model, diffusion, xb, index.to(device), noise, yb, sigma2).cpu() / LN2
                kl[part] += weight * bits
            sums.index_add_(0, index, bits)
            draws.index_add_(0, index, torch.ones_like(index))
            done += len(xb)
            if progress is not None:
                progress(done, total)
    prior = prior_term(diffusion.schedule, x0).cpu()
    per_sample = prior + kl + decoder
    stderr = float(per_sample.std() / math.sqrt(n)) if n > 1 else math.nan
    return Bound(
        float(per_sample.mean()), stderr, float(prior.mean()), float(kl.mean()), float(decoder.mean()),
        sums / draws, draws, per_sample, full, None if full else strata, variance, levels, total,
        time.perf_counter() - start,
    )  # fmt: skip


@dataclass(frozen=True)
class LossWeights:
    t: Tensor  # (T − 1,) long: the paper's t = 2 … T
    bound: Tensor  # (T − 1,) float64: λ_t, the bound's weight on the per-coordinate (ε − ε_θ)², in nats
    simple: Tensor  # (T − 1,) float64: L_simple's weight, 1 at every t (Ho et al. eq. 14)


def loss_weights(schedule: Schedule, variance: VarianceType = "posterior") -> LossWeights:
    """λ_t = β_t² / (2 σ_t² α_t (1 − ᾱ_t)) for t = 2 … T: the weight L_{t−1} puts on (ε − ε_θ)² (Ho et al. eq. 12),
    per coordinate, in nats (L_{t−1} = λ_t · mean((ε − ε_θ)²) + a constant of the variances), next to L_simple's
    implicit weight 1 (eq. 14). A zero-terminal-SNR schedule (α_T = 0) has λ_T = ∞."""
    sigma2 = model_variances(schedule, variance)[1:]
    lam = schedule.betas[1:] ** 2 / (2 * sigma2 * schedule.alphas[1:] * (1 - schedule.alpha_bars[1:]))
    return LossWeights(torch.arange(2, schedule.T + 1), lam, torch.ones_like(lam))


# ----------------------------------------------------------------------------------------------------------------
# CLI (its helpers: ddpm_core/likelihood_cli.py)


def main(argv: list[str] | None = None) -> int:
    from ddpm_core.devices import resolve_device
    from ddpm_core.likelihood_cli import build_parser, check_args, evaluation_data, jsonable, progress_bar, report
    from ddpm_core.runs import CheckpointError, load_checkpoint, write_json

    args = build_parser().parse_args(argv)
    try:
        ckpt = load_checkpoint(args.checkpoint)
        check_args(args, ckpt)
        device = resolve_device(args.device)
        model, diffusion = ckpt.model.to(device), Diffusion(ckpt.config.make_schedule()).to(device)
        x0, y, where = evaluation_data(ckpt, args.n, args.seed)
        full, levels = True if args.full else None if args.strata is None else False, data_levels(ckpt.config.dataset)
        strata, steps = args.strata or DEFAULT_STRATA, ODE_STEPS if args.ode_steps is None else args.ode_steps
        progress, close = progress_bar("bound")
        try:
            result = bound(model, diffusion, x0, variance=args.variance, y=y, levels=levels, full=full, strata=strata,
                           seed=args.seed, progress=progress)  # fmt: skip
        finally:
            close()
        ode = ode_log_likelihood(model, diffusion, x0, steps=steps, y=y) if ckpt.config.is_points else None
    except (CheckpointError, ValueError) as e:  # DatasetError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report(ckpt, where, result, ode))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        gap = None if ode is None else result.bits_per_dim - ode.mean_bits_per_dim
        summary = {"checkpoint": str(ckpt.path), "step": ckpt.step, "dataset": ckpt.config.dataset, "data": where}
        write_json(args.json, {**summary, "seed": args.seed, "bound": jsonable(result), "ode": jsonable(ode),
                               "gap": gap})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
