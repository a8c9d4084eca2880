"""Training throughput of our UNets on this CPU, and what might raise it, measured side by side in one run.

1. The CPU's matmul peak: best of several fp32 `torch.mm` of two n×n matrices (2n³ FLOPs), per thread count.
2. Images/s of one training step exactly as `Trainer.train_step` does it (forward, loss, backward, gradient
   clipping, AdamW step, EMA update) for the tiny UNet at 8×8 (digits), 28×28 and 32×32 (digits resized: the pixels
   do not change the cost) and the small UNet at 32×32. FLOPs per step are counted with FlopCounterMode on one
   eager step (forward + backward; it counts matmuls, convolutions and attention, not elementwise ops or norms), so
   "GFLOP/s" is that count over the measured time and "% of peak" compares it with the matmul peak at the same
   thread count.
3. Variants against each workload's baseline (eager, NCHW, fp32, foreach AdamW, all threads, batch 128; small: 64):
   fewer threads, channels_last (model and input), bf16 autocast (the Trainer turns it on only on CUDA), fused
   AdamW, torch.compile of the model, other batch sizes. Variants of a workload are timed in interleaved rounds
   (best round kept), so a load change on a shared machine hits them alike.

Usage: python bench/bench_throughput.py [--quick] [--no-compile] [--threads 1 2] [--workloads tiny8 small32] [--write]
       (--write appends the section to bench/RESULTS.md)
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import machine, publish  # noqa: E402
from ddpm_core.config import TrainConfig  # noqa: E402
from ddpm_core.data import one_line  # noqa: E402
from ddpm_core.trainer import Trainer  # noqa: E402


@dataclass(frozen=True)
class Variant:
    name: str
    threads: int
    batch: int
    channels_last: bool = False
    bf16: bool = False
    fused_adamw: bool = False
    compile: bool = False


@dataclass(frozen=True)
class Workload:
    key: str  # for --workloads
    title: str
    preset: str  # a ddpm_core.models preset
    image_size: int  # the digits resized to this; 0: native 8×8
    batch: int  # the baseline's
    steps: int  # timed steps per round
    extras: tuple[str, ...]  # which variants beyond the baseline (see variants())


SWEEP = ("threads", "layout", "bf16", "fused", "compile", "bf16+fused")  # the variants of the tiny workloads
WORKLOADS = (
    Workload("tiny8", "tiny, 1×8×8 (digits)", "tiny", 0, 128, 20, (*SWEEP, "batch")),
    Workload("tiny28", "tiny, 1×28×28", "tiny", 28, 128, 3, ("threads",)),
    Workload("tiny32", "tiny, 1×32×32", "tiny", 32, 128, 3, (*SWEEP, "all")),
    Workload("small32", "small, 1×32×32", "small", 32, 64, 2, ("layout", "bf16", "all")),
)
BATCHES = (64, 256, 512)  # the batch sweep of tiny 8×8, besides the baseline's 128
CHANGES = {  # an extra -> what its variant changes in the baseline
    "layout": dict(name="channels_last", channels_last=True),
    "bf16": dict(name="bf16 autocast", bf16=True),
    "fused": dict(name="fused AdamW", fused_adamw=True),
    "compile": dict(name="torch.compile", compile=True),
    "bf16+fused": dict(name="bf16 + fused AdamW", bf16=True, fused_adamw=True),
    "all": dict(name="bf16 + fused + chan_last", bf16=True, fused_adamw=True, channels_last=True),
}


def variants(w: Workload, threads: list[int], batches: tuple[int, ...], compile_ok: bool) -> list[Variant]:
    """The baseline first (its FLOP count serves the compiled variant), then the extras of the workload."""
    base = Variant("baseline", max(threads), w.batch)
    out = [base]
    for extra in w.extras:
        if extra == "threads":
            out += [replace(base, name=f"{n} thread{'s' * (n > 1)}", threads=n) for n in threads if n != base.threads]
        elif extra == "batch":
            out += [replace(base, name=f"batch {b}", batch=b) for b in batches if b != base.batch]
        elif extra in CHANGES:
            if compile_ok or extra != "compile":
                out.append(replace(base, **CHANGES[extra]))
        else:
            raise ValueError(f"unknown variant {extra!r}; valid: threads, batch, {', '.join(CHANGES)}")
    return out


# ----------------------------------------------------------------------------------------------------------------


def matmul_peak(threads: int, n: int, repeats: int, dtype: torch.dtype = torch.float32) -> float:
    """GFLOP/s of the best of `repeats` (n, n) @ (n, n) products in `dtype` on `threads` threads."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)  # warm-up: the BLAS's buffers and thread pool
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def make_trainer(w: Workload, v: Variant, run_dir: Path) -> Trainer:
    """The Trainer of TrainConfig(digits, this size and preset) with the variant's changes applied after the fact."""
    config = TrainConfig(
        dataset="digits", image_size=w.image_size, model=w.preset, batch_size=v.batch, device="cpu", seed=0
    )
    trainer = Trainer(config, run_dir, log=lambda *_: None)
    if v.channels_last:
        trainer.model.to(memory_format=torch.channels_last)
        trainer.ema.model.to(memory_format=torch.channels_last)  # the EMA lerp then runs on matching strides
        trainer.x = trainer.x.contiguous(memory_format=torch.channels_last)
    if v.fused_adamw:  # rebuilt as Trainer.__init__ builds them, plus fused=True
        trainer.optimizer = torch.optim.AdamW(
            trainer.model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=True
        )
        warmup = max(1, config.warmup)
        trainer.lr_schedule = torch.optim.lr_scheduler.LambdaLR(trainer.optimizer, lambda s: min(1.0, (s + 1) / warmup))
    if v.bf16:  # Trainer.loss runs ε_θ under trainer.precision(); the config would turn it on for CUDA only
        trainer.precision = lambda: torch.autocast(trainer.device.type, dtype=torch.bfloat16)
    else:
        trainer.precision = contextlib.nullcontext
    if v.compile:
        trainer.model = torch.compile(trainer.model)  # shares the parameters: optimizer and EMA are unaffected
    return trainer


