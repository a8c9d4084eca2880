"""Editing with a trained ε_θ, without retraining: SDEdit, inpainting (RePaint), DDIM inversion, interpolation.

One function per method, each with its equation and paper. Every method samples through a SamplingConfig (sampler,
steps, class label, guidance for a conditional model) and works for images (N, C, H, W) and 2D points (N, 2) alike:

    >>> sdedit(model, diffusion, x0, t_start=400, config=SamplingConfig("ddim", 50), seed=0).samples
    >>> inpaint(model, diffusion, x0, mask_preset("left", x0.shape[1:]), resample=5).samples   # 1 = regenerate
    >>> invert(model, diffusion, x0, SamplingConfig("ddim", 100)).error                       # RMS round trip
    >>> interpolate(model, diffusion, seed_a=0, seed_b=1, n=8).samples                        # (8, C, H, W)

Indices are the core's (diffusion.py): step index i is the paper's t = i + 1, −1 is x_0. t_start is the paper's t.
Inputs are checked in ddpm_core.edit_inputs: a wrong shape, a non-binary mask or a t_start out of range raise
ValueError with a message meant to be shown as it is.

CLI: python -m ddpm_core.edit inpaint --checkpoint runs/digits --input digit.png --mask-preset left --out out.npy
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple, get_args

import torch
from torch import Tensor, nn

from ddpm_core.diffusion import Diffusion
from ddpm_core.edit_inputs import MASK_PRESETS, check_input, check_mask, load_array, mask_preset, sample_shape_of
from ddpm_core.sample import (
    Sampler,
    SampleResult,
    SamplingConfig,
    StepRecord,
    collect,
    guided_eps,
    labels_for,
    reverse_chain,
    reverse_step,
)

Progress = Callable[[int, int], None]


class Inversion(NamedTuple):
    x_T: Tensor  # (N, ...) the latent DDIM inversion reaches
    reconstruction: Tensor  # (N, ...) x̂_0 decoded back from x_T
    error: float  # RMS of x̂_0 − x_0 over every value, in the data's [-1, 1] scale
    trajectory: list[StepRecord]  # the way up (x_0 … x_T), then the way down (x_T … x̂_0), on the CPU


def _prepare(model: nn.Module, diffusion: Diffusion, x0: Tensor, config: SamplingConfig | None):
    c = (config or SamplingConfig()).resolved(diffusion.num_timesteps)
    x0 = check_input(x0, sample_shape_of(model))
    device = next(model.parameters()).device
    return c, x0.to(device), labels_for(model, c, None, len(x0), device), device


# ----------------------------------------------------------------------------------------------------------------
# The methods


@torch.inference_mode()
def sdedit(
    model: nn.Module,
    diffusion: Diffusion,
    x0: Tensor,
    t_start: int,
    config: SamplingConfig | None = None,
    *,
    seed: int = 0,
    record_every: int | None = None,
    progress: Progress | None = None,
) -> SampleResult:
    """SDEdit (Meng et al. 2022): noise the input to t_start with q(x_t | x_0) (Ho et al. eq. 4),

        x_{t_start} = √ᾱ_{t_start} x_0 + √(1 − ᾱ_{t_start}) ε,

    then run the reverse chain from there: config.steps steps (at most t_start) over t_start … 1. t_start = 0 returns
    the input; t_start = T is sampling from (almost) pure noise — ε is the same draw as sample(seed)'s x_T, so the two
    nearly agree. The smaller t_start, the more of the input survives.
    """
    c, x0, y, device = _prepare(model, diffusion, x0, config)
    T = diffusion.num_timesteps
    if isinstance(t_start, bool) or not isinstance(t_start, int) or not 0 <= t_start <= T:
        raise ValueError(f"t_start must be an integer from 0 (keep the input) to T = {T}, got {t_start!r}")
    start = time.perf_counter()
    if t_start == 0:
        x = x0.float().cpu()
        return SampleResult(x, [StepRecord(-1, x, x)], [], time.perf_counter() - start)
    generator = torch.Generator(device).manual_seed(seed)
    noise = torch.randn(x0.shape, generator=generator, device=device, dtype=x0.dtype)  # sample(seed)'s x_T
    steps = min(c.steps, t_start)
    ts = diffusion.timesteps(steps, c.spacing, start=t_start).tolist()
    x = diffusion.q_sample(x0, ts[0], noise)
    return collect(reverse_chain(model, diffusion, x, ts, c, y, generator), steps, start, record_every, progress)


def repaint_path(steps: int, jump: int = 1, resample: int = 1) -> list[int]:
    """RePaint's walk over the positions 0 … steps of a chain (position k: its k-th timestep; steps: x_0): down one
    step at a time, and at every jump-th position back up `jump` positions, resample − 1 times each (Lugmayr et al.
    2022, §4.2: "jump length" j and "resampling" r; j = 1 is their Algorithm 1's U = r)."""
    if not 1 <= resample <= 50 or not 1 <= jump <= max(1, steps):
        raise ValueError(f"resample must lie in [1, 50] and jump in [1, steps = {steps}], got {resample}, {jump}")
    path, pos, back = [0], 0, {}
    while pos < steps:
        pos += 1
        path.append(pos)
        if pos < steps and pos % jump == 0 and back.get(pos, 0) < resample - 1:
            back[pos] = back.get(pos, 0) + 1
            pos -= jump
            path.append(pos)
    return path


@torch.inference_mode()
def inpaint(
    model: nn.Module,
    diffusion: Diffusion,
    x0: Tensor,
    mask: Tensor,
    config: SamplingConfig | None = None,
    *,
    resample: int = 1,
    jump: int = 1,
    seed: int = 0,
    record_every: int | None = None,
    progress: Progress | None = None,
) -> SampleResult:
    """Inpainting by RePaint (Lugmayr et al. 2022, Algorithm 1): from x_T ~ N(0, I), at each step

        x_{t−1}^known ~ q(x_{t−1} | x_0) (Ho et al. eq. 4),   x_{t−1}^unknown ~ p_θ(x_{t−1} | x_t) (the sampler's step),
        x_{t−1} = (1 − m) ⊙ x_{t−1}^known + m ⊙ x_{t−1}^unknown,

    and, to harmonise the two, jump back up with q(x_t | x_{t−1}) (resample − 1 times per jump-th step, `jump` steps
    at a time; q_sample_from across strides). mask m: 1 = regenerate, 0 = keep (check_mask). The last step lands on
    x_0 itself, so the kept values equal the input exactly.
    """
    c, x0, y, device = _prepare(model, diffusion, x0, config)
    m = check_mask(mask, x0).to(device)
    ts = [*diffusion.timesteps(c.steps, c.spacing).tolist(), -1]
    path = repaint_path(c.steps, jump, resample)
    generator = torch.Generator(device).manual_seed(seed)
    start = time.perf_counter()

    def chain() -> Iterator[StepRecord]:
        x = torch.randn(x0.shape, generator=generator, device=device, dtype=x0.dtype)
        for here, there in itertools.pairwise(path):
            t, t_to = ts[here], ts[there]
            if there < here:  # back up: q(x_{t_to} | x_t)
                x = diffusion.q_sample_from(x, t, t_to, generator=generator)
                continue
            step = reverse_step(model, diffusion, x, t, t_to, c, y, generator)
            known = x0 if t_to < 0 else diffusion.q_sample(x0, t_to, generator=generator)
            yield StepRecord(t, x, step.x0_pred)
            x = (1 - m) * known + m * step.x_prev
        yield StepRecord(-1, x, x)

    evaluations = sum(b > a for a, b in itertools.pairwise(path))
    return collect(chain(), evaluations, start, record_every, progress)


@torch.inference_mode()
def invert(
    model: nn.Module,
    diffusion: Diffusion,
    x0: Tensor,
    config: SamplingConfig | None = None,
    *,
    record_every: int | None = None,
    progress: Progress | None = None,
) -> Inversion:
    """DDIM inversion (Song et al. 2021, eq. 12 at η = 0 run upward; Diffusion.ddim_invert_step): x_0 → x_T over
    config.steps steps, then back x_T → x̂_0 with DDIM η = 0 over the same steps; reports the RMS round-trip error.
    Always deterministic DDIM without clipping (whatever config's sampler, eta, clip_x0), so the error measures only
    the approximation ε_θ(x_{t−1}, t) ≈ ε_θ(x_t, t), which shrinks as the steps grow."""
    c, x0, y, _device = _prepare(model, diffusion, x0, config)
    c = replace(c, sampler="ddim", eta=0.0, clip_x0=False)
    ts = diffusion.timesteps(c.steps, c.spacing).tolist()
    start = time.perf_counter()
    every = record_every or max(1, c.steps // 30)
    trajectory = [StepRecord(-1, x0.float().cpu(), x0.float().cpu())]
    x, here = x0, -1
    for k, t in enumerate(reversed(ts)):  # up: x_0 → x_T
        step = diffusion.ddim_invert_step(guided_eps(model, diffusion, x, t, y, c.guidance), here, x, t)
        x, here = step.x_prev, t
        if (k + 1) % every == 0 or k + 1 == c.steps:
            trajectory.append(StepRecord(t, x.float().cpu(), step.x0_pred.float().cpu()))
        if progress is not None:
            progress(k + 1, 2 * c.steps)
    then = None if progress is None else (lambda k, n: progress(n + k, 2 * n))
    down = collect(reverse_chain(model, diffusion, x, ts, c, y), c.steps, start, every, then)
    error = (down.samples - x0.float().cpu()).pow(2).mean().sqrt().item()
    return Inversion(x.float().cpu(), down.samples, error, trajectory + down.trajectory[1:])


def round_trip_errors(
    model: nn.Module, diffusion: Diffusion, x0: Tensor, steps: list[int], config: SamplingConfig | None = None
) -> list[float]:
    """invert's RMS round-trip error at each number of steps (the Edit page's curve, bench/bench_edit.py's table)."""
    base = config or SamplingConfig("ddim")
    return [invert(model, diffusion, x0, replace(base, sampler="ddim", steps=k)).error for k in steps]


def slerp(z0: Tensor, z1: Tensor, alpha: float) -> Tensor:
    """Spherical interpolation between two noises (Shoemake 1985), per sample: sin((1−α)θ)/sin θ · z0 +
    sin(αθ)/sin θ · z1 with cos θ = ⟨z0, z1⟩/(‖z0‖ ‖z1‖). Keeps the norm a Gaussian sample has, where a straight
    line would shrink it toward 0 (Song et al. 2021, §5.3)."""
    a, b = z0.flatten(1), z1.flatten(1)
    cos = ((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))).clamp(-1, 1)
    theta = torch.acos(cos)
    shape = (-1, *([1] * (z0.dim() - 1)))
    small = theta.abs() < 1e-6  # the same direction: slerp is the line
    s = torch.where(small, torch.ones_like(theta), torch.sin(theta))
    w0 = torch.where(small, 1 - alpha, torch.sin((1 - alpha) * theta) / s).reshape(shape)
    w1 = torch.where(small, torch.full_like(theta, alpha), torch.sin(alpha * theta) / s).reshape(shape)
    return w0.to(z0.dtype) * z0 + w1.to(z0.dtype) * z1


@torch.inference_mode()
def interpolate(
    model: nn.Module,
    diffusion: Diffusion,
    seed_a: int,
    seed_b: int,
    n: int = 8,
    config: SamplingConfig | None = None,
    *,
    record_every: int | None = None,
    progress: Progress | None = None,
) -> SampleResult:
    """Interpolation in x_T (Song et al. 2021, §5.3): n noises slerped from seed_a's x_T to seed_b's, each decoded
    with deterministic DDIM (η = 0, config's steps). The endpoints are sample(…, n=1, seed=seed_a / seed_b) with DDIM
    η = 0. Returns the n decoded samples in order, α = 0 … 1."""
    if isinstance(n, bool) or not isinstance(n, int) or not 2 <= n <= 64:
        raise ValueError(f"n must be an integer from 2 to 64 (the two ends included), got {n!r}")
    c = replace(config or SamplingConfig("ddim"), sampler="ddim", eta=0.0).resolved(diffusion.num_timesteps)
    shape = sample_shape_of(model)
    device = next(model.parameters()).device
    ends = [torch.randn((1, *shape), generator=torch.Generator(device).manual_seed(s), device=device)
            for s in (seed_a, seed_b)]  # fmt: skip
    x = torch.cat([slerp(ends[0], ends[1], i / (n - 1)) for i in range(n)])
    y = labels_for(model, c, None, n, device)
    ts = diffusion.timesteps(c.steps, c.spacing).tolist()
    start = time.perf_counter()
    return collect(reverse_chain(model, diffusion, x, ts, c, y), c.steps, start, record_every, progress)


# ----------------------------------------------------------------------------------------------------------------
# CLI

METHODS = ("sdedit", "inpaint", "invert", "interpolate")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ddpm_core.edit", description="Edit with a trained DDPM.")
    p.add_argument("method", choices=METHODS)
    p.add_argument("--checkpoint", required=True, help="a run folder (uses its EMA weights) or a .safetensors file")
    p.add_argument("--input", type=Path, help="x_0: .npy (N,C,H,W)/(C,H,W) or (N,2), in [-1, 1], or a .png/.jpg")
    p.add_argument("--out", type=Path, help="write the result, float32 .npy (invert: x̂_0; interpolate: the row)")
    p.add_argument("--mask", type=Path, help="inpaint: .npy or .png, 1/white = regenerate, 0/black = keep")
    p.add_argument("--mask-preset", choices=MASK_PRESETS, help="inpaint: a mask instead of --mask")
    p.add_argument("--resample", type=int, default=1, help="inpaint: RePaint's resamplings per step (U)")
    p.add_argument("--jump", type=int, default=1, help="inpaint: RePaint's jump length (in steps)")
    p.add_argument("--t-start", type=int, help="sdedit: the paper's t to noise the input to (0 … T; default T/2)")
    p.add_argument("--sampler", choices=get_args(Sampler), default="ddim")
    p.add_argument("--steps", type=int, default=0, help="number of steps (default: T for ddpm, 50 for ddim)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM's η (sdedit, inpaint)")
    p.add_argument("--class-label", default="", help="a conditional model's class (name or index)")
    p.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale (1: none)")
    p.add_argument("--seed", type=int, default=0, help="sdedit/inpaint: the noise; interpolate: the first end")
    p.add_argument("--seed-b", type=int, default=1, help="interpolate: the second end")
    p.add_argument("--n", type=int, default=8, help="interpolate: samples in the row, both ends included")
    p.add_argument("--png", type=Path, help="write the result as a PNG grid (invert: x_0, x_T, x̂_0 rows)")
    p.add_argument("--gif", type=Path, help="write the chain (x_t and x̂₀ side by side) as a GIF")
    return p


def _run(args, ckpt, config: SamplingConfig):
    model, shape = ckpt.model, ckpt.sample_shape
    diffusion = Diffusion(ckpt.config.make_schedule())
    if args.method == "interpolate":
        return interpolate(model, diffusion, args.seed, args.seed_b, args.n, config), None
    if args.input is None:
        raise ValueError(f"{args.method} needs --input")
    x0 = check_input(load_array(args.input, shape), shape)
    if args.method == "sdedit":
        t_start = diffusion.num_timesteps // 2 if args.t_start is None else args.t_start
        return sdedit(model, diffusion, x0, t_start, config, seed=args.seed), x0
    if args.method == "invert":
        inv = invert(model, diffusion, x0, config)
        print(f"round-trip RMS error {inv.error:.4f} over {config.steps or 50} DDIM steps each way")
        return SampleResult(inv.reconstruction, inv.trajectory, [], 0.0), torch.cat([x0, inv.x_T.clamp(-1, 1)])
    if (args.mask is None) == (args.mask_preset is None):
        raise ValueError("inpaint needs one of --mask FILE or --mask-preset NAME")
    mask = mask_preset(args.mask_preset, shape, args.seed) if args.mask_preset else load_array(args.mask, shape, "mask")
    result = inpaint(model, diffusion, x0, mask, config, resample=args.resample, jump=args.jump, seed=args.seed)
    return result, x0


def main(argv: list[str] | None = None) -> int:
    from ddpm_core.gif import trajectory_gif
    from ddpm_core.pictures import image_grid, points_frame, save_png
    from ddpm_core.runs import CheckpointError, atomic_write, load_checkpoint
    from ddpm_core.sample import class_index, save_npy

    args = build_parser().parse_args(argv)
    try:
        ckpt = load_checkpoint(args.checkpoint)
        points = ckpt.config.is_points
        config = SamplingConfig(
            sampler=args.sampler, steps=args.steps or None, eta=args.eta, clip_x0=not points,
            class_label=class_index(ckpt, args.class_label), guidance=args.guidance,
        )  # fmt: skip
        result, before = _run(args, ckpt, config)
    except (CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for out in (args.out, args.png, args.gif):
        if out:
            out.parent.mkdir(parents=True, exist_ok=True)
    if args.out:
        atomic_write(args.out, lambda tmp: save_npy(tmp, result.samples))
    if args.png:
        shown = result.samples if before is None else torch.cat([before.float().cpu(), result.samples])
        save_png(points_frame(shown) if points else image_grid(shown, nrow=len(result.samples)), args.png)
    if args.gif:
        data = trajectory_gif(result.trajectory)
        atomic_write(args.gif, lambda tmp: tmp.write_bytes(data))
    print(f"{args.method}: {len(result.samples)} result(s) from {ckpt.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
