"""What the network predicts, and how its error is weighted over t.

Ho et al. 2020 train ε_θ(x_t, t) to predict the noise ε. Two other targets carry the same information,
since x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε ties x_0 and ε together:

- x_0 itself (the clean data: "sample" in diffusers);
- v = √ᾱ_t ε − √(1 − ᾱ_t) x_0, the velocity of Salimans & Ho 2022 ("v_prediction"): well-scaled at both ends of t.

The samplers work in ε: output_to_eps converts any of the three, through Diffusion's own conversions (predict_eps,
eps_from_v). min-SNR-γ (Hang et al. 2023) weights each t's loss by min(SNR_t, γ) relative to the target's own
implicit weight, so that the easy low-noise steps stop dominating.
Shapes: x0, noise, x_t and outputs are (B, ...); t is (B,) long or an int.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor

from ddpm_core.diffusion import PREDICTION_TYPES, Diffusion, PredictionType

LossWeighting = Literal["none", "min_snr"]


def check_prediction(prediction: str) -> PredictionType:
    if prediction not in PREDICTION_TYPES:
        raise ValueError(f"unknown prediction type {prediction!r}; valid values: {', '.join(PREDICTION_TYPES)}")
    return prediction  # type: ignore[return-value]


def prediction_of(model) -> PredictionType:
    """What a network outputs: its ModelConfig's `prediction` (ε for a network without one, e.g. a bench's)."""
    return getattr(getattr(model, "config", None), "prediction", "eps")


def training_target(d: Diffusion, prediction: PredictionType, x0: Tensor, t: int | Tensor, noise: Tensor) -> Tensor:
    """What the network is trained to output for x_t = q_sample(x0, t, noise): ε, x_0 or v (Salimans & Ho 2022)."""
    if prediction == "eps":
        return noise
    if prediction == "x0":
        return x0
    if prediction == "v":
        return d.velocity(x0, t, noise)
    raise ValueError(check_prediction(prediction))


def output_to_eps(d: Diffusion, prediction: PredictionType, output: Tensor, x_t: Tensor, t: int | Tensor) -> Tensor:
    """The ε the network's output stands for: the output itself, the forward equation solved for ε given x̂₀, or
    ε̂ = √ᾱ_t v + √(1 − ᾱ_t) x_t. Computed in float64 coefficients, returned in the output's dtype."""
    if prediction == "eps":
        return output
    if prediction == "x0":
        return d.predict_eps(x_t, t, output).to(output.dtype)
    if prediction == "v":
        return d.eps_from_v(x_t, t, output).to(output.dtype)
    raise ValueError(check_prediction(prediction))


def loss_weight(d: Diffusion, prediction: PredictionType, weighting: LossWeighting, t: Tensor, gamma: float) -> Tensor:
    """Per-sample weights (B,) float32 of the squared error at steps t (B,): 1, or min-SNR-γ (Hang et al. 2023),
    which is min(SNR_t, γ) in x_0-space, i.e. min(SNR, γ)/SNR for ε and min(SNR, γ)/(SNR + 1) for v."""
    if weighting == "none":
        return torch.ones(t.shape, device=t.device)
    if weighting != "min_snr":
        raise ValueError(f"unknown loss weighting {weighting!r}; valid values: {', '.join(get_args(LossWeighting))}")
    if gamma <= 0:
        raise ValueError(f"min_snr_gamma must be positive, got {gamma}")
    alpha_bar = d.alpha_bars[t.to(d.alpha_bars.device)]
    snr = alpha_bar / (1 - alpha_bar)
    clipped = snr.clamp(max=gamma)
    divisor = {"eps": snr, "x0": snr.new_ones(()), "v": snr + 1}[check_prediction(prediction)]
    return (clipped / divisor).float().to(t.device)