class Run:
    """One variant: its trainer, data stream, FLOPs per step and best images/s so far."""

    def __init__(self, w: Workload, v: Variant, run_dir: Path, warmup: int):
        self.variant, self.best, self.flops = v, 0.0, None
        torch.set_num_threads(v.threads)
        self.trainer = make_trainer(w, v, run_dir)
        self.batches = self.trainer.batches()
        start = time.perf_counter()
        if not v.compile:
            counter = FlopCounterMode(display=False)
            with counter:
                self.step()
            self.flops = counter.get_total_flops()
        for _ in range(warmup - (not v.compile)):
            self.step()
        self.warmup_s = time.perf_counter() - start  # for torch.compile: mostly compiling

    def step(self) -> None:
        x0 = next(self.batches)
        if self.variant.channels_last:
            x0 = x0.contiguous(memory_format=torch.channels_last)
        self.trainer.train_step(x0)

    def time_round(self, steps: int) -> float:
        torch.set_num_threads(self.variant.threads)
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        ips = steps * self.variant.batch / (time.perf_counter() - start)
        self.best = max(self.best, ips)
        return ips


def measure(w: Workload, vs: list[Variant], rounds: int, steps: int, warmup: int, notes: list[str]) -> list[Run]:
    runs: list[Run] = []
    with tempfile.TemporaryDirectory() as tmp:
        for v in vs:
            try:
                runs.append(Run(w, v, Path(tmp), warmup))
            except Exception as e:  # torch.compile can fail in many ways (no compiler, unsupported op, …)
                notes.append(f"{w.title}, {v.name}: failed, skipped — {type(e).__name__}: {one_line(e, 200)}")
                print(f"  {v.name}: FAILED ({type(e).__name__}: {one_line(e, 200)})", flush=True)
                continue
            if v.compile:
                notes.append(f"{w.title}: torch.compile's first {warmup} step(s) took {runs[-1].warmup_s:.0f} s.")
        for r in range(rounds):
            for run in runs:
                ips = run.time_round(steps)
                print(f"  round {r + 1}: {run.variant.name:<24} {ips:8,.0f} images/s", flush=True)
    flops = {run.variant.batch: run.flops for run in runs if run.flops is not None}
    for run in runs:
        run.flops = flops.get(run.variant.batch)
    return runs


