"""Sampling on the bundled digits checkpoint (tiny UNet, linear T=1000), measured side by side in one run.

1. Steps vs quality: DDPM-1000 (σ² = β_t, and σ² = β̃_t) against DDIM (η = 0) at 250/100/50/20/10 steps, n samples
   each, clip x̂₀ on, seed 0: wall time, pixel-FD and classifier confidence, speed-up and FD ratio vs DDPM-1000.
   Goal: DDIM-50 ≥ 15× faster than DDPM-1000 with FD ≤ 1.2× DDPM's.
2. Our loop vs diffusers' DDPMScheduler / DDIMScheduler loop driving the same network, configured to the same
   schedule, steps and spacing (DDPM strided to 50 steps, both variances; DDIM-50), batches 256 and n: time per
   sample, best of 3, and the largest difference of the samples on identical noise.
   Goal: ours ≤ 1.0× their time per sample.

Usage: python bench/bench_sampling.py [--n 1000] [--threads 2] [--ddpm-steps 1000] [--write]
(--write appends the tables to bench/RESULTS.md; --ddpm-steps < 1000 is for quick smoke runs only)
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import machine, publish  # noqa: E402
from ddpm_core.diffusion import Diffusion  # noqa: E402
from ddpm_core.metrics import digits_report  # noqa: E402
from ddpm_core.runs import load_checkpoint  # noqa: E402
from ddpm_core.sample import predict_eps, sample  # noqa: E402

CHECKPOINT = ROOT / "assets" / "checkpoints" / "digits.safetensors"
DDIM_STEPS = (250, 100, 50, 20, 10)
REPEATS = 3
OVERHEAD_REPEATS = 10  # the loops around a free network take milliseconds: more tries for a stable best
# Part 2's loops: (label, our sampler settings, diffusers' DDPM variance_type). DDPM is strided to 50 steps (the time
# per step is what differs) with "leading" spacing, where diffusers adds no noise on the last step either.
DDPM_LOOP = dict(sampler="ddpm", steps=50, spacing="leading")
LOOPS = [
    ("DDPM-50, σ² = β̃_t", {**DDPM_LOOP, "variance": "posterior"}, "fixed_small"),
    ("DDPM-50, σ² = β_t", {**DDPM_LOOP, "variance": "beta"}, "fixed_large"),
    ("DDIM-50, η = 0", dict(sampler="ddim", steps=50, eta=0.0, spacing="trailing"), None),
]


# ----------------------------------------------------------------------------------------------------------------
# 1. Steps vs quality


def quality_rows(model: nn.Module, diffusion: Diffusion, shape: tuple[int, ...], n: int, ddpm_steps: int) -> list[dict]:
    """One row per sampler: wall time, pixel-FD, confidence; the first row (DDPM, σ² = β_t) is the reference."""
    settings = [
        (f"DDPM-{ddpm_steps}, σ² = β_t", dict(sampler="ddpm", steps=ddpm_steps, variance="beta")),
        (f"DDPM-{ddpm_steps}, σ² = β̃_t", dict(sampler="ddpm", steps=ddpm_steps, variance="posterior")),
        *[(f"DDIM-{k}, η = 0", dict(sampler="ddim", steps=k, eta=0.0)) for k in DDIM_STEPS],
    ]
    digits_report(torch.zeros(2, *shape))  # trains the classifier once, outside every timing
    rows = []
    for label, kw in settings:
        result = sample(model, diffusion, n, shape, clip_x0=True, seed=0, record_every=10**9, **kw)
        report = digits_report(result.samples)
        rows.append(dict(label=label, steps=kw["steps"], wall=result.wall_time, **report))
        print(f"  {label}: {result.wall_time:.2f} s, FD {report['pixel_fd']:.3f}, conf {report['confidence']:.3f}")
    for row in rows:
        row["speedup"] = rows[0]["wall"] / row["wall"]
        row["fd_ratio"] = row["pixel_fd"] / rows[0]["pixel_fd"]
    return rows


def quality_table(rows: list[dict], n: int) -> list[str]:
    ddim50 = next((r for r in rows if r["label"].startswith("DDIM-50,")), None)
    verdict = ""
    if ddim50 is not None:
        met = ddim50["speedup"] >= 15 and ddim50["fd_ratio"] <= 1.2
        verdict = (
            f"DDIM-50: {ddim50['speedup']:.1f}× faster, FD {ddim50['fd_ratio']:.2f}× DDPM's "
            f"(goal ≥ 15× and ≤ 1.2×: {'met' if met else 'missed'})."
        )
    return [
        f"1. Steps vs quality — {n} samples per row from the same checkpoint, clip x̂₀ on, seed 0; DDIM with "
        '"trailing" steps; FD is pixel-FD against the real digits, confidence the classifier\'s mean max-probability.',
        "",
        "| sampler | steps | wall time | speed-up | pixel-FD | FD ratio | confidence |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *[
            f"| {r['label']} | {r['steps']} | {r['wall']:.2f} s | {r['speedup']:.1f}× | {r['pixel_fd']:.3f} | "
            f"{r['fd_ratio']:.2f}× | {r['confidence']:.3f} |"
            for r in rows
        ],
        "",
        verdict,
        "",
    ]


# ----------------------------------------------------------------------------------------------------------------
# 2. Our loop vs diffusers' loop


def their_scheduler(kind: str, diffusion: Diffusion, variance: str | None, spacing: str):
    """diffusers' scheduler for our schedule: same betas, T, x̂₀ clipping, step spacing, ᾱ = 1 past the last step."""
    from diffusers import DDIMScheduler, DDPMScheduler

    s = diffusion.schedule
    if s.name != "linear":
        raise ValueError(f"the bench sets diffusers up for a linear schedule, the checkpoint has {s.name!r}")
    common = dict(
        num_train_timesteps=s.num_timesteps,
        beta_schedule="linear",
        beta_start=s.params["beta_start"],
        beta_end=s.params["beta_end"],
        clip_sample=True,
        timestep_spacing=spacing,
    )
    if kind == "ddpm":
        scheduler = DDPMScheduler(variance_type=variance, **common)
    else:
        scheduler = DDIMScheduler(set_alpha_to_one=True, **common)
    torch.testing.assert_close(scheduler.betas.double(), s.betas, rtol=1e-6, atol=1e-7)  # float32 there
    return scheduler


