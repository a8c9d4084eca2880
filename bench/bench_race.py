"""Time to quality: the course's recipe against our default digits recipe, same data, same CPU threads.

Both train on the 1797 scikit-learn digits, one after the other in one process. At each training wall-time budget the
clock stops and n samples (default 1000) from each recipe's own sampler are scored by pixel-FD and classifier
confidence (ddpm_core.metrics.digits_report), in [-1, 1] 8×8 space:
- course (bench/course_recipe.py): its tiny LayerNorm UNet, Adam 1e-3, no EMA; 1000 ancestral steps, σ² = β_t,
  unclipped.
- ours: TrainConfig() through ddpm_core.trainer.Trainer; DDIM-50 from the EMA weights, x̂₀ clipped (as bench_engine.py).
Ours is also measured at a few early budgets, so that the time it needs to reach the course's best FD can be found.
Goals: ours FD ≤ 0.3 within 60 s (ideally 30 s); (course's time to its best FD) / (our time to reach it) ≥ 20×.
Writes race_fd.svg (FD vs training time, log-log), course_samples.png and ours_samples.png to --out.

Usage: python bench/bench_race.py [--budgets 15 30 60 120 240 480] [--early 0.5 1 1.5 2 3 4 8] [--threads 2]
           [--n-samples 1000] [--course-size 8] [--out bench/race] [--write]   (--write appends to bench/RESULTS.md)
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import machine, publish  # noqa: E402
from bench.course_recipe import CourseRecipe  # noqa: E402
from bench.course_recipe import T as COURSE_T  # noqa: E402
from ddpm_core.config import TrainConfig  # noqa: E402
from ddpm_core.data import load_dataset  # noqa: E402
from ddpm_core.metrics import digits_classifier, digits_report  # noqa: E402
from ddpm_core.pictures import image_grid, save_png  # noqa: E402
from ddpm_core.sample import sample  # noqa: E402
from ddpm_core.trainer import Trainer  # noqa: E402

GOAL_FD, GOAL_FD_BY, GOAL_RATIO = 0.3, 60.0, 20.0
COLORS = {"course": "#d62728", "ours": "#1f77b4"}
GRID_N = 100  # samples in each PNG grid (10 × 10)


# ----------------------------------------------------------------------------------------------------------------
# Measuring


def value_stats(samples: torch.Tensor) -> dict:
    """Range of the raw samples (N, 1, 8, 8) and the fraction of pixel values outside [-1, 1] (non-finite included)."""
    finite = samples[torch.isfinite(samples)]
    outside = (~torch.isfinite(samples)) | (samples.abs() > 1)
    return {
        "min": finite.min().item() if finite.numel() else math.nan,
        "max": finite.max().item() if finite.numel() else math.nan,
        "outside": outside.float().mean().item(),
        "nonfinite": (~torch.isfinite(samples)).float().mean().item(),
    }


def evaluate(samples: torch.Tensor) -> dict:
    """digits_report of the samples (NaN pixels → 0, ±inf → ±1; the metric clips to [-1, 1]) plus value_stats."""
    report = digits_report(torch.nan_to_num(samples, nan=0.0, posinf=1.0, neginf=-1.0))
    return {"pixel_fd": report["pixel_fd"], "confidence": report["confidence"], **value_stats(samples)}


def race(
    name: str, train_step: Callable, batches: Iterator, draw: Callable[[], torch.Tensor], budgets: list[float]
) -> tuple[list[dict], torch.Tensor]:
    """Train until each budget (seconds of training, cumulative), then evaluate draw() with the clock stopped."""
    rows, train_s, steps, samples = [], 0.0, 0, None
    for budget in budgets:
        while train_s < budget:
            tick = time.perf_counter()
            train_step(next(batches))
            train_s += time.perf_counter() - tick
            steps += 1
        tick = time.perf_counter()
        samples = draw()
        row = {"budget_s": budget, "steps": steps, "train_s": train_s, **evaluate(samples)}
        row["eval_s"] = time.perf_counter() - tick
        rows.append(row)
        print(
            f"  {name} {budget:>5g} s: step {steps:>6}, FD {row['pixel_fd']:.3f}, "
            f"confidence {row['confidence']:.3f}, range [{row['min']:.3g}, {row['max']:.3g}], "
            f"outside [-1,1] {row['outside']:.1%}, eval {row['eval_s']:.1f} s",
            flush=True,
        )
    return rows, samples


def ours_draw(trainer: Trainer, n: int) -> Callable[[], torch.Tensor]:
    shape = tuple(trainer.data.sample_shape)
    settings = {"sampler": "ddim", "steps": 50, "clip_x0": True, "seed": 0, "record_every": 10**9}
    return lambda: sample(trainer.ema.model, trainer.diffusion, n, shape, **settings).samples


def course_eval_estimate(recipe: CourseRecipe, n: int, steps: int = 10) -> float:
    """Seconds for one course evaluation (n samples × T steps), from timing `steps` sampler steps after a warm-up
    one."""
    recipe.sample(n, steps=1)
    tick = time.perf_counter()
    recipe.sample(n, steps=steps)
    return (time.perf_counter() - tick) / steps * COURSE_T


def time_to_reach(rows: list[dict], target: float, key: str = "pixel_fd") -> tuple[float | None, str]:
    """Training seconds at which the FD curve (each row's key) first reaches target: linear in FD between the two
    measured points around the crossing, on a log-time axis. Returns (seconds, "") or (first time, "≤") when the first
    point is already there, or (None, "not reached")."""
    for i, row in enumerate(rows):
        if row[key] <= target:
            if i == 0:
                return row["train_s"], "≤"
            a = rows[i - 1]
            frac = (a[key] - target) / (a[key] - row[key])
            log_t = math.log(a["train_s"]) + frac * (math.log(row["train_s"]) - math.log(a["train_s"]))
            return math.exp(log_t), ""
    return None, "not reached"


# ----------------------------------------------------------------------------------------------------------------
# The plot, as a hand-written SVG (no plotting library in the venv)

W, H, LEFT, RIGHT, TOP, BOTTOM = 640, 400, 70, 20, 40, 50


def _log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks in [lo, hi] (both > 0)."""
    ticks = []
    for k in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        ticks += [m * 10.0**k for m in (1, 2, 5) if lo <= m * 10.0**k <= hi]
    return ticks


def fd_plot_svg(curves: list[tuple[str, str, list[tuple[float, float]]]], goal_fd: float, goal_s: float) -> str:
    """FD (log) vs training seconds (log) of each curve (label, colour, [(seconds, FD), …]); dashed lines mark the
    goal FD and the goal time; the legend sits bottom left, where neither curve goes early on."""
    ts = [t for *_, pts in curves for t, _ in pts]
    fds = [max(f, 1e-3) for *_, pts in curves for _, f in pts] + [goal_fd]
    x_lo, x_hi, y_lo, y_hi = min(ts) / 1.3, max(ts) * 1.3, min(fds) / 1.5, max(fds) * 1.5
    x0, x1, y0, y1 = LEFT, W - RIGHT, H - BOTTOM, TOP  # the plot area's edges, y0 at the bottom

    def px(t: float) -> float:
        return x0 + (math.log(t) - math.log(x_lo)) / (math.log(x_hi) - math.log(x_lo)) * (x1 - x0)

    def py(f: float) -> float:
        return y0 - (math.log(max(f, 1e-3)) - math.log(y_lo)) / (math.log(y_hi) - math.log(y_lo)) * (y0 - y1)

    def line(xa, ya, xb, yb, style: str) -> str:
        return f'<line x1="{xa:.1f}" y1="{ya:.1f}" x2="{xb:.1f}" y2="{yb:.1f}" {style}/>'

    def text(x, y, s: str, style: str = "") -> str:
        return f'<text x="{x:.1f}" y="{y:.1f}" {style}>{s}</text>'

    grid, dashed, middle = 'stroke="#e5e5e5"', 'stroke="gray" stroke-dasharray="6 4"', 'text-anchor="middle"'
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{W}" height="{H}" fill="white"/>',
        text(W / 2, 22, "Digits: pixel-FD vs training wall time", f'{middle} font-size="14"'),
    ]
    for t in _log_ticks(x_lo, x_hi):
        out += [line(px(t), y1, px(t), y0, grid), text(px(t), y0 + 16, f"{t:g}", middle)]
    for f in _log_ticks(y_lo, y_hi):
        out += [line(x0, py(f), x1, py(f), grid), text(x0 - 6, py(f) + 4, f"{f:g}", 'text-anchor="end"')]
    out += [
        f'<rect x="{x0}" y="{y1}" width="{x1 - x0}" height="{y0 - y1}" fill="none" stroke="black"/>',
        text((x0 + x1) / 2, H - 12, "training wall time (s, log scale)", middle),
        f'<text transform="translate(18 {(y0 + y1) / 2}) rotate(-90)" {middle}>pixel-FD (log scale, lower is better)'
        "</text>",
        line(x0, py(goal_fd), x1, py(goal_fd), dashed),
        text(x1 - 4, py(goal_fd) - 4, f"goal FD {goal_fd:g}", 'text-anchor="end" fill="gray"'),
    ]
    if x_lo < goal_s < x_hi:
        out += [
            line(px(goal_s), y1, px(goal_s), y0, dashed),
            text(px(goal_s) + 4, y1 + 14, f"{goal_s:g} s", 'fill="gray"'),
        ]
    for _, color, pts in curves:
        coords = " ".join(f"{px(t):.1f},{py(f):.1f}" for t, f in pts)
        out.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="2"/>')
        out += [f'<circle cx="{px(t):.1f}" cy="{py(f):.1f}" r="3" fill="{color}"/>' for t, f in pts]
    box_w = 12 + 7 * max(len(label) for label, *_ in curves)  # about 7 px per character at 12 px
    box_h = 18 * len(curves) + 6
    out.append(
        f'<rect x="{x0 + 8}" y="{y0 - 8 - box_h}" width="{box_w + 36}" height="{box_h}" fill="white" stroke="#999"/>'
    )
    for i, (label, color, _) in enumerate(curves):
        ly = y0 - 18 * (len(curves) - i)
        out += [line(x0 + 14, ly, x0 + 38, ly, f'stroke="{color}" stroke-width="2"'), text(x0 + 44, ly + 4, label)]
    return "\n".join([*out, "</svg>"]) + "\n"


