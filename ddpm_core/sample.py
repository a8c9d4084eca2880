"""Sampling: run the reverse chain from x_T ~ N(0, I) with DDPM (ancestral) or DDIM steps.

``sample_progressive`` is a generator of one StepRecord per step; the GIF, the progress bar and the app all consume
it. ``sample`` keeps the final samples and the records at an interval.

CLI: python -m ddpm_core.sample --checkpoint runs/digits --sampler ddim --steps 50 --n 64 --seed 0 \\
        --gif out.gif --png out.png --npy out.npy
"""

from __future__ import annotations

import argparse
import io
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, NamedTuple, get_args

import numpy as np
import torch
from torch import Tensor, nn

from ddpm_core.devices import for_sampling
from ddpm_core.diffusion import Diffusion, Spacing, Step, VarianceType
from ddpm_core.objectives import output_to_eps, prediction_of

Sampler = Literal["ddpm", "ddim"]
CPU_CHUNK = 500  # samples per forward pass on the CPU


class StepRecord(NamedTuple):
    """One step of the reverse process, as the sampler yields it. Like the rest of the core it holds the step's
    index i (t = i + 1 in the paper's notation); views show the paper's t through the t property."""

    index: int  # of x_t's timestep, T − 1 … 0; −1 for the final x_0
    x_t: Tensor  # (N, C, H, W) in about [-1, 1] (may overshoot), or (N, 2) points
    x0_pred: Tensor  # same shape: the model's current estimate x̂₀

    @property
    def t(self) -> int:
        """The paper's t of x_t: T … 1, and 0 for the final x_0."""
        return self.index + 1


@dataclass
class SampleResult:
    samples: Tensor  # (N, C, H, W) or (N, D) on the CPU, float32, in the data's scale
    trajectory: list[StepRecord]  # recorded steps, CPU tensors, from x_T down to the final x_0 (index −1)
    timesteps: list[int]  # the step indices visited, descending
    wall_time: float  # seconds


@dataclass(frozen=True)
class SamplingConfig:
    """How to sample: the sampler and everything that steers it, checked in one place. The CLI, the Sample page, the
    sampler grids (ddpm_core.compare), evaluation and the trainer's previews all sample through it.

    steps: None for the sampler's default, T for DDPM and 50 for DDIM (0 means None). variance: DDPM's σ_t², β̃_t
    ("posterior", the default everywhere) or β_t ("beta"). eta: DDIM's η. class_label: the class every sample is
    asked for, for a class-conditional model (None: unconditional, or per-sample labels through sample()'s y).
    guidance: the classifier-free guidance scale (1: plain conditional sampling).

    The settings that need no schedule are checked on construction; resolved(T) checks the steps against T.
    """

    sampler: Sampler = "ddpm"
    steps: int | None = None
    eta: float = 0.0
    variance: VarianceType = "posterior"
    clip_x0: bool = True
    spacing: Spacing = "trailing"
    class_label: int | None = None
    guidance: float = 1.0

    def __post_init__(self):
        if self.sampler not in get_args(Sampler):
            raise ValueError(f"unknown sampler {self.sampler!r}; valid values: {', '.join(get_args(Sampler))}")
        if self.sampler == "ddim" and not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"eta must lie in [0, 1], got {self.eta}")
        for value, allowed, what in ((self.variance, VarianceType, "variance"), (self.spacing, Spacing, "spacing")):
            if value not in get_args(allowed):
                raise ValueError(f"unknown {what} {value!r}; valid values: {', '.join(get_args(allowed))}")
        label = self.class_label
        if label is not None and (isinstance(label, bool) or not isinstance(label, int) or label < 0):
            raise ValueError(f"class_label must be a class index ≥ 0 or None, got {label!r}")
        if not math.isfinite(self.guidance):
            raise ValueError(f"guidance must be a finite number, got {self.guidance}")

    def resolved(self, T: int) -> SamplingConfig:
        """This config checked against a schedule of T steps, with its steps filled in; ValueError when the steps do
        not fit."""
        steps = self.steps if self.steps else (T if self.sampler == "ddpm" else min(50, T))
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= T:
            raise ValueError(f"steps must lie in [1, T = {T}], got {steps}")
        return self if steps == self.steps else replace(self, steps=steps)


def sampling_config(config: SamplingConfig | None, settings: dict) -> SamplingConfig:
    """A SamplingConfig, or one built from keyword settings (sampler=…, steps=…) where a caller gives those."""
    if config is not None and settings:
        raise TypeError(f"give a SamplingConfig or keyword settings, not both: {', '.join(settings)}")
    return config if config is not None else SamplingConfig(**settings)


