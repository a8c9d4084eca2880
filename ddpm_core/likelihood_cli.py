"""The helpers of python -m ddpm_core.likelihood (its main lives in ddpm_core/likelihood.py): the flags, the data a
checkpoint is scored on, the printed report and the JSON. Nothing here imports the library module."""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path
from typing import get_args

import torch
from torch import Tensor

from ddpm_core.data import DatasetError, load_dataset, make_toy
from ddpm_core.diffusion import VarianceType
from ddpm_core.evaluate import REFERENCE_SEED
from ddpm_core.images import bundled_mnist
from ddpm_core.sample import progress_bar as sample_progress_bar

MAX_N = 10_000


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ddpm_core.likelihood",
        description="Bits/dim of a checkpoint's data: Ho et al.'s variational bound, and the ODE likelihood (2D).",
    )
    p.add_argument("--checkpoint", required=True, help="a run folder (uses its EMA weights) or a .safetensors file")
    p.add_argument("--n", type=int, default=500, help="data samples to score (default 500)")
    p.add_argument("--variance", choices=get_args(VarianceType), default="posterior", help="σ_t²: β_t or β̃_t")
    p.add_argument("--full", action="store_true", help="sum every t (default: when N·T is small)")
    p.add_argument("--strata", type=int, help="estimate Σ_t L_{t−1} with one t per stratum (default 50 strata)")
    p.add_argument("--seed", type=int, default=0, help="the noise, the t draws and which samples are scored")
    p.add_argument("--ode-steps", type=int, help="2D models: RK4 steps of the ODE likelihood (default 100)")
    p.add_argument("--json", type=Path, help="write the totals and the per-t terms as JSON")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    return p


def check_args(args: argparse.Namespace, ckpt) -> None:
    """ValueError for flags that do not fit each other or the checkpoint."""
    if not 1 <= args.n <= MAX_N:
        raise ValueError(f"--n must lie in [1, {MAX_N}], got {args.n}")
    if args.full and args.strata is not None:
        raise ValueError("give --full (every t) or --strata K (one t per stratum), not both")
    if args.strata is not None and not 1 <= args.strata <= ckpt.config.T - 1:
        raise ValueError(f"--strata must lie in [1, T − 1 = {ckpt.config.T - 1}], got {args.strata}")
    if args.ode_steps is not None and args.ode_steps < 1:
        raise ValueError(f"--ode-steps must be ≥ 1, got {args.ode_steps}")
    if args.ode_steps is not None and not ckpt.config.is_points:
        shape = "×".join(map(str, ckpt.sample_shape))
        raise ValueError(f"--ode-steps is for 2D point models; {ckpt.path.name} is an image model ({shape})")


def progress_bar(desc: str):
    """sample.progress_bar on a terminal only (none in a pipe or a test), counted in sample-steps."""
    return sample_progress_bar(desc, unit="sample-step", leave=False, disable=None)


def evaluation_data(ckpt, n: int, seed: int) -> tuple[Tensor, Tensor | None, str]:
    """n samples of the checkpoint's own data set, its labels for a class-conditional model (else None) and where
    they come from. 2D toys: fresh points (seeded apart from training, as ddpm_core.evaluate's); the digits: the
    embedded set; MNIST: the data set on disk, else the bundled held-out test digits; others: from the data root."""
    c, shape = ckpt.config, tuple(ckpt.sample_shape)
    if c.is_points:
        return make_toy(c.dataset, n, seed=REFERENCE_SEED + seed), None, f"{n} fresh {c.dataset} points"
    if c.dataset == "digits" and shape == (1, 8, 8):
        ds = load_dataset("digits")
        x, labels, where = ds.x, ds.y, "the 8×8 digits"
    else:
        try:
            size, channels, classes = c.image_size or None, c.channels or None, c.classes or None
            ds = load_dataset(c.dataset, data_root=c.data_root, folder=c.folder or None, image_size=size,
                              resize_mode=c.resize_mode, channels=channels, classes=classes)  # fmt: skip
            x, labels, where = ds.x, ds.y, f"{c.dataset} from {c.data_root}"
        except DatasetError:
            if not (c.dataset == "mnist" and shape == (1, 28, 28)):
                raise
            bundled = bundled_mnist()
            x, labels, where = bundled.x, bundled.y, "the bundled MNIST test digits (held out from training)"
        if tuple(x.shape[1:]) != shape:
            raise DatasetError(f"{c.dataset} loads as {tuple(x.shape[1:])}, not the model's {shape}")
    pick = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]
    y = labels[pick] if ckpt.model_config.num_classes and labels is not None else None
    given = ", each given its own class" if y is not None else ""
    return x[pick], y, f"{len(pick)} of the {len(x)} images of {where}{given}"


def report(ckpt, where: str, bound, ode) -> str:
    """The lines the CLI prints: the bound, its three parts, and for 2D models the ODE NLL and the gap."""
    se = "n/a" if math.isnan(bound.stderr) else f"{bound.stderr:.4f}"
    how = "every t" if bound.full else f"one t in each of {bound.strata} strata"
    decoder = f"discretised, {bound.levels} levels" if bound.levels else "continuous: a density, can be < 0"
    lines = [
        f"{ckpt.path}: {where}; σ_t² = {'β_t' if bound.variance == 'beta' else 'β̃_t'}, {how} "
        f"({bound.evaluations:,} network evaluations, {bound.wall_time:.1f} s)",
        f"bound      {bound.bits_per_dim:.4f} ± {se} bits/dim (L_T + Σ L_t−1 + L_0, Ho et al. eq. 5)",
        f"L_T        {bound.prior:.6f}",
        f"Σ L_t−1    {bound.kl:.4f}  (t = 2 … {len(bound.per_t)})",
        f"L_0        {bound.decoder:.4f}  ({decoder})",
    ]
    if ode is not None:
        ode_se = "n/a" if math.isnan(ode.stderr) else f"{ode.stderr:.4f}"
        lines += [
            f"ODE NLL    {ode.mean_bits_per_dim:.4f} ± {ode_se} bits/dim (probability flow, {ode.steps} RK4 steps, "
            f"{ode.wall_time:.1f} s)",
            f"gap        {bound.bits_per_dim - ode.mean_bits_per_dim:.4f} bits/dim (bound − ODE NLL)",
        ]
    return "\n".join(lines)


def jsonable(obj):
    """A result dataclass as JSON-ready values: tensors as lists, NaN as None."""
    if dataclasses.is_dataclass(obj):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Tensor):
        return [jsonable(v) for v in obj.tolist()]
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj
