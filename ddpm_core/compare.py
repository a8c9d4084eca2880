"""DDPM vs DDIM: one model, one seed, several samplers and step counts, side by side.

Every cell starts from the same x_T ~ N(0, I) (the seed draws it first), so the cells differ only by the sampler:
DDPM's ancestral steps (Ho et al. 2020, Algorithm 2) over all T steps, or DDIM's strided steps (Song et al. 2021,
eq. 12) over a few. Each cell keeps its final samples, the number of steps, the wall time and, when asked, a quality
metric of the samples.

    >>> settings = [SamplerSetting("ddpm", 1000), SamplerSetting("ddim", 50), SamplerSetting("ddim", 10)]
    >>> cells = compare_samplers(model, diffusion, (1, 8, 8), settings, n=64, seed=0)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from ddpm_core.diffusion import Diffusion
from ddpm_core.sample import Sampler, SamplingConfig, sample, sampling_config

DDIM_STEPS = (250, 100, 50, 20, 10)  # the step counts offered next to DDPM's T
CHEAP_DDIM_STEPS = (50, 20, 10)  # the default on a CPU: seconds, not minutes
_LABEL = re.compile(r"^(ddpm|ddim)-(\d+)$", re.IGNORECASE)


@dataclass(frozen=True)
class SamplerSetting:
    """One cell of the grid: a sampler and its number of steps (DDPM normally takes all T)."""

    sampler: Sampler
    steps: int

    def __post_init__(self):
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be a positive integer, got {self.steps!r}")
        self.config(SamplingConfig())  # the sampler's name is SamplingConfig's to check

    def config(self, base: SamplingConfig) -> SamplingConfig:
        """base, the grid's shared settings (η, σ_t², clipping, …), with this cell's sampler and steps."""
        return replace(base, sampler=self.sampler, steps=self.steps)

    @property
    def label(self) -> str:
        """How the grid and the picker name the cell: "DDPM-1000", "DDIM-50"."""
        return f"{self.sampler.upper()}-{self.steps}"

    @classmethod
    def from_label(cls, label: str) -> SamplerSetting:
        """The inverse of label: "DDIM-50" → SamplerSetting("ddim", 50)."""
        match = _LABEL.match(label.strip())
        if not match:
            raise ValueError(f"a sampler setting is written like DDPM-1000 or DDIM-50, got {label!r}")
        return cls(match[1].lower(), int(match[2]))


@dataclass
class CellResult:
    setting: SamplerSetting
    steps: int  # the reverse steps actually taken
    x_T: Tensor  # (N, ...) the starting noise, on the CPU: the same in every cell of one grid
    samples: Tensor  # (N, C, H, W) or (N, D) on the CPU, float32
    wall_time: float  # seconds of sampling, the metric left out
    metric: dict | None  # metric(samples), or None when none was given


def standard_settings(T: int) -> list[SamplerSetting]:
    """DDPM over all T steps, then DDIM at each of DDIM_STEPS below T (a schedule with T = 100 offers DDIM-50 …)."""
    return [SamplerSetting("ddpm", T), *(SamplerSetting("ddim", s) for s in DDIM_STEPS if s < T)]


def cheap_settings(T: int) -> list[SamplerSetting]:
    """The default selection on a CPU: DDIM at CHEAP_DDIM_STEPS (those below T)."""
    return [SamplerSetting("ddim", s) for s in CHEAP_DDIM_STEPS if s < T]


def compare_samplers(
    model: nn.Module,
    diffusion: Diffusion,
    shape: tuple[int, ...],
    settings: Sequence[SamplerSetting],
    n: int,
    seed: int,
    metric: Callable[[Tensor], dict] | None = None,
    *,
    config: SamplingConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
    **shared,
) -> list[CellResult]:
    """Sample n of one sample shape (e.g. (1, 8, 8) or (2,)) with each setting, from one x_T (the random seed's).

    config (or its fields as keywords, shared: eta=…, variance=…, clip_x0=…) holds what the cells share; each cell
    takes its sampler and steps from its setting, so eta applies to the DDIM cells and variance to the DDPM ones.
    metric(samples) → dict is called on each cell's samples (N, ...). progress(done, total) counts steps over
    the whole grid. All settings are checked before any sampling: a bad one raises ValueError and nothing runs.
    Returns one CellResult per setting, in order.
    """
    if not settings:
        raise ValueError("compare_samplers needs at least one sampler setting")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    base = sampling_config(config, shared)
    configs = [s.config(base).resolved(diffusion.num_timesteps) for s in settings]
    totals = [c.steps for c in configs]
    cells, done = [], 0
    for setting, config, total in zip(settings, configs, totals, strict=True):

        def step(k: int, _total: int, before: int = done) -> None:
            if progress is not None:
                progress(before + k, sum(totals))

        result = sample(model, diffusion, n, shape, config, seed=seed, record_every=total + 1, progress=step)
        x_T = result.trajectory[0].x_t  # record_every > steps keeps only x_T and x_0
        scores = metric(result.samples) if metric is not None else None
        cells.append(CellResult(setting, len(result.timesteps), x_T, result.samples, result.wall_time, scores))
        done += total
    return cells


# ----------------------------------------------------------------------------------------------------------------
# Classifier-free guidance: one x_T, several guidance scales


@dataclass
class GuidanceCell:
    scale: float
    labels: Tensor  # (N,) the class asked of each sample
    samples: Tensor  # (N, ...) on the CPU, float32: row r of a grid of n_per_class columns is labels' class r
    wall_time: float
    accuracy: float | None  # share of samples a classifier assigns to their requested class, when one was given


def compare_guidance(
    model: nn.Module,
    diffusion: Diffusion,
    shape: tuple[int, ...],
    classes: Sequence[int],
    scales: Sequence[float],
    n_per_class: int,
    seed: int,
    classify: Callable[[Tensor], Tensor] | None = None,
    progress: Callable[[int, int], None] | None = None,
    *,
    config: SamplingConfig | None = None,
    **shared,
) -> list[GuidanceCell]:
    """Sample n_per_class of each class at each guidance scale s of ε̃ = ε(∅) + s (ε(y) − ε(∅)), every cell from the
    same x_T (the random seed's). config (or its fields as keywords, shared: sampler=…, steps=…) says how; its
    class_label and guidance are the grid's to set.
    classify(samples) → (N,) predicted labels scores each cell's accuracy. progress(done, total) counts steps over
    the whole grid."""
    if not classes or not scales or n_per_class < 1:
        raise ValueError("compare_guidance needs at least one class, one scale and one sample per class")
    if not all(0.0 <= s <= 20.0 for s in scales):
        raise ValueError(f"guidance scales must lie in [0, 20], got {list(scales)}")
    config = replace(sampling_config(config, shared), class_label=None).resolved(diffusion.num_timesteps)
    total = config.steps
    labels = torch.tensor(list(classes)).repeat_interleave(n_per_class)
    cells = []
    for i, scale in enumerate(scales):

        def step(k: int, _total: int, before: int = i * total) -> None:
            if progress is not None:
                progress(before + k, total * len(scales))

        result = sample(model, diffusion, len(labels), shape, replace(config, guidance=scale), y=labels, seed=seed,
                        record_every=total + 1, progress=step)  # fmt: skip
        accuracy = float((classify(result.samples) == labels).float().mean()) if classify is not None else None
        cells.append(GuidanceCell(scale, labels, result.samples, result.wall_time, accuracy))
    return cells
