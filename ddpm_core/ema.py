"""The exponential moving average of a network's weights: the weights a run samples with (the paper's, at 0.9999)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Exponential moving average of the weights, θ_ema ← d·θ_ema + (1 − d)·θ, with d warmed up as
    min(decay, (1 + step)/(10 + step)) so early averages are not dominated by the random initialisation."""

    def __init__(self, model: nn.Module, decay: float):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        ema_params = list(self.model.parameters())
        torch._foreach_lerp_(ema_params, [p.detach() for p in model.parameters()], 1 - d)
        for b_ema, b in zip(self.model.buffers(), model.buffers(), strict=True):
            b_ema.copy_(b)
