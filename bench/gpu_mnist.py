"""A recognisable-MNIST recipe in two minutes on one GPU: the small UNet on 32×32 MNIST with bf16 autocast,
channels_last, torch.compile and a large batch, in one self-contained run (no internet needed).

Data: torchvision's MNIST layout under --data-root (MNIST/raw/*-idx?-ubyte, unpacked or .gz); with the test set alone,
it is split into images to train on and 2,000 held out. Without either, MNIST-format idx files are written from the
scikit-learn digits (upscaled into MNIST's 20×20 box of a 28×28 frame, randomly shifted). Whatever the source, the
run reads unpacked idx files in the temp folder through the project's loader, `load_dataset("mnist", image_size=32)`.

Reports images/s, FLOPs per step (FlopCounterMode on one eager step, forward + backward) and achieved TFLOP/s
against a measured bf16 matmul peak, the time to a loss plateau — the first time τ at which the EMA of the loss
(per step, decay 0.98) is within 2% of its value at τ − 30 s — and, from the EMA weights, a DDIM-50 grid (PNG) and
the pixel-FD of DDIM-50 samples against the test split (with the FD of training vs test images as the floor).

Usage: python bench/gpu_mnist.py --data-root DIR --out DIR [--budget-s 120] [--batch 512] [--no-compile] [--write]
CPU smoke test: python bench/gpu_mnist.py --device cpu --budget-s 10 --batch 32 --no-compile --out /tmp/gm
On a lent GPU machine (one call, about 5 minutes): first, here, `mkdir -p .gpu-data/MNIST/raw && cp
../shared/data/mnist/MNIST/raw/*.gz .gpu-data/MNIST/raw/ && echo /.gpu-data/ >> .git/info/exclude`, then run
`python3 bench/gpu_mnist.py --data-root .gpu-data --out $OUT --write` there with carry [".gpu-data"], and copy the
section it appends (under $OUT too: gpu_mnist.md) into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import append_results, machine  # noqa: E402
from ddpm_core.config import TrainConfig  # noqa: E402
from ddpm_core.data import expected_files, load_dataset, one_line  # noqa: E402
from ddpm_core.idx import find_idx, read_idx, write_idx  # noqa: E402
from ddpm_core.metrics import image_fd  # noqa: E402
from ddpm_core.models import count_parameters  # noqa: E402
from ddpm_core.pictures import image_grid, save_png  # noqa: E402
from ddpm_core.sample import sample  # noqa: E402
from ddpm_core.trainer import Trainer  # noqa: E402

LOSS_EMA = 0.98  # per-step decay of the smoothed loss: a memory of about 50 steps
REPORT_AT = (10, 20, 30, 60, 90, 120)  # training seconds at which the table shows the smoothed loss


# ----------------------------------------------------------------------------------------------------------------
# Data: the real files if they are there, else MNIST-format files written from the 8×8 digits.


def digits_as_mnist(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n images (n, 28, 28) uint8 and labels (n,): random scikit-learn digits, bilinearly upscaled 8 → 20 px (MNIST's
    digit box) and placed in a 28×28 frame shifted by up to ±2 px."""
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(d.images), n)
    small = torch.from_numpy(d.images[pick] / 16.0).float().unsqueeze(1)  # (n, 1, 8, 8) in [0, 1]
    box = F.interpolate(small, size=(20, 20), mode="bilinear", align_corners=False)[:, 0].numpy()
    frame = np.zeros((n, 28, 28), dtype=np.uint8)
    dy, dx = rng.integers(-2, 3, n), rng.integers(-2, 3, n)
    for i in range(n):
        frame[i, 4 + dy[i] : 24 + dy[i], 4 + dx[i] : 24 + dx[i]] = np.round(box[i] * 255).clip(0, 255)
    return frame, d.target[pick].astype(np.uint8)


