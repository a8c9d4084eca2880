"""The variational bound and the ODE likelihood of the bundled checkpoints (ddpm_core.likelihood): how many bits/dim,
and how long an estimate takes on this CPU.

1. Bits/dim of each bundled model's own data: the bound under σ_t² = β̃_t and β_t (every t summed for the 8×8
   digits and the 2D toys, stratified over t for MNIST), ± its standard error, with the exact NLL of the
   probability-flow ODE for the 2D models. For scale: a uniform guess over the pixel levels (log₂ L bits/dim).
2. Seconds per estimate, side by side in this one run, as a ratio to DDIM-50 sampling of as many samples with the
   same model (ratios, not absolute times, compare across days).
3. What the bound adds to the end of a training run (ddpm_core.likelihood_run: σ_t² = β_t, 50 strata, 1000
   samples), against the DDIM-50 sampling of the run's 1000-sample evaluation, and how far the stratified estimate
   lies from the full sum, with geometric strata (likelihood.geometric_strata) and with equal ones.

Usage: python bench/bench_likelihood.py [--n-images 100] [--n-points 300] [--run-end-only] [--write]
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.bench_throughput import matmul_peak  # noqa: E402
from bench.common import flags_line, machine, publish  # noqa: E402
from ddpm_core import likelihood  # noqa: E402
from ddpm_core.diffusion import Diffusion  # noqa: E402
from ddpm_core.likelihood import bound, data_levels, ode_log_likelihood  # noqa: E402
from ddpm_core.likelihood_cli import evaluation_data  # noqa: E402
from ddpm_core.likelihood_run import RUN_BOUND_MAX_N, run_bound, run_bound_data  # noqa: E402
from ddpm_core.runs import load_checkpoint  # noqa: E402
from ddpm_core.sample import SamplingConfig, sample  # noqa: E402

BUNDLED = ROOT / "assets" / "checkpoints"
MODELS = ("digits", "digits_cond", "mnist", "moons", "8gaussians", "swiss_roll")
STRATA = 50


def timed(call) -> tuple[object, float]:
    start = time.perf_counter()
    out = call()
    return out, time.perf_counter() - start


def _pm(value: float, se: float) -> str:
    return f"{value:.3f} ± {se:.3f}"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n-images", type=int, default=100, help="images scored per image model")
    p.add_argument("--n-points", type=int, default=300, help="points scored per 2D model")
    p.add_argument("--run-end-only", action="store_true", help="only the table of the bound at the end of a run")
    p.add_argument("--write", action="store_true", help="append the tables to bench/RESULTS.md")
    args = p.parse_args()
    peak = matmul_peak(torch.get_num_threads(), 2048, 5)
    lines = [
        f"## The variational bound: bench/bench_likelihood.py ({time.strftime('%Y-%m-%d')})",
        "",
        f"{machine()}; CPU flags: {flags_line()}; matmul peak {peak:,.0f} GFLOP/s fp32 (2048²). "
        f"{args.n_images} images or {args.n_points} points of each model's own data (seed 0).",
        "",
    ]
    if not args.run_end_only:
        lines += model_rows(args)
    lines += run_end_rows()
    publish(lines, args.write)


def model_rows(args) -> list[str]:
    lines = [
        "| model | terms | bound, σ_t² = β̃_t | bound, σ_t² = β_t | ODE NLL | uniform guess | s, bound (β̃_t) | "
        "× DDIM-50 sampling | s, ODE | × DDIM-50 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in MODELS:
        ckpt = load_checkpoint(BUNDLED / f"{name}.safetensors")
        model, diffusion = ckpt.model, Diffusion(ckpt.config.make_schedule())
        points = ckpt.config.is_points
        n = args.n_points if points else args.n_images
        x0, y, _ = evaluation_data(ckpt, n, 0)
        levels = data_levels(ckpt.config.dataset)
        full = ckpt.config.dataset != "mnist"
        label = "every t" if full else f"{STRATA} strata"
        config = SamplingConfig("ddim", 50, clip_x0=not points)
        sample(model, diffusion, min(n, 8), ckpt.sample_shape, config)  # warm-up
        _, base = timed(lambda: sample(model, diffusion, n, ckpt.sample_shape, config, seed=0))  # noqa: B023
        results = {}
        for variance in ("posterior", "beta"):
            settings = {"variance": variance, "y": y, "levels": levels, "full": full, "strata": STRATA, "seed": 0}
            results[variance], seconds = timed(lambda s=settings: bound(model, diffusion, x0, **s))  # noqa: B023
            results[variance + "_s"] = seconds
        ode, ode_s = (None, math.nan)
        if points:
            ode, ode_s = timed(lambda: ode_log_likelihood(model, diffusion, x0, y=y))  # noqa: B023
        post, beta = results["posterior"], results["beta"]
        ode_text = "—" if ode is None else _pm(ode.mean_bits_per_dim, ode.stderr)
        uniform = "—" if levels is None else f"{math.log2(levels):.2f}"
        ode_cells = "— | —" if ode is None else f"{ode_s:.1f} | {ode_s / base:.1f}"
        seconds = results["posterior_s"]
        cells = [name, label, _pm(post.bits_per_dim, post.stderr), _pm(beta.bits_per_dim, beta.stderr), ode_text,
                 uniform, f"{seconds:.1f}", f"{seconds / base:.1f}", ode_cells]  # fmt: skip
        lines.append(f"| {' | '.join(cells)} |")
        print(lines[-1], flush=True)
    return [*lines, ""]


def equal_strata(T: int, k: int) -> list[tuple[int, int]]:
    """The partition geometric_strata replaced, for comparison: K strata of t = 2 … T of equal size (to within one)."""
    edges = torch.linspace(1, T, k + 1, dtype=torch.float64).round().long().tolist()
    return list(itertools.pairwise(edges))


def run_end_rows() -> list[str]:
    """The bound a run adds to its evaluation (likelihood_run), timed against that evaluation's DDIM-50 sampling, with
    the same estimate over equal strata and the full sum over t of the same samples."""
    n = RUN_BOUND_MAX_N
    lines = [
        f"The bound at the end of a run (ddpm_core.likelihood_run: σ_t² = β_t, 50 geometric strata, {n} samples), "
        f"against the same estimate over 50 equal strata, the full sum over t of the same {n} samples, and the DDIM-50 "
        f"sampling of the run's {n}-sample evaluation:",
        "",
        "| model | run-end bound | equal strata | full sum | s, run-end bound | s, DDIM-50 × 1000 | bound / sampling |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ("digits", "moons", "swiss_roll"):
        ckpt = load_checkpoint(BUNDLED / f"{name}.safetensors")
        model, diffusion, c = ckpt.model, Diffusion(ckpt.config.make_schedule()), ckpt.config
        x0, y = run_bound_data(c, c.load_data(), n, seed=0)
        config = SamplingConfig("ddim", 50, clip_x0=not c.is_points)
        sample(model, diffusion, 8, ckpt.sample_shape, config)  # warm-up
        _, base = timed(lambda: sample(model, diffusion, n, ckpt.sample_shape, config, seed=0))  # noqa: B023
        quick, seconds = timed(lambda: run_bound(model, diffusion, c, x0, y))  # noqa: B023
        geometric, likelihood.geometric_strata = likelihood.geometric_strata, equal_strata
        try:
            equal = run_bound(model, diffusion, c, x0, y)
        finally:
            likelihood.geometric_strata = geometric
        full = bound(model, diffusion, x0, variance="beta", y=y, levels=data_levels(c.dataset), full=True)
        estimates = [_pm(b.bits_per_dim, b.stderr) for b in (quick, equal, full)]
        cells = [name, *estimates, f"{seconds:.1f}", f"{base:.1f}", f"{seconds / base:.2f}"]
        lines.append(f"| {' | '.join(cells)} |")
        print(lines[-1], flush=True)
    return lines


if __name__ == "__main__":
    main()
