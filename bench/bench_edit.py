"""Editing with the bundled digits model (ddpm_core.edit): how good, and how long per call on this CPU.

1. DDIM inversion: the RMS round-trip error x_0 → x_T → x̂_0 (data scale [-1, 1]) against the number of steps.
2. Inpainting (RePaint) with half of each digit masked: how often the scikit-learn digits classifier
   (ddpm_core.metrics) gives the inpainted digit the original's label, per mask and resampling U. For scale: how
   often it labels the masked input (the regenerated half filled with -1, the background) as the original.
3. Seconds per call of each method, side by side in this one run (ratios, not absolute times, compare across days).

Usage: python bench/bench_edit.py [--n 200] [--write]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.bench_throughput import matmul_peak  # noqa: E402
from bench.common import flags_line, machine, publish  # noqa: E402
from ddpm_core import edit  # noqa: E402
from ddpm_core.data import load_dataset  # noqa: E402
from ddpm_core.diffusion import Diffusion  # noqa: E402
from ddpm_core.edit_inputs import mask_preset  # noqa: E402
from ddpm_core.metrics import digits_classifier  # noqa: E402
from ddpm_core.runs import load_checkpoint  # noqa: E402
from ddpm_core.sample import SamplingConfig, sample  # noqa: E402


def timed(call) -> tuple[object, float]:
    start = time.perf_counter()
    out = call()
    return out, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--checkpoint", default=str(ROOT / "assets" / "checkpoints" / "digits.safetensors"))
    p.add_argument("--n", type=int, default=200, help="digits per measurement (the data's first n)")
    p.add_argument("--write", action="store_true", help="append the tables to bench/RESULTS.md")
    args = p.parse_args()
    ckpt = load_checkpoint(args.checkpoint)
    model, diffusion = ckpt.model, Diffusion(ckpt.config.make_schedule())
    data = load_dataset("digits")
    x0, labels = data.x[: args.n], data.y[: args.n].numpy()
    peak = matmul_peak(torch.get_num_threads(), 2048, 5)
    classifier = digits_classifier()
    lines = [
        f"## Editing: bench/bench_edit.py ({time.strftime('%Y-%m-%d')})",
        "",
        f"{machine()}; CPU flags: {flags_line()}; matmul peak {peak:,.0f} GFLOP/s fp32 (2048²). "
        f"{args.checkpoint.rsplit('/', 1)[-1]}, the first {args.n} scikit-learn digits.",
        "",
        "| DDIM steps each way | RMS round-trip error | seconds |",
        "|---|---|---|",
    ]
    for steps in (5, 10, 20, 50, 100, 200):
        inv, seconds = timed(lambda s=steps: edit.invert(model, diffusion, x0, SamplingConfig("ddim", s)))
        lines.append(f"| {steps} | {inv.error:.4f} | {seconds:.2f} |")
    lines += ["", "| mask (regenerated) | sampler | U | label kept | masked input's label kept | seconds |"]
    lines.append("|---|---|---|---|---|---|")
    for preset in ("left", "right", "top", "bottom"):
        mask = mask_preset(preset, (1, 8, 8))
        masked = x0 * (1 - mask) - mask
        kept_masked = (classifier.predict(masked) == labels).mean()
        for config, resample in ((SamplingConfig("ddim", 50), 1), (SamplingConfig("ddim", 50), 5)):
            out, seconds = timed(
                lambda m=mask, c=config, u=resample: edit.inpaint(model, diffusion, x0, m, c, resample=u)
            )
            kept = (classifier.predict(out.samples) == labels).mean()
            lines.append(f"| {preset} | DDIM-50 | {resample} | {kept:.0%} | {kept_masked:.0%} | {seconds:.2f} |")
    ddim = SamplingConfig("ddim", 50)
    calls = {
        "sample (DDIM-50), for scale": lambda: sample(model, diffusion, len(x0), ckpt.sample_shape, ddim),
        "SDEdit, t_start = 500, DDIM-50": lambda: edit.sdedit(model, diffusion, x0, 500, ddim),
        "inpaint, DDIM-50, U = 1": lambda: edit.inpaint(model, diffusion, x0, mask_preset("left", (1, 8, 8)), ddim),
        "invert, DDIM-50 each way": lambda: edit.invert(model, diffusion, x0, ddim),
        f"interpolate, {min(args.n, 64)} samples, DDIM-50": lambda: edit.interpolate(
            model, diffusion, 0, 1, min(args.n, 64), ddim
        ),
    }
    lines += ["", f"| call ({args.n} digits) | seconds | × sampling |", "|---|---|---|"]
    base = None
    sample(model, diffusion, len(x0), ckpt.sample_shape, ddim)  # warm-up: the first call pays for allocations
    for name, call in calls.items():
        _, seconds = timed(call)
        base = base or seconds
        lines.append(f"| {name} | {seconds:.2f} | {seconds / base:.2f} |")
    publish(lines, args.write)


if __name__ == "__main__":
    main()
