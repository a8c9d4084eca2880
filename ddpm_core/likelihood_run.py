"""The bound a training run reports when it ends, where that is cheap (the 8×8 digits and the 2D toys): Ho et al.'s
variational bound in bits/dim (ddpm_core.likelihood.bound), stratified over t, in evaluation.json under "bound" and
in the run history's table.

It is measured with σ_t² = β_t, the tighter of the two bounds on these models (digits 2.88 against 3.07 bits/dim
under β̃_t; 2D toys 0.8–0.9 bits/dim lower), on up to RUN_BOUND_MAX_N samples — the 2D toys' fresh points (drawn
apart from the training points, as ddpm_core.evaluate's), or the digits the run trained on — at one t per stratum
of RUN_BOUND_STRATA: 51 network evaluations per sample, about as many as the DDIM-50 sampling of the evaluation.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ddpm_core.config import TrainConfig
from ddpm_core.data import Dataset, make_toy
from ddpm_core.diffusion import Diffusion
from ddpm_core.evaluate import REFERENCE_SEED
from ddpm_core.likelihood import Bound, bound, data_levels

RUN_BOUND_VARIANCE = "beta"
RUN_BOUND_STRATA = 50
RUN_BOUND_MAX_N = 1000


def bound_is_cheap(config: TrainConfig, shape: tuple[int, ...]) -> bool:
    """Whether a run of this config reports its bound: 2D toys, and the digits at their own 8×8 (17 levels)."""
    return config.is_points or (config.dataset == "digits" and tuple(shape) == (1, 8, 8))


def run_bound_data(config: TrainConfig, data: Dataset, n: int, seed: int) -> tuple[Tensor, Tensor | None]:
    """The samples (≤ n) a run's bound is measured on, with their labels for a class-conditional model (else None):
    fresh 2D points, or a seeded pick of the run's digits."""
    n = min(n, RUN_BOUND_MAX_N)
    if config.is_points:
        return make_toy(config.dataset, n, seed=REFERENCE_SEED + seed), None
    pick = torch.randperm(len(data.x), generator=torch.Generator().manual_seed(seed))[:n]
    y = data.y[pick] if config.class_conditional and data.y is not None else None
    return data.x[pick], y


def run_bound(model: nn.Module, diffusion: Diffusion, config: TrainConfig, x0: Tensor, y: Tensor | None = None,
              seed: int = 0) -> Bound:  # fmt: skip
    """The run's bound of x0 (N, ...) in bits/dim: σ_t² = β_t, one t in each of RUN_BOUND_STRATA strata."""
    strata = min(RUN_BOUND_STRATA, diffusion.num_timesteps - 1)
    return bound(model, diffusion, x0, variance=RUN_BOUND_VARIANCE, y=y, levels=data_levels(config.dataset),
                 full=False, strata=strata, seed=seed)  # fmt: skip


def bound_report(b: Bound) -> dict:
    """The "bound" entry of evaluation.json: the total ± its standard error, its three parts and how it was made."""
    return {
        "bits_per_dim": round(b.bits_per_dim, 4),
        "stderr": None if math.isnan(b.stderr) else round(b.stderr, 4),  # NaN (one sample): none
        "prior": round(b.prior, 6),
        "kl": round(b.kl, 4),
        "decoder": round(b.decoder, 4),
        "variance": b.variance,
        "strata": b.strata,
        "n": len(b.per_sample),
        "levels": b.levels,
        "seconds": round(b.wall_time, 3),
    }
