"""What a sampling request will cost before it runs: its network calls, times the measured time of one call on this
machine. The Sample page shows it next to Generate, so that nobody waits minutes for DDPM's 1,000 steps unawares.

    >>> calls = network_calls(SamplingConfig(sampler="ddim", steps=50), T=1000)   # 50 calls of a batch of n
    >>> per_call = call_time(model, (1, 28, 28), batch=64)                       # measured here, at 1 and 64
    >>> expected_seconds(calls, per_call(64))

The sampler calls ε_θ once a step (DDPM: all T steps; DDIM: its strided steps) on the whole batch, or on a batch
twice as large with classifier-free guidance (the conditional and the unconditional halves in one pass).
"""

from __future__ import annotations

import time
from typing import NamedTuple

import torch
from torch import nn

from ddpm_core.sample import SamplingConfig, predict_eps


class Calls(NamedTuple):
    steps: int  # network calls: one per sampler step
    batch_factor: int  # 2 with classifier-free guidance (both label sets in one pass), else 1


def network_calls(config: SamplingConfig, T: int) -> Calls:
    """The ε_θ calls of one sampling with config on a model of T steps."""
    c = config.resolved(T)
    guided = c.class_label is not None and c.guidance != 1.0
    return Calls(c.steps, 2 if guided else 1)


class CallTime(NamedTuple):
    """One network call's seconds as a + b·batch, from two measured batch sizes: the fixed cost of a call (its
    launches, small tensors) and the cost of each sample."""

    fixed: float
    per_sample: float

    def __call__(self, batch: int) -> float:
        return self.fixed + self.per_sample * batch


@torch.inference_mode()
def seconds_per_call(model: nn.Module, shape: tuple[int, ...], batch: int, repeats: int = 2) -> float:
    """The time of one network call on a batch of `batch` samples of `shape`, as the sampler makes it (CPU chunks
    included), with torch's current threads: the best of `repeats` after one warm-up call (oneDNN builds its
    kernels on the first)."""
    device = next(model.parameters()).device
    x = torch.randn(batch, *shape, device=device)
    t = torch.full((batch,), 1, dtype=torch.long, device=device)
    best = float("inf")
    for i in range(repeats + 1):
        start = time.perf_counter()
        predict_eps(model, x, t, None)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:
            best = min(best, time.perf_counter() - start)
    return best


def call_time(model: nn.Module, shape: tuple[int, ...], batch: int) -> CallTime:
    """Measure one call at 1 sample and at `batch` samples (a typical request) and fit a + b·batch through them:
    one measurement answers every N the page may ask about."""
    one, many = seconds_per_call(model, shape, 1), seconds_per_call(model, shape, batch)
    per_sample = max(0.0, (many - one) / max(1, batch - 1))
    return CallTime(max(0.0, one - per_sample), per_sample)


def expected_seconds(calls: Calls, per_call: float) -> float:
    """The sampling's expected wall time: calls × the seconds of one call (the sampler's own arithmetic between
    calls is a few percent on top)."""
    return calls.steps * per_call
