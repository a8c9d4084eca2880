"""Which noise levels a trained model finds hard, and where its schedule spends its steps.

Training draws t uniformly, so a schedule decides how the training (and DDPM's sampling) steps spread over the
log-SNR λ_t = log(ᾱ_t / (1 − ᾱ_t)): the density of λ under uniform t is 1 / (T |dλ/dt|). The linear schedule
piles its steps at very negative λ, where x_t is nearly pure noise and ε is easy to guess; the cosine schedule
spreads them evenly (Nichol & Dhariwal 2021). `loss_profile` evaluates a model's ε-error at ~50 t's over the whole
range on one batch of real data, next to that density.

CLI: python -m ddpm_core.importance --checkpoint runs/digits --n-t 50 --batch 256   (prints JSON)
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from ddpm_core.diffusion import Diffusion
from ddpm_core.objectives import output_to_eps, prediction_of
from ddpm_core.schedules import Schedule


@dataclass(frozen=True)
class LossProfile:
    t: list[int]  # the step indices evaluated, ascending
    log_snr: list[float]  # λ_t at those steps
    loss: list[float]  # mean ‖ε − ε̂_θ(x_t, t)‖² per element at each t, on the same batch
    density: list[float]  # the density of λ under uniform t, at each t (per unit of λ)


def log_snr_density(schedule: Schedule) -> Tensor:
    """(T,) float64: p(λ) = 1 / (T |dλ/dt|), the density of λ_t when t is uniform on 0 … T−1 (central differences; the
    infinite λ_T of a zero-terminal-SNR schedule contributes no density)."""
    lam = schedule.log_snr.clone()
    lam[~torch.isfinite(lam)] = torch.nan
    slope = torch.gradient(lam)[0].abs()
    density = 1.0 / (schedule.T * slope)
    return torch.nan_to_num(density, nan=0.0, posinf=0.0)


@torch.inference_mode()
def loss_profile(model: nn.Module, diffusion: Diffusion, x0: Tensor, n_t: int = 50, seed: int = 0) -> LossProfile:
    """The ε-error of model at n_t steps spread evenly over 0 … T−1, each on the batch x0 (B, ...) with one fixed ε
    (so the curve's shape is the model's, not the noise's). The model's own prediction target is converted to ε."""
    T = diffusion.num_timesteps
    if not 2 <= n_t <= T:
        raise ValueError(f"n_t must lie in [2, T = {T}], got {n_t}")
    device = next(model.parameters()).device
    x0 = x0.to(device)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed)).to(device)
    ts = sorted({round(i * (T - 1) / (n_t - 1)) for i in range(n_t)})
    prediction = prediction_of(model)
    losses = []
    for t in ts:
        x_t = diffusion.q_sample(x0, t, noise).float()
        output = model(x_t, torch.full((len(x0),), t, device=device, dtype=torch.long))
        eps = output_to_eps(diffusion, prediction, output, x_t, t)
        losses.append(float(((eps - noise) ** 2).mean()))
    schedule = diffusion.schedule
    density = log_snr_density(schedule)
    return LossProfile(ts, [float(schedule.log_snr[t]) for t in ts], losses, [float(density[t]) for t in ts])


def main(argv: list[str] | None = None) -> int:
    from ddpm_core.runs import CheckpointError, load_checkpoint

    p = argparse.ArgumentParser(prog="python -m ddpm_core.importance", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a run folder (EMA weights) or a .safetensors file")
    p.add_argument("--n-t", type=int, default=50, help="how many t's to evaluate")
    p.add_argument("--batch", type=int, default=256, help="real samples per t")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        ckpt = load_checkpoint(args.checkpoint)
        data = ckpt.config.load_data().x
        generator = torch.Generator().manual_seed(args.seed)
        x0 = data[torch.randperm(len(data), generator=generator)[: args.batch]]
        profile = loss_profile(ckpt.model, Diffusion(ckpt.config.make_schedule()), x0, args.n_t, args.seed)
    except (CheckpointError, ValueError) as e:  # DatasetError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"checkpoint": str(ckpt.path), **asdict(profile)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