@torch.inference_mode()
def sample_progressive(
    model: nn.Module,
    diffusion: Diffusion,
    n: int,
    shape: tuple[int, ...],
    config: SamplingConfig | None = None,
    *,
    seed: int = 0,
    y: Tensor | None = None,
    **settings,
) -> Iterator[StepRecord]:
    """Yield StepRecord(i, x_t, x̂₀) for each step index i from T − 1 down, then StepRecord(−1, x_0, x_0).

    model: the network f_θ(x, t[, y]) on the device to sample on, predicting what its `config.prediction` says
    (ε, x_0 or v; converted to ε here); diffusion on the same device. shape: one sample's shape, e.g. (1, 8, 8) or
    (2,). y: (n,) class labels for a conditional model (None: unconditional, the null label). guidance: the
    classifier-free guidance scale s of ε̃ = ε_θ(x, ∅) + s (ε_θ(x, y) − ε_θ(x, ∅)) (Ho & Salimans 2022; their w is
    s − 1): 1 is plain conditional sampling, 0 unconditional. Tensors are yielded on the model's device (no host
    sync per step).
    """
    c = sampling_config(config, settings).resolved(diffusion.num_timesteps)
    device = next(model.parameters()).device
    y = labels_for(model, c, y, n, device)
    generator = torch.Generator(device).manual_seed(seed)
    x = torch.randn((n, *shape), generator=generator, device=device)
    yield from reverse_chain(model, diffusion, x, diffusion.timesteps(c.steps, c.spacing).tolist(), c, y, generator)


def reverse_chain(
    model: nn.Module,
    diffusion: Diffusion,
    x: Tensor,
    timesteps: list[int],
    config: SamplingConfig,
    y: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Iterator[StepRecord]:
    """Run the reverse chain from x (at timesteps[0]) through the descending timesteps, one reverse_step each; yield
    StepRecord(i, x_i, x̂₀) per step, then StepRecord(−1, x_0, x_0). SDEdit and interpolation start it from their
    own x (ddpm_core.edit)."""
    for i, t in enumerate(timesteps):
        t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        step = reverse_step(model, diffusion, x, t, t_prev, config, y, generator)
        yield StepRecord(t, x, step.x0_pred)
        x = step.x_prev
    yield StepRecord(-1, x, x)


def reverse_step(
    model: nn.Module,
    diffusion: Diffusion,
    x: Tensor,
    t: int,
    t_prev: int,
    config: SamplingConfig,
    y: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Step:
    """One step of config's sampler from step t to t_prev: the network's (guided) output, converted to ε, then
    Diffusion.ddpm_step (Ho et al. eq. 11) or ddim_step (Song et al. eq. 12). y: (N,) labels on x's device."""
    c = config
    eps = guided_eps(model, diffusion, x, t, y, c.guidance)
    if c.sampler == "ddpm":
        return diffusion.ddpm_step(eps, t, x, t_prev, generator=generator, clip_x0=c.clip_x0, variance=c.variance)
    return diffusion.ddim_step(eps, t, x, t_prev, generator=generator, clip_x0=c.clip_x0, eta=c.eta)


def guided_eps(model: nn.Module, diffusion: Diffusion, x: Tensor, t: int, y: Tensor | None, guidance: float) -> Tensor:
    """ε_θ(x, t[, y]) at one step for the whole batch: the network's output, guided (_guided_output) and converted to
    ε from what the network predicts (objectives.output_to_eps)."""
    output = _guided_output(model, x, torch.full((len(x),), t, device=x.device, dtype=torch.long), y, guidance)
    return output_to_eps(diffusion, prediction_of(model), output, x, t)


def labels_for(model: nn.Module, config: SamplingConfig, y: Tensor | None, n: int, device) -> Tensor | None:
    """The (n,) labels to sample on device: y, or config.class_label for every sample (checked against the model's
    classes), or None (unconditional)."""
    y = _labels(model, config.class_label, y, n)
    if y is not None and len(y) != n:
        raise ValueError(f"y must hold one label per sample ({n}), got {len(y)}")
    return None if y is None else y.to(device)


def _labels(model: nn.Module, class_label: int | None, y: Tensor | None, n: int) -> Tensor | None:
    """The (n,) labels to sample: y, or config.class_label for every sample (checked against the model's classes)."""
    if class_label is None:
        return y
    if y is not None:
        raise TypeError("give per-sample labels y or config.class_label, not both")
    num_classes = model.config.num_classes
    if class_label >= num_classes:
        what = f"classes 0 … {num_classes - 1}" if num_classes else "no classes (it is unconditional)"
        raise ValueError(f"class_label {class_label} is not a class of this model, which has {what}")
    return torch.full((n,), class_label, dtype=torch.long)


def _guided_output(model: nn.Module, x: Tensor, t: Tensor, y: Tensor | None, guidance: float) -> Tensor:
    """f_θ(x, t, y), or with guidance ≠ 1 the mix f(∅) + s (f(y) − f(∅)) of classifier-free guidance (Ho & Salimans
    2022), in one pass over both label sets (the
    conversion to ε is affine in the output with weights summing to 1, so mixing outputs is mixing ε's)."""
    if y is None or guidance == 1.0:
        return predict_eps(model, x, t, y)
    null = torch.full_like(y, model.config.num_classes)
    both = predict_eps(model, torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]))
    cond, uncond = both.chunk(2)
    return uncond + guidance * (cond - uncond)


