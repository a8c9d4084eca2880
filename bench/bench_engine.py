"""Engine speed targets on this machine, measured side by side in one run.

1. Time to quality: the default digits recipe (`TrainConfig()`), with pixel-FD and classifier confidence of 1000
   DDIM-50 samples from the EMA weights at 15, 30, 60 and 120 s of training wall time (the clock is paused while
   evaluating). Goal: FD ≤ 0.3 within 60 s.
2. Sampling: 1000 digits with DDIM-50 from the final model, best of 3. Goal: ≤ 5 s.

Usage: python bench/bench_engine.py [--budgets 15 30 60 120] [--write]   (--write appends to bench/RESULTS.md)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import machine, publish  # noqa: E402
from ddpm_core.config import TrainConfig  # noqa: E402
from ddpm_core.metrics import digits_report  # noqa: E402
from ddpm_core.sample import sample  # noqa: E402
from ddpm_core.trainer import Trainer  # noqa: E402


def ddim_1000(trainer: Trainer) -> tuple[torch.Tensor, float]:
    result = sample(
        trainer.ema.model,
        trainer.diffusion,
        1000,
        tuple(trainer.data.sample_shape),
        sampler="ddim",
        steps=50,
        clip_x0=True,
        seed=0,
        record_every=10**9,
    )
    return result.samples, result.wall_time


def time_to_quality(budgets: list[float]) -> tuple[list[dict], Trainer]:
    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig(out=tmp, steps=10**9, preview_every=0, checkpoint_every=0)
        trainer = Trainer(config, Path(tmp), log=lambda *_: None)
        rows, train_time = [], 0.0
        batches = trainer.batches()
        for budget in budgets:
            while train_time < budget:
                tick = time.perf_counter()
                trainer.train_step(next(batches))
                train_time += time.perf_counter() - tick
            samples, _ = ddim_1000(trainer)  # clock paused
            report = digits_report(samples)
            rows.append(
                {
                    "budget_s": budget,
                    "step": trainer.step,
                    "train_s": train_time,
                    "pixel_fd": report["pixel_fd"],
                    "confidence": report["confidence"],
                }
            )
            print(
                f"  {budget:>5.0f} s: step {trainer.step:>5}, FD {report['pixel_fd']:.3f}, "
                f"confidence {report['confidence']:.3f}",
                flush=True,
            )
        return rows, trainer


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--budgets", type=float, nargs="+", default=[15, 30, 60, 120])
    p.add_argument("--write", action="store_true", help="append the tables to bench/RESULTS.md")
    args = p.parse_args()
    print(f"machine: {machine()}")
    print("1. time to quality, default digits recipe (TrainConfig())")
    rows, trainer = time_to_quality(args.budgets)
    times = [ddim_1000(trainer)[1] for _ in range(3)]
    ips = trainer.config.batch_size * rows[-1]["step"] / rows[-1]["train_s"]

    lines = [
        f"## Engine — {time.strftime('%Y-%m-%d')} — {machine()}",
        "",
        "`python bench/bench_engine.py` — default digits recipe (tiny UNet, linear T=1000, lr 2e-3, batch 128, "
        "EMA 0.999); FD and confidence of 1000 DDIM-50 samples from the EMA weights; the clock stops while "
        "evaluating.",
        "",
        "| training wall time | steps | pixel-FD (goal ≤ 0.3 by 60 s) | classifier confidence |",
        "| --- | --- | --- | --- |",
        *[f"| {r['budget_s']:.0f} s | {r['step']} | {r['pixel_fd']:.3f} | {r['confidence']:.3f} |" for r in rows],
        "",
        f"Training throughput: {ips:,.0f} images/s. Sampling 1000 digits with DDIM-50: best of 3 "
        f"{min(times):.2f} s (runs: {', '.join(f'{t:.2f}' for t in times)}; goal ≤ 5 s).",
        "",
    ]
    publish(lines, args.write)


if __name__ == "__main__":
    main()