# ----------------------------------------------------------------------------------------------------------------
# Report


def table(rows: list[dict]) -> list[str]:
    return [
        "| budget | steps | train s | pixel-FD | confidence | eval s | sample range | outside [-1, 1] |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *[
            f"| {r['budget_s']:g} s | {r['steps']} | {r['train_s']:.1f} | {r['pixel_fd']:.3f} | {r['confidence']:.3f} "
            f"| {r['eval_s']:.1f} | [{r['min']:.3g}, {r['max']:.3g}] | {r['outside']:.1%}"
            + (f" ({r['nonfinite']:.1%} NaN/inf)" if r["nonfinite"] else "")
            + " |"
            for r in rows
        ],
    ]


def fd_at(rows: list[dict], budget: float) -> str:
    match = [r for r in rows if r["budget_s"] == budget]
    return f"{match[0]['pixel_fd']:.3f}" if match else "not measured"


def summary(course_rows: list[dict], ours_rows: list[dict]) -> list[str]:
    best = min(course_rows, key=lambda r: r["pixel_fd"])
    ours_t, ours_note = time_to_reach(ours_rows, best["pixel_fd"])
    goal_t, goal_note = time_to_reach(ours_rows, GOAL_FD)
    last = course_rows[-1]["train_s"]
    lines = [
        f"- Course's best FD within the budgets: {best['pixel_fd']:.3f}, after {best['train_s']:.1f} s of training "
        f"({best['steps']} steps).",
    ]
    if ours_t is None:
        lines.append(f"- Ours never reached FD {best['pixel_fd']:.3f} within {ours_rows[-1]['train_s']:.0f} s.")
    else:
        bound = "≥ " if ours_note == "≤" else ""  # reached at the first point already: the ratio is a lower bound
        lines += [
            f"- Ours reached FD {best['pixel_fd']:.3f} after {ours_note}{ours_t:.2f} s (FD linear between measured "
            "points on a log-time axis).",
            f"- Ratio (course's time to its best) / (ours to reach it): {bound}{best['train_s'] / ours_t:.1f}× "
            f"(goal ≥ {GOAL_RATIO:.0f}×); course's whole budget {last:.0f} s / ours: {bound}{last / ours_t:.1f}×.",
        ]
    end = course_rows[-1]
    lines.append(
        f"- Course's final samples: range [{end['min']:.3g}, {end['max']:.3g}], {end['outside']:.1%} of pixel values "
        f"outside [-1, 1] ({end['nonfinite']:.1%} NaN/inf); the metric clips them to [-1, 1]."
    )
    reach = "not reached" if goal_t is None else f"{goal_note}{goal_t:.1f} s"
    lines.append(
        f"- Ours: FD at 30 s {fd_at(ours_rows, 30)}, at 60 s {fd_at(ours_rows, 60)}; time to FD ≤ {GOAL_FD}: {reach} "
        f"(goal ≤ {GOAL_FD_BY:.0f} s, ideally 30 s)."
    )
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budgets", type=float, nargs="+", default=[15, 30, 60, 120, 240, 480])
    p.add_argument("--early", type=float, nargs="*", default=[0.5, 1, 1.5, 2, 3, 4, 8],
                   help="extra early budgets for ours only")  # fmt: skip
    p.add_argument("--threads", type=int, default=2, help="torch threads for both recipes")
    p.add_argument("--n-samples", type=int, default=1000, help="samples per evaluation")
    p.add_argument("--course-size", type=int, default=8, help="the course UNet's canvas: 8 (native) or 16 (padded)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "race", help="folder for the plot and the grids")
    p.add_argument("--write", action="store_true", help="append the section to bench/RESULTS.md")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    budgets, n = sorted(args.budgets), args.n_samples
    print(f"machine: {machine()}")
    digits_classifier()  # trained once here, not inside the first evaluation

    course = CourseRecipe(load_dataset("digits").x, size=args.course_size)
    course_eval = course_eval_estimate(course, n)
    print(
        f"one course evaluation ({n} samples × {COURSE_T} steps, {args.course_size}×{args.course_size}): "
        f"≈ {course_eval:.0f} s; whole run ≈ {(2 * budgets[-1] + len(budgets) * course_eval) / 60:.0f} min plus our "
        "evaluations",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(
            TrainConfig(out=tmp, steps=10**9, preview_every=0, checkpoint_every=0), Path(tmp), log=lambda *_: None
        )
        ours_budgets = sorted(set(budgets) | set(args.early))
        ours_rows, ours_samples = race(
            "ours", trainer.train_step, trainer.batches(), ours_draw(trainer, n), ours_budgets
        )
    course_rows, course_samples = race("course", course.train_step, course.batches(), lambda: course.sample(n), budgets)

    args.out.mkdir(parents=True, exist_ok=True)
    curves = [
        (
            f"course: {COURSE_T}-step ancestral, no clipping",
            COLORS["course"],
            [(r["train_s"], r["pixel_fd"]) for r in course_rows],
        ),
        ("ours: DDIM-50 from the EMA, clipped", COLORS["ours"], [(r["train_s"], r["pixel_fd"]) for r in ours_rows]),
    ]
    (args.out / "race_fd.svg").write_text(fd_plot_svg(curves, GOAL_FD, GOAL_FD_BY))
    for name, samples in (("course", course_samples), ("ours", ours_samples)):
        grid = image_grid(torch.nan_to_num(samples[:GRID_N], nan=0.0), nrow=10)
        save_png(grid, args.out / f"{name}_samples.png")
    rel = args.out.resolve().relative_to(ROOT / "bench") if args.out.resolve().is_relative_to(ROOT / "bench") else None

    lines = [
        f"## Time to quality vs the course recipe — {time.strftime('%Y-%m-%d')} — {machine()}",
        "",
        f"`python bench/bench_race.py` — both recipes on the 1797 digits, one after the other, torch threads: "
        f"{args.threads}; pixel-FD and classifier confidence of {n} samples from each recipe's own sampler; the clock "
        "stops while evaluating.",
        "",
        f"**Course** (bench/course_recipe.py: tiny LayerNorm UNet on {args.course_size}×{args.course_size}, its "
        "faulty time table, Adam 1e-3, batch 128, no EMA; 1000 ancestral steps, σ² = β_t, no clipping):",
        "",
        *table(course_rows),
        "",
        "**Ours** (`TrainConfig()`: tiny UNet, lr 2e-3, batch 128, EMA 0.999; DDIM-50 from the EMA weights, "
        "x̂₀ clipped):",
        "",
        *table(ours_rows),
        "",
        *summary(course_rows, ours_rows),
        "",
    ]
    if rel is not None:
        grids = f"Final samples: course `{rel}/course_samples.png`, ours `{rel}/ours_samples.png`."
        lines += [f"![FD vs training time]({rel}/race_fd.svg)", "", grids, ""]
    publish(lines, args.write)
    print(f"plot and grids in {args.out}")


if __name__ == "__main__":
    main()