def their_loop(eps_fn: Callable[[Tensor, Tensor], Tensor], scheduler, kind: str, n: int, shape, steps: int) -> Tensor:
    """diffusers' sampling loop: x_T from a seeded generator, then scheduler.step per timestep with that generator
    (DDPM draws its noise the way we do, in the same order: the same seed gives identical noise)."""
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        x = torch.randn((n, *shape), generator=generator)
        scheduler.set_timesteps(steps)
        for t in scheduler.timesteps:
            eps = eps_fn(x, t)
            if kind == "ddpm":
                x = scheduler.step(eps, t, x, generator=generator).prev_sample
            else:  # our DDIM re-derives ε from the clipped x̂₀: use_clipped_model_output
                x = scheduler.step(eps, t, x, eta=0.0, use_clipped_model_output=True).prev_sample
    return x


class Half(nn.Module):
    """ε = x/2: a network that costs next to nothing, so that a loop's own cost per step shows."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.5))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return x * self.scale


def best_of(runs: dict[str, Callable], repeats: int) -> tuple[dict[str, float], dict]:
    """Best wall time of each run over `repeats` rounds, the runs interleaved; and each run's last output."""
    best, out = {name: float("inf") for name in runs}, {}
    for _ in range(repeats):
        for name, run in runs.items():
            tick = time.perf_counter()
            out[name] = run()
            best[name] = min(best[name], time.perf_counter() - tick)
    return best, out


def loop_rows(model: nn.Module, diffusion: Diffusion, shape: tuple[int, ...], batches: list[int]) -> list[dict]:
    """Time per sample of ours and theirs, interleaved and best of REPEATS. "theirs" calls the network on the whole
    batch (a plain wrapper); "theirs, chunked" calls our ε function, so only the loops differ. The loops' own cost
    per step is timed again around Half, a free network."""
    half = Half()

    def plain(x: Tensor, t: Tensor) -> Tensor:
        return model(x, t.expand(len(x)))

    def chunked(x: Tensor, t: Tensor) -> Tensor:
        return predict_eps(model, x, t.expand(len(x)), None)

    rows = []
    for label, kw, variance in LOOPS:
        kind = kw["sampler"]
        scheduler = their_scheduler(kind, diffusion, variance, kw["spacing"])
        scheduler.set_timesteps(kw["steps"])
        assert torch.equal(scheduler.timesteps, diffusion.timesteps(kw["steps"], kw["spacing"])), "steps differ"
        for n in batches:
            runs = {
                "ours": lambda n=n, kw=kw: sample(model, diffusion, n, shape, clip_x0=True, record_every=10**9, **kw),
                "theirs": lambda n=n, s=scheduler, k=kind, kw=kw: their_loop(plain, s, k, n, shape, kw["steps"]),
                "chunked": lambda n=n, s=scheduler, k=kind, kw=kw: their_loop(chunked, s, k, n, shape, kw["steps"]),
            }
            best, out = best_of(runs, REPEATS)
            diff = (out["ours"].samples - out["theirs"]).abs().max().item()
            free = {
                "ours": lambda n=n, kw=kw: sample(half, diffusion, n, shape, clip_x0=True, record_every=10**9, **kw),
                "theirs": lambda n=n, s=scheduler, k=kind, kw=kw: their_loop(half, s, k, n, shape, kw["steps"]),
            }
            loop, _ = best_of(free, OVERHEAD_REPEATS)
            row = dict(label=label, n=n, diff=diff, **{k: v / n * 1e3 for k, v in best.items()})  # ms per sample
            row.update({f"loop_{k}": v / kw["steps"] * 1e6 for k, v in loop.items()})  # µs per step
            rows.append(row)
            print(
                f"  {label}, batch {n}: ours {row['ours']:.3f}, theirs {row['theirs']:.3f}, "
                f"theirs chunked {row['chunked']:.3f} ms/sample; loops alone: ours {row['loop_ours']:.0f}, "
                f"theirs {row['loop_theirs']:.0f} µs/step; max |Δ| {diff:.1e}"
            )
    return rows


