"""The Forward process page's recompute times, for a 256×256 RGB photo, a 64×64 one and an 8×8 digit.

1. Moving t: `forward_frame` — x_t for a new t (fixed ε) plus its histogram. Goal: ≤ 50 ms at 256×256.
   Also with the PNG of x_t the page shows (`shown_frame`, ≥ 256 px), as the page's cached call does.
2. Once per x_0 / schedule / seed: the strip of 8 x_t with its PNG; and the chain-vs-closed comparison at the
   worst t = T − 1 (1000 q_steps; goal ≤ 1 s).

Each timing is the median of many runs, each at a t not seen before in that series. The schedule is linear, T = 1000.

Usage: python bench/bench_forward.py [--runs 200] [--write]   (--write appends the table to bench/RESULTS.md)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import machine, publish  # noqa: E402
from ddpm_core.data import load_dataset  # noqa: E402
from ddpm_core.forward import (  # noqa: E402
    chain_vs_closed,
    forward_frame,
    shown_frame,
    strip,
    strip_timesteps,
)
from ddpm_core.images import sample_photo  # noqa: E402
from ddpm_core.pictures import png_bytes, strip_picture  # noqa: E402
from ddpm_core.schedules import make_schedule  # noqa: E402


def median_ms(fn: Callable[[int], object], runs: int, T: int) -> float:
    """Median wall time of fn(t) in ms over `runs` calls, t a fresh step each time (a permutation of 0 … T-1)."""
    ts = torch.randperm(T, generator=torch.Generator().manual_seed(0)).tolist()
    fn(ts[-1])  # warm-up: first-call allocations and lazy imports are not what a slider move costs
    times = []
    for i in range(runs):
        start = time.perf_counter()
        fn(ts[i % (T - 1)])
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=200, help="runs per timing of a slider move")
    p.add_argument("--write", action="store_true", help="append the table to bench/RESULTS.md")
    args = p.parse_args()
    schedule = make_schedule("linear", 1000)
    T, ts = schedule.T, strip_timesteps(schedule.T)
    images = {
        "photo 3×256×256": sample_photo("china", 256),
        "photo 3×64×64": sample_photo("china", 64),
        "digit 1×8×8": load_dataset("digits").x[0],
    }
    print(f"machine: {machine()}")
    rows = []
    for name, x0 in images.items():
        frame = median_ms(lambda t, x0=x0: forward_frame(schedule, x0, t, 0), args.runs, T)
        shown = median_ms(lambda t, x0=x0: shown_frame(schedule, x0, t, 0), args.runs, T)
        strip_ms = median_ms(lambda t, x0=x0: png_bytes(strip_picture(strip(schedule, x0, ts, t), ts)), 10, T)
        chain = median_ms(lambda t, x0=x0: chain_vs_closed(schedule, x0, T - 1, t), 5, T)
        rows.append(f"| {name} | {frame:.1f} | {shown:.1f} | {strip_ms:.0f} | {chain:.0f} |")
        print(rows[-1])

    lines = [
        f"## Forward process page — {time.strftime('%Y-%m-%d')} — {machine()}",
        "",
        f"`python bench/bench_forward.py --runs {args.runs}` — linear schedule, T = 1000; medians in ms. A slider "
        "move recomputes x_t (fixed ε) and its histogram (goal ≤ 50 ms at 256×256), and the picture the page shows; "
        "the strip (8 x_t and its PNG) and the chain (64 chains of 1000 q_steps on a copy of ≤ 30,000 values, plus "
        "64 closed-form draws; goal ≤ 1 s) are recomputed when x_0, the schedule or the seed change.",
        "",
        "| x_0 | x_t + histogram | + picture | strip + PNG | chain vs closed at t = T−1 |",
        "| --- | --- | --- | --- | --- |",
        *rows,
        "",
    ]
    publish(lines, args.write)


if __name__ == "__main__":
    main()
