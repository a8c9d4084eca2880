"""The forward process made visible: x_t for one x_0 and one fixed ε at any t, readouts, strips of x_t, and the
iterated chain against the closed form. The computations of the Forward process page; no Streamlit here.

Index convention (as in schedules.py): t = 0 … T-1 indexes the schedule's tensors and is the paper's t + 1.
x_0 is an image (C, H, W) in [-1, 1] or a point cloud (N, 2); ε has x_0's shape and depends only on the seed, so
moving t changes the noise level, never the noise:

    >>> f = forward_frame(schedule, x0, t=250, seed=0)   # f.x_t, f.readout.snr, f.histogram.density
    >>> xs = strip(schedule, x0, strip_timesteps(schedule.T), seed=0)   # (8, C, H, W)
    >>> stats = chain_vs_closed(schedule, x0, t=250, seed=0)             # q_step iterated vs q_sample
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ddpm_core.diffusion import Diffusion
from ddpm_core.pictures import png_bytes, to_picture
from ddpm_core.schedules import Schedule

STRIP_LENGTH = 8  # x_t panels in a strip
HIST_LIM, HIST_BINS = 4.0, 80  # the histogram covers [-4, 4]: N(0, 1) keeps 99.99% of its mass there
CHAIN_DRAWS = 64  # independent chains for chain_vs_closed's per-pixel moments
# draws × pixels per chain step: under torch's 32768-element grain size every step runs on one thread, and
# 1000 steps take about 0.1 s; above it, threads that wake for each of the thousand tiny ops cost more than they give
CHAIN_ELEMENTS = 30_000
CHAIN_WORK = 30_000_000  # values × steps: long chains work on a smaller copy so that any t stays under about 1 s
MAX_CHAIN_STEPS = 20_000  # beyond this, Python's ~40 µs per step alone passes a second
SHOWN_SIDE = 256  # the page shows x_t at least this big: an 8×8 digit as 32-px blocks, a 256-px photo as it is


def _check_t(schedule: Schedule, t: int) -> int:
    if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < schedule.T:
        raise ValueError(f"t must be an integer index in [0, {schedule.T - 1}], got {t!r}")
    return t


def fixed_noise(shape: tuple[int, ...], seed: int) -> Tensor:
    """ε ~ N(0, I) of the given shape, float32, a function of (shape, seed) only: the same ε for every t."""
    return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(int(seed)))


def noised(schedule: Schedule, x0: Tensor, t: int, seed: int) -> Tensor:
    """x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε with ε = fixed_noise(x0.shape, seed). x0: (C, H, W) or (N, 2); same shape out."""
    eps = fixed_noise(x0.shape, seed)
    return Diffusion(schedule).q_sample(x0.float(), _check_t(schedule, t), eps)


# ----------------------------------------------------------------------------------------------------------------
# The numbers and the histogram beside x_t


@dataclass(frozen=True)
class Readout:
    """The schedule at index t (the paper's t + 1), as plain floats."""

    t: int
    beta: float  # β_t
    alpha_bar: float  # ᾱ_t
    sqrt_alpha_bar: float  # √ᾱ_t, the weight of x_0 in x_t
    sqrt_one_minus_alpha_bar: float  # √(1 − ᾱ_t), the weight of ε
    snr: float  # ᾱ_t / (1 − ᾱ_t)
    log_snr: float  # its natural log, finite where ᾱ_t underflows


def readout(schedule: Schedule, t: int) -> Readout:
    t = _check_t(schedule, t)
    s = schedule
    return Readout(
        t, float(s.betas[t]), float(s.alpha_bars[t]), float(s.sqrt_alpha_bars[t]),
        float(s.sqrt_one_minus_alpha_bars[t]), float(s.snr[t]), float(s.log_snr[t]),
    )  # fmt: skip


@dataclass(frozen=True)
class Histogram:
    """x_t's values as a density on [-HIST_LIM, HIST_LIM], beside the N(0, 1) density x_T tends to."""

    edges: np.ndarray  # (B + 1,)
    density: np.ndarray  # (B,): fraction of all values in each bin / bin width (values outside are not counted)
    normal: np.ndarray  # (B,): N(0, 1)'s density at the bin centres

    @property
    def centres(self) -> np.ndarray:
        return (self.edges[:-1] + self.edges[1:]) / 2


def histogram(x: Tensor, bins: int | None = None, lim: float = HIST_LIM) -> Histogram:
    """The density of x's values (any shape) on [-lim, lim], and N(0, 1)'s density beside it. bins: default
    2√n within 16 … HIST_BINS, so that an 8×8 digit's 64 values do not scatter over 80 mostly empty bins."""
    values = x.detach().float().reshape(-1).numpy()
    bins = bins or min(HIST_BINS, max(16, round(2 * math.sqrt(values.size))))
    counts, edges = np.histogram(values, bins=bins, range=(-lim, lim))
    density = counts / (max(values.size, 1) * (edges[1] - edges[0]))
    centres = (edges[:-1] + edges[1:]) / 2
    return Histogram(edges, density, np.exp(-(centres**2) / 2) / math.sqrt(2 * math.pi))


@dataclass(frozen=True)
class Frame:
    """What the page shows for one t."""

    x_t: Tensor  # x_0's shape
    readout: Readout
    histogram: Histogram


def forward_frame(schedule: Schedule, x0: Tensor, t: int, seed: int) -> Frame:
    """The page's recompute when t moves: x_t (fixed ε), the schedule's numbers at t, and x_t's histogram."""
    x_t = noised(schedule, x0, t, seed)
    return Frame(x_t, readout(schedule, t), histogram(x_t))


def shown_frame(schedule: Schedule, x0: Tensor, t: int, seed: int) -> tuple[bytes, Frame]:
    """forward_frame plus the PNG of x_t the page shows (≥ SHOWN_SIDE px a side): all that a slider move costs."""
    f = forward_frame(schedule, x0, t, seed)
    return png_bytes(to_picture(f.x_t, SHOWN_SIDE)), f


# ----------------------------------------------------------------------------------------------------------------
# Strips: x_t at a few t, same x_0 and same ε


def strip_timesteps(T: int, n: int = STRIP_LENGTH) -> list[int]:
    """n indices spread evenly over 0 … T-1, both ends included, rounded (fewer when T < n)."""
    if T < 1 or n < 1:
        raise ValueError(f"T and n must be at least 1, got T={T}, n={n}")
    if n == 1:
        return [T - 1]
    return sorted({round(i * (T - 1) / (n - 1)) for i in range(n)})


def strip(schedule: Schedule, x0: Tensor, ts: list[int], seed: int) -> Tensor:
    """x_t for each t in ts, one ε for all: x0 (C, H, W) or (N, 2) → (len(ts), *x0.shape)."""
    for t in ts:
        _check_t(schedule, t)
    eps = fixed_noise(x0.shape, seed)
    n = len(ts)
    batch = x0.float().expand(n, *x0.shape)
    return Diffusion(schedule).q_sample(batch, torch.tensor(ts), eps.expand(n, *x0.shape))


# ----------------------------------------------------------------------------------------------------------------
# Closed form vs chain: q_step iterated t + 1 times has the law of q_sample at t


@dataclass(frozen=True)
class Moments:
    """Per-pixel moments over many draws of x_t, summarised over the pixels."""

    mean_error: float  # RMS over pixels of (mean over draws of x_t − √ᾱ_t x_0)
    std: float  # √(mean over pixels of the per-pixel variance over draws)


@dataclass(frozen=True)
class ChainStats:
    t: int
    draws: int
    shape: tuple[int, ...]  # the x_0 the chains ran on: (C, h, w) or (n, 2), smaller when the original is large
    downscaled: bool
    x_chain: Tensor  # one draw of the iterated chain, of that shape
    x_closed: Tensor  # one draw of the closed form
    chain: Moments
    closed: Moments
    expected_std: float  # √(1 − ᾱ_t)
    expected_mean_error: float  # √((1 − ᾱ_t) / draws): the standard error of a per-pixel mean


def work_copy(x0: Tensor, max_values: int) -> Tensor:
    """x0 with at most max_values values: an image (C, H, W) shrunk (antialiased) to the largest square side s with
    C·s² ≤ max_values, points (N, 2) cut to their first max_values // 2; unchanged if it fits."""
    if x0.numel() <= max_values:
        return x0
    if x0.dim() == 2:
        return x0[: max(1, max_values // x0.shape[1])]
    c = x0.shape[0]
    side = max(1, math.isqrt(max_values // c))
    return F.interpolate(x0[None].float(), size=(side, side), mode="bilinear", antialias=True)[0]


def _moments(x: Tensor, target_mean: Tensor) -> Moments:
    """x: (draws, ...) samples; target_mean: (...)."""
    error = (x.mean(0) - target_mean).pow(2).mean().sqrt()
    return Moments(float(error), float(x.var(0).mean().sqrt()))


def chain_vs_closed(
    schedule: Schedule, x0: Tensor, t: int, seed: int, draws: int = CHAIN_DRAWS, max_elements: int = CHAIN_ELEMENTS
) -> ChainStats:
    """Run `draws` chains x_{s+1} = √α_s x_s + √β_s ε_s (Diffusion.q_step, fresh ε each step) from x_0 for
    s = 0 … t, and as many closed-form draws x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε (q_sample); compare both with the
    theory: mean √ᾱ_t x_0, std √(1 − ᾱ_t).

    x0: (C, H, W) or (N, 2), shrunk first (see work_copy) so that draws × values ≤ max_elements and, over the
    t + 1 steps, ≤ CHAIN_WORK. Raises ValueError beyond MAX_CHAIN_STEPS steps.
    """
    t = _check_t(schedule, t)
    if t + 1 > MAX_CHAIN_STEPS:
        raise ValueError(f"the chain would take {t + 1:,} steps; at most {MAX_CHAIN_STEPS:,} keep it under a second")
    budget = min(max_elements, CHAIN_WORK // (t + 1))
    small = work_copy(x0.float(), max(1, budget // draws))
    d, g = Diffusion(schedule), torch.Generator().manual_seed(int(seed))
    x = small.expand(draws, *small.shape).clone()  # (draws, *shape)
    for s in range(t + 1):
        x = d.q_step(x, s, torch.randn(x.shape, generator=g))
    closed = d.q_sample(small.expand_as(x), t, torch.randn(x.shape, generator=g))
    mean = float(schedule.sqrt_alpha_bars[t]) * small
    std = float(schedule.sqrt_one_minus_alpha_bars[t])
    return ChainStats(
        t, draws, tuple(small.shape), small.shape != x0.shape, x[0], closed[0],
        _moments(x, mean), _moments(closed, mean), std, std / math.sqrt(draws),
    )  # fmt: skip