def loop_table(rows: list[dict]) -> list[str]:
    worst = max(r["ours"] / r["theirs"] for r in rows)
    worst_loop = max(r["ours"] / r["chunked"] for r in rows)
    worst_cost = max(r["loop_ours"] / r["loop_theirs"] for r in rows)
    return [
        "2. Our loop vs diffusers' — `ddpm_core.sample.sample` against a `DDPMScheduler`/`DDIMScheduler` loop set to "
        "the same schedule (linear 1e-4…0.02, T=1000), steps and spacing, clip x̂₀ on (DDIM: "
        "`use_clipped_model_output`), both driving the checkpoint's network under `torch.inference_mode`, "
        f'interleaved, best of {REPEATS}. "theirs" calls the network on the whole batch; "theirs, chunked" calls '
        "it through our CPU chunking, so only the loops differ. Loop cost: the same loops around a free network "
        f"(ε = x/2), best of {OVERHEAD_REPEATS}. max |Δ|: samples of ours vs theirs from the same seed.",
        "",
        "| sampler | batch | ours ms/sample | theirs ms/sample | ours/theirs | theirs, chunked | ours/chunked | "
        "loop cost ours / theirs | max abs diff |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *[
            f"| {r['label']} | {r['n']} | {r['ours']:.3f} | {r['theirs']:.3f} | {r['ours'] / r['theirs']:.2f}× | "
            f"{r['chunked']:.3f} | {r['ours'] / r['chunked']:.2f}× | {r['loop_ours']:.0f} / {r['loop_theirs']:.0f} "
            f"µs/step | {r['diff']:.1e} |"
            for r in rows
        ],
        "",
        f"Worst ours/theirs: {worst:.2f}× (goal ≤ 1.0×: {'met' if worst <= 1.0 else 'missed'}); the loops alone "
        f"(ours/chunked): worst {worst_loop:.2f}×; loop cost per step, ours/theirs: worst {worst_cost:.2f}×.",
        "",
    ]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=1000, help="samples per row in part 1; part 2 uses batches 256 and n")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--ddpm-steps", type=int, default=1000, help="DDPM's steps in part 1 (< 1000 only for smoke runs)")
    p.add_argument("--write", action="store_true", help="append the tables to bench/RESULTS.md")
    args = p.parse_args()
    if args.n < 2:
        p.error("--n must be at least 2 (the FD needs two samples)")
    torch.set_num_threads(args.threads)
    ckpt = load_checkpoint(CHECKPOINT)
    model, shape = ckpt.model, ckpt.sample_shape
    diffusion = Diffusion(ckpt.config.make_schedule())
    print(f"machine: {machine()}")
    start = time.perf_counter()
    print("1. steps vs quality")
    quality = quality_rows(model, diffusion, shape, args.n, args.ddpm_steps)
    print("2. our loop vs diffusers'")
    loops = loop_rows(model, diffusion, shape, sorted({min(256, args.n), args.n}))
    lines = [
        f"## Sampling — {time.strftime('%Y-%m-%d')} — {machine()}",
        "",
        f"`python bench/bench_sampling.py --n {args.n} --threads {args.threads}"
        + (f" --ddpm-steps {args.ddpm_steps}" if args.ddpm_steps != 1000 else "")
        + "` — the bundled "
        "`assets/checkpoints/digits.safetensors` (tiny UNet, linear T=1000).",
        "",
        *quality_table(quality, args.n),
        *loop_table(loops),
    ]
    publish(lines, args.write)
    print(f"(bench wall time {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