def mnist_root(data_root: str | None, n_train: int, n_test: int, into: Path | None = None) -> tuple[Path, str]:
    """A folder holding MNIST/raw/* (unpacked idx files, torchvision's layout), written to the temp folder (not under
    --out: what --out holds is meant to be small enough to copy back from a lent machine) from, in this order:
    all of MNIST under data_root (unpacked or .gz); its test set alone, split into training and held-out images (the
    files a lent machine may carry); MNIST-format digits written from the 8×8 ones."""
    from torchvision.datasets import MNIST

    root = into or Path(tempfile.gettempdir()) / "gpu_mnist_data"
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    splits = {}
    if data_root:
        where, files = expected_files(MNIST, Path(data_root).expanduser())
        found = {name: find_idx(where, name) for name in files}
        test = [found[f"t10k-{kind}-idx{n}-ubyte"] for kind, n in (("images", 3), ("labels", 1))]
        train = [found[f"train-{kind}-idx{n}-ubyte"] for kind, n in (("images", 3), ("labels", 1))]
        arrays = {
            split: [read_idx(p) for p in paths] for split, paths in (("train", train), ("t10k", test)) if all(paths)
        }
        both = len(arrays) == 2 and not np.array_equal(arrays["train"][0], arrays["t10k"][0])  # not a copy
        if both:
            splits = arrays
            what = f"MNIST from {where} (its training and test sets)"
        elif "t10k" in arrays:  # the test set alone, or copied as the training set: split it
            images, labels = arrays["t10k"]
            held = min(n_test, len(images) // 5)  # the last ones, as ddpm_core.idx splits it (8,000 / 2,000)
            cut = len(images) - held
            splits = {"train": [images[:cut], labels[:cut]], "t10k": [images[cut:], labels[cut:]]}
            what = (f"MNIST's test set from {where}: {len(images) - held:,} images to train on, the other {held:,} "
                    "held out for the FD")  # fmt: skip
        else:
            print(f"MNIST files not found under {where}: writing MNIST-format digits instead", flush=True)
    if not splits:
        splits = {split: digits_as_mnist(n, seed) for split, n, seed in (("train", n_train, 0), ("t10k", n_test, 1))}
        what = f"synthetic MNIST-format digits ({n_train:,} train, {n_test:,} test; no MNIST files found)"
    for split, (images, labels) in splits.items():
        write_idx(raw / f"{split}-images-idx3-ubyte", images)
        write_idx(raw / f"{split}-labels-idx1-ubyte", labels)
    return root, what


# ----------------------------------------------------------------------------------------------------------------
# Training


def matmul_peak_tflops(device: torch.device, dtype: torch.dtype, n: int) -> float:
    """TFLOP/s of the best of 5 (n, n) @ (n, n) products (2n³ FLOPs each) on the device."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(6):  # the first is a warm-up
        _sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e12


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Stepper:
    """Trainer.train_step on channels_last batches, keeping the smoothed loss on the device (no host sync)."""

    def __init__(self, trainer: Trainer, channels_last: bool):
        self.trainer, self.channels_last = trainer, channels_last
        self.batches = trainer.batches()
        self.smoothed: torch.Tensor | None = None

    def step(self) -> None:
        x0 = next(self.batches)
        if self.channels_last:
            x0 = x0.contiguous(memory_format=torch.channels_last)
        loss = self.trainer.train_step(x0)[0].detach().float()
        self.smoothed = loss.clone() if self.smoothed is None else self.smoothed.lerp_(loss, 1 - LOSS_EMA)


def try_compile(stepper: Stepper, mode: str, warmup: int) -> str:
    """Compile ε_θ and run the warm-up steps; on any failure go back to eager and say why."""
    trainer = stepper.trainer
    eager = trainer.model
    trainer.model = torch.compile(eager, mode=mode)  # shares the parameters: optimizer and EMA are unaffected
    try:
        for _ in range(warmup):
            stepper.step()
        return f"torch.compile (mode {mode})"
    except Exception as e:  # a missing compiler, an unsupported op, …: the recipe still runs eagerly
        trainer.model = eager
        torch._dynamo.reset()
        print(f"torch.compile failed, running eagerly: {type(e).__name__}: {one_line(e, 300)}", flush=True)
        return f"eager (torch.compile failed: {type(e).__name__})"


def train(stepper: Stepper, budget_s: float, log_every: int) -> list[dict]:
    """Train for budget_s seconds of wall time; every log_every steps one host sync records the smoothed loss."""
    device, history, start = stepper.trainer.device, [], time.perf_counter()
    while True:
        for _ in range(log_every):
            stepper.step()
        loss = stepper.smoothed.item()  # waits for the queued steps: the clock below is true wall time
        elapsed = time.perf_counter() - start
        if not np.isfinite(loss):
            raise SystemExit(f"the loss became {loss} at step {stepper.trainer.step}: lower --lr")
        history.append({"step": stepper.trainer.step, "train_s": elapsed, "smoothed_loss": loss})
        if elapsed >= budget_s:
            _sync(device)
            return history


def plateau_time(history: list[dict], window_s: float, tol: float) -> float | None:
    """The first training time τ ≥ window_s at which the smoothed loss is ≥ (1 − tol) × its value at τ − window_s
    (the last record at or before then): it improved by less than tol over the window. None: not reached."""
    for h in history:
        if h["train_s"] < window_s:
            continue
        before = [e for e in history if e["train_s"] <= h["train_s"] - window_s]
        if before and h["smoothed_loss"] >= (1 - tol) * before[-1]["smoothed_loss"]:
            return h["train_s"]
    return None


def loss_at(history: list[dict], seconds: float) -> float | None:
    """The smoothed loss at the last record at or before `seconds` of training (None when past the end)."""
    before = [h for h in history if h["train_s"] <= seconds]
    return before[-1]["smoothed_loss"] if before and seconds <= history[-1]["train_s"] else None


# ----------------------------------------------------------------------------------------------------------------


def evaluate(trainer: Trainer, root: Path, n: int, out: Path) -> dict:
    """DDIM-50 samples from the EMA weights: a grid of up to 64 as PNG, and pixel-FD against n test images, with the
    FD of n training images against the same test images as the floor."""
    result = sample(
        trainer.ema.model,
        trainer.diffusion,
        n,
        tuple(trainer.data.sample_shape),
        sampler="ddim",
        steps=50,
        clip_x0=True,
        seed=0,
        record_every=10**9,
    )
    save_png(image_grid(result.samples[:64], nrow=8), out / "samples_ddim50.png")
    test = load_dataset("mnist", data_root=root, image_size=32, train=False, max_images=n).x
    pick = torch.randperm(len(trainer.data.x), generator=torch.Generator().manual_seed(0))[: len(test)]
    return {
        "n": len(test),
        "sampling_s": result.wall_time,
        "pixel_fd": image_fd(result.samples, test),
        "floor_fd": image_fd(trainer.data.x[pick], test),
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default="data", help="folder with MNIST/raw/*-idx?-ubyte (torchvision's layout)")
    p.add_argument("--out", type=Path, default=Path("gpu_mnist_out"), help="where the PNG, loss log and table go")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu", "mps", "auto"])
    p.add_argument("--model", default="small", help="a ddpm_core preset (UNet)")
    p.add_argument("--budget-s", type=float, default=120.0, help="training wall time after compile and warm-up")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=100, help="linear lr warm-up, in steps")
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--no-bf16", dest="bf16", action="store_false", help="fp32 instead of bf16 autocast")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    p.add_argument("--no-compile", dest="compile", action="store_false")
    p.add_argument("--compile-mode", default="default", choices=["default", "reduce-overhead", "max-autotune"])
    p.add_argument("--warmup-steps", type=int, default=3, help="untimed steps first (they compile)")
    p.add_argument("--log-every", type=int, help="steps between host syncs (loss, clock); default 25 on CUDA, else 1")
    p.add_argument("--plateau-window-s", type=float, default=30.0)
    p.add_argument("--plateau-tol", type=float, default=0.02)
    p.add_argument("--n-fd", type=int, help="samples for the pixel-FD (default: 2000 on CUDA, 32 elsewhere)")
    p.add_argument("--synthetic-n", type=int, nargs=2, default=[20_000, 2_000], metavar=("TRAIN", "TEST"))
    p.add_argument("--write", action="store_true", help="append the table to bench/RESULTS.md")
    return p


def build_trainer(args: argparse.Namespace, root: Path) -> Trainer:
    """The Trainer of the recipe's TrainConfig, then bf16 autocast and channels_last applied to it."""
    config = TrainConfig(
        dataset="mnist",
        data_root=str(root),
        image_size=32,
        model=args.model,
        batch_size=args.batch,
        lr=args.lr,
        warmup=args.warmup,
        ema_decay=args.ema_decay,
        device=args.device,
        mixed_precision=args.bf16,
        cpu_bf16=args.bf16,  # a CPU smoke test: bf16 where the CPU has it natively
        steps=10**9,
        preview_every=0,
        checkpoint_every=0,
    )
    trainer = Trainer(config, args.out / "run", log=print)
    if trainer.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")  # TF32 for what stays in fp32
    if args.channels_last:
        trainer.model.to(memory_format=torch.channels_last)
        trainer.ema.model.to(memory_format=torch.channels_last)  # the EMA lerp then runs on matching strides
    return trainer


def warm_up(stepper: Stepper, args: argparse.Namespace) -> tuple[int, str, float]:
    """One eager step under FlopCounterMode, then compile (if asked) and the warm-up steps.
    Returns (FLOPs per step, how ε_θ runs, seconds)."""
    counter, start = FlopCounterMode(display=False), time.perf_counter()
    with counter:
        stepper.step()  # a real training step
    if args.compile:
        mode = try_compile(stepper, args.compile_mode, args.warmup_steps)
    else:
        mode = "eager"
        for _ in range(args.warmup_steps):
            stepper.step()
    _sync(stepper.trainer.device)
    return counter.get_total_flops(), mode, time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    wall = time.perf_counter()
    root, data_note = mnist_root(args.data_root, *args.synthetic_n)
    trainer = build_trainer(args, root)
    cuda = trainer.device.type == "cuda"
    print(f"{machine()}; {data_note}; {len(trainer.data.x):,} training images; device {trainer.device}", flush=True)

    stepper = Stepper(trainer, args.channels_last)
    flops, mode, warmup_s = warm_up(stepper, args)
    warmup_steps = trainer.step
    print(f"{mode}: {warmup_steps} warm-up steps in {warmup_s:.1f} s; training for {args.budget_s:g} s", flush=True)
    history = train(stepper, args.budget_s, args.log_every or (25 if cuda else 1))
    (args.out / "loss.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    train_s, steps = history[-1]["train_s"], trainer.step - warmup_steps
    print(f"trained {steps} steps in {train_s:.1f} s ({steps * args.batch / train_s:,.0f} images/s)", flush=True)

    dtype = "bf16" if args.bf16 else "fp32"
    peak_n = 8192 if cuda else 1024
    peak = matmul_peak_tflops(trainer.device, torch.bfloat16 if args.bf16 else torch.float32, peak_n)
    n_fd = args.n_fd or (2000 if cuda else 32)
    ev = evaluate(trainer, root, n_fd, args.out)
    achieved = flops * steps / train_s / 1e12
    plateau = plateau_time(history, args.plateau_window_s, args.plateau_tol)
    settings = [f"batch {args.batch}", f"lr {args.lr:g}", f"warm-up {args.warmup}", f"EMA {args.ema_decay:g}"]
    settings += ["bf16 autocast" if args.bf16 else "fp32"] + ["channels_last"] * args.channels_last + [mode]
    losses = ", ".join(f"{s} s: {v:.4f}" for s in REPORT_AT if (v := loss_at(history, s)) is not None)
    rows = [
        ("data", f"{data_note}; {len(trainer.data.x):,} images padded to 1×32×32"),
        ("model", f"{args.model} UNet, {count_parameters(trainer.model) / 1e6:.1f} M parameters"),
        ("settings", ", ".join(settings)),
        ("compile + warm-up", f"{warmup_s:.1f} s ({warmup_steps} steps, not in the budget)"),
        ("training", f"{train_s:.1f} s, {steps:,} steps, {steps * args.batch / len(trainer.data.x):.1f} epochs"),
        ("throughput", f"{steps * args.batch / train_s:,.0f} images/s"),
        ("FLOPs per step", f"{flops / 1e9:,.1f} GFLOP (FlopCounterMode, forward + backward)"),
        ("achieved", f"{achieved:.3g} TFLOP/s: {100 * achieved / peak:.1f}% of {peak:.3g}, a {dtype} {peak_n}² mm's"),
        ("loss plateau", f"at {plateau:.0f} s of training" if plateau is not None else "not reached in the budget"),
        ("smoothed loss", f"{losses + '; ' if losses else ''}end {history[-1]['smoothed_loss']:.4f}"),
        ("sampling", f"{n_fd} samples, DDIM-50 from the EMA weights, in {ev['sampling_s']:.1f} s"),
        ("pixel-FD vs test", f"{ev['pixel_fd']:.3f} (floor, {ev['n']} train vs test images: {ev['floor_fd']:.3f})"),
    ]
    report(args, argv, rows, time.perf_counter() - wall)


def report(args: argparse.Namespace, argv: list[str] | None, rows: list[tuple[str, str]], wall_s: float) -> None:
    lines = [
        f"## MNIST recipe on the GPU — {time.strftime('%Y-%m-%d')} — {machine()}",
        "",
        f"`python bench/gpu_mnist.py {' '.join(argv if argv is not None else sys.argv[1:])}` — loss plateau: the "
        f"smoothed loss (EMA {LOSS_EMA} per step) within {100 * args.plateau_tol:g}% of its value "
        f"{args.plateau_window_s:g} s earlier; TFLOP/s: FlopCounterMode's count of one eager step over the measured "
        "time, against the best of 5 `torch.mm` of that dtype; grid: `samples_ddim50.png` in the output folder.",
        "",
        "| quantity | value |",
        "| --- | --- |",
        *[f"| {k} | {v} |" for k, v in rows],
        "",
        f"Whole run: {wall_s:.0f} s.",
        "",
    ]
    print("\n".join(lines))
    (args.out / "gpu_mnist.md").write_text("\n".join(lines))
    if args.write:
        append_results(lines)


if __name__ == "__main__":
    main()