def predict_eps(model: nn.Module, x: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
    """ε_θ(x, t[, y]) for the batch; on the CPU in chunks whose activations stay in cache (1000 digits: ~25% faster
    than one pass)."""
    size = CPU_CHUNK if x.device.type == "cpu" else len(x)
    parts = []
    for i in range(0, len(x), size):
        part = slice(i, i + size)
        parts.append(model(x[part], t[part]) if y is None else model(x[part], t[part], y=y[part]))
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def sample(
    model: nn.Module,
    diffusion: Diffusion,
    n: int,
    shape: tuple[int, ...],
    config: SamplingConfig | None = None,
    *,
    seed: int = 0,
    y: Tensor | None = None,
    record_every: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    **settings,
) -> SampleResult:
    """Run sample_progressive to the end, with config (or the same settings as keywords: sampler="ddim", …).
    record_every: keep every k-th step (default: about 60 frames), always the first and the final one.
    progress(done, total) is called after each step."""
    start = time.perf_counter()
    c = sampling_config(config, settings).resolved(diffusion.num_timesteps)
    records = sample_progressive(model, diffusion, n, shape, c, seed=seed, y=y)
    return collect(records, c.steps, start, record_every, progress)


def collect(
    records: Iterator[StepRecord],
    total: int,
    start: float,
    record_every: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SampleResult:
    """Run a chain of StepRecords (total steps, then the final x_0) to the end: keep every k-th record (default:
    about 60 frames; always the first and the final one) on the CPU, call progress(done, total) after each step.
    start: the time.perf_counter() the call began at."""
    every = record_every or max(1, total // 60)
    trajectory, timesteps, last = [], [], None
    for i, record in enumerate(records):
        final = record.index < 0
        if not final:
            timesteps.append(record.index)
        if i % every == 0 or final:
            trajectory.append(StepRecord(record.index, record.x_t.float().cpu(), record.x0_pred.float().cpu()))
        if progress is not None and not final:
            progress(min(i + 1, total), total)
        last = record
    return SampleResult(last.x_t.float().cpu(), trajectory, timesteps, time.perf_counter() - start)


# ----------------------------------------------------------------------------------------------------------------
# CLI


def every_class(n: int, num_classes: int, device=None) -> Tensor | None:
    """0, 1, …, K−1, 0, 1, … (n,): every class in turn (a grid row per class), or None for an unconditional model
    (num_classes = 0)."""
    return torch.arange(n, device=device) % num_classes if num_classes else None


def class_index(ckpt, label: str) -> int | None:
    """The index of a conditional checkpoint's class given by name or index ("" → None, unconditional)."""
    if not label:
        return None
    classes = ckpt.classes
    if not ckpt.model_config.num_classes:
        raise ValueError(f"{ckpt.path} is not class-conditional: sample it without a class")
    if label in classes:
        index = classes.index(label)
    elif label.isdigit() and int(label) < ckpt.model_config.num_classes:
        index = int(label)
    else:
        raise ValueError(f"unknown class {label!r}; this model knows {', '.join(classes) or 'none'}")
    return index


def npy_bytes(samples: Tensor) -> bytes:
    """samples as the bytes of a float32 .npy file (what --npy writes and the Edit page's downloads serve)."""
    buffer = io.BytesIO()
    np.save(buffer, samples.detach().cpu().numpy().astype(np.float32))
    return buffer.getvalue()


def save_npy(path: Path, samples: Tensor) -> None:
    Path(path).write_bytes(npy_bytes(samples))  # not np.save(path), which would append ".npy" to a temp name


def progress_bar(desc: str, unit: str = "step", **tqdm_options):
    """A tqdm bar for a CLI: the progress(done, total) callback the samplers take, and the bar's close()."""
    from tqdm import tqdm

    bar = tqdm(total=1, desc=desc, unit=unit, **tqdm_options)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    return progress, bar.close


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ddpm_core.sample", description="Sample from a trained DDPM.")
    p.add_argument("--checkpoint", required=True, help="a run folder (uses its EMA weights) or a .safetensors file")
    p.add_argument("--raw", action="store_true", help="use the raw weights of a run folder instead of the EMA ones")
    p.add_argument("--sampler", choices=get_args(Sampler), default="ddpm")
    p.add_argument("--steps", type=int, default=0, help="number of steps (default: T for ddpm, 50 for ddim)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM's η: 0 deterministic, 1 DDPM-like")
    p.add_argument(
        "--variance",
        choices=get_args(VarianceType),
        default="posterior",
        help="DDPM's σ_t²: beta (β_t, Ho et al.'s) or posterior (β̃_t)",
    )
    p.add_argument(
        "--clip-x0",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="clip x̂₀ to [-1, 1] (default: on for images, off for 2D points)",
    )
    p.add_argument("--spacing", choices=get_args(Spacing), default="trailing", help="how strided steps are chosen")
    p.add_argument("--n", type=int, default=64, help="number of samples")
    p.add_argument("--class-label", default="", help="a conditional model's class (name or index); default: none")
    p.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale (1: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--record-every", type=int, default=0, help="GIF frame every k steps (default: ~60 frames)")
    p.add_argument("--gif", type=Path, help="write the trajectory (x_t and x̂₀ side by side) as a GIF")
    p.add_argument("--png", type=Path, help="write the final samples as a PNG grid")
    p.add_argument("--npy", type=Path, help="write the raw samples, float32 (N,C,H,W) or (N,2), in [-1, 1] scale")
    return p


def main(argv: list[str] | None = None) -> int:
    from ddpm_core.devices import resolve_device
    from ddpm_core.gif import trajectory_gif
    from ddpm_core.pictures import image_grid, points_frame, save_png
    from ddpm_core.runs import CheckpointError, atomic_write, load_checkpoint

    parser = build_parser()
    args = parser.parse_args(argv)
    if not 1 <= args.n <= 10_000:
        parser.error(f"--n must lie in [1, 10000], got {args.n}")
    try:
        ckpt = load_checkpoint(args.checkpoint, prefer_ema=not args.raw)
        device = resolve_device(args.device)
        diffusion = Diffusion(ckpt.config.make_schedule()).to(device)
        points = ckpt.config.is_points
        config = SamplingConfig(
            sampler=args.sampler, steps=args.steps or None, eta=args.eta, variance=args.variance,
            clip_x0=(not points) if args.clip_x0 is None else args.clip_x0, spacing=args.spacing,
            class_label=class_index(ckpt, args.class_label), guidance=args.guidance,
        ).resolved(diffusion.num_timesteps)  # before the bar: a clean error line  # fmt: skip
        progress, close = progress_bar(f"{args.sampler} sampling")
        result = sample(
            for_sampling(ckpt.model.to(device), ckpt.config),  # bf16 where it trained so and this CPU has it
            diffusion,
            args.n,
            ckpt.sample_shape,
            config,
            seed=args.seed,
            record_every=args.record_every or None,
            progress=progress,
        )
        close()
    except (CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for out in (args.npy, args.png, args.gif):
        if out:  # atomic_write needs the folder; --png results/grid.png may name a new one
            out.parent.mkdir(parents=True, exist_ok=True)
    if args.npy:
        atomic_write(args.npy, lambda tmp: save_npy(tmp, result.samples))
    if args.png:
        save_png(points_frame(result.samples) if points else image_grid(result.samples), args.png)
    if args.gif:
        data = trajectory_gif(result.trajectory)
        atomic_write(args.gif, lambda tmp: tmp.write_bytes(data))
    steps = f"{len(result.timesteps)} {args.sampler} steps"
    print(f"{args.n} samples in {result.wall_time:.2f} s ({steps}) from {ckpt.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