def table_rows(w: Workload, runs: list[Run], peaks: dict[tuple[int, bool], float]) -> list[str]:
    """One row per variant; % of peak against the matmul peak of its thread count and dtype (bf16 or fp32)."""
    base = runs[0].best if runs and runs[0].variant.name == "baseline" else float("nan")
    rows = []
    for run in runs:
        v = run.variant
        gflops = run.flops / v.batch * run.best / 1e9 if run.flops else float("nan")
        rows.append(
            f"| {w.title} | {v.name} | {v.threads} | {v.batch} | {run.best:,.0f} | {run.best / base:.2f}× | "
            f"{gflops:.1f} | {100 * gflops / peaks[v.threads, v.bf16]:.0f}% |"
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="a short smoke run: 1 round, few steps, small batches")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts (the largest: baseline)")
    p.add_argument("--workloads", nargs="+", choices=[w.key for w in WORKLOADS], default=[w.key for w in WORKLOADS])
    p.add_argument("--mm-size", type=int, default=2048, help="n of the n×n matmul that measures the peak")
    p.add_argument("--write", action="store_true", help="append the section to bench/RESULTS.md")
    args = p.parse_args()
    started = time.perf_counter()
    rounds, warmup, batches = (1, 1, (64, 256)) if args.quick else (3, 2, BATCHES)
    print(f"machine: {machine()}")

    repeats = 2 if args.quick else 5
    peaks = {
        (n, bf16): matmul_peak(n, args.mm_size, repeats, torch.bfloat16 if bf16 else torch.float32)
        for n in sorted(set(args.threads))
        for bf16 in (False, True)
    }
    for n in sorted(set(args.threads)):
        print(f"matmul peak, {n} thread(s): fp32 {peaks[n, False]:.1f}, bf16 {peaks[n, True]:.1f} GFLOP/s", flush=True)

    rows, notes = [], []
    for w in WORKLOADS:
        if w.key not in args.workloads:
            continue
        if args.quick:  # the small UNet takes seconds per step of 64 on a CPU
            w = replace(w, batch=min(w.batch, 16 if w.preset == "small" else 32), steps=max(1, w.steps // 5))
        vs = variants(w, args.threads, batches, compile_ok=not args.no_compile)
        print(f"{w.title}: {len(vs)} variants, {rounds} round(s) of {w.steps} steps", flush=True)
        # the small UNet gets 2 rounds at most and 1 warm-up step: a step takes seconds
        small = w.preset == "small"
        runs = measure(w, vs, min(rounds, 2) if small else rounds, w.steps, 1 if small else warmup, notes)
        rows += table_rows(w, runs, peaks)
    total = time.perf_counter() - started

    lines = [
        f"## Training throughput on the CPU — {time.strftime('%Y-%m-%d')} — {machine()}",
        "",
        f"`python bench/bench_throughput.py {' '.join(sys.argv[1:])}` — one `Trainer.train_step` (forward, "
        "loss, backward, clipping, AdamW, EMA) on the digits (resized for 28 and 32 px); best of "
        f"{rounds} interleaved round(s) per variant. GFLOP/s: FlopCounterMode's count of one eager step (matmuls, "
        "convolutions, attention; forward + backward) over the measured time; % of the matmul peak at the same "
        "thread count and dtype (bf16 for the bf16 autocast variant).",
        "",
        f"| threads | matmul peak, fp32 (GFLOP/s; {args.mm_size}² `torch.mm`, best of {repeats}) | bf16 |",
        "| --- | --- | --- |",
        *[f"| {n} | {peaks[n, False]:.1f} | {peaks[n, True]:.1f} |" for n in sorted(set(args.threads))],
        "",
        "| workload | variant | threads | batch | images/s | vs baseline | GFLOP/s | % of peak |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        *[f"- {n}" for n in notes],
        f"- The whole run took {total:.0f} s.",
        "",
    ]
    publish(lines, args.write)


if __name__ == "__main__":
    main()
