"""GPU check: the CUDA paths of the engine (bf16 autocast, on-device RNG, checkpoints, resume, sampling) and their
speed, in one short run on a CUDA machine. Needs MNIST in torchvision's layout under --data-root.

1. Training throughput of the small UNet on 32×32 MNIST and the tiny UNet on 8×8 digits, fp32 vs bf16 autocast,
   side by side (images/s; CUDA-synchronised timing).
2. The CLI end to end on CUDA: train the small preset on MNIST, resume it, sample (GIF/PNG), evaluate (pixel-FD).

Usage: python bench/gpu_check.py --data-root DIR --out DIR [--steps 3000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ddpm_core.config import TrainConfig  # noqa: E402
from ddpm_core.trainer import Trainer  # noqa: E402


def throughput(config: TrainConfig, out: Path, steps: int = 100) -> float:
    trainer = Trainer(config, out, log=lambda *_: None)
    batches = trainer.batches()
    for _ in range(20):  # warm-up: cuDNN autotuning, allocator
        trainer.train_step(next(batches))
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(next(batches))
    torch.cuda.synchronize()
    return steps * config.batch_size / (time.perf_counter() - start)


def cli(*args: str) -> str:
    cmd = [sys.executable, "-m", *args]
    print("$", " ".join(cmd), flush=True)
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    print(
        result.stdout + result.stderr[-3000:],
        f"[{time.perf_counter() - start:.1f} s, rc {result.returncode}]",
        flush=True,
    )
    if result.returncode:
        raise SystemExit(f"{args[0]} failed")
    return result.stdout


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data-root", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=3000)
    args = p.parse_args()
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}", flush=True)
    torch.backends.cudnn.benchmark = True

    rows = []
    for name, base in [
        (
            "small UNet, MNIST 32×32, batch 256",
            dict(dataset="mnist", data_root=args.data_root, model="small", batch_size=256),
        ),
        ("tiny UNet, digits 8×8, batch 128", dict(dataset="digits")),
    ]:
        speeds = {}
        for mp in (False, True):
            c = TrainConfig(**base, device="cuda", mixed_precision=mp, out=str(args.out / "tp"))
            speeds[mp] = throughput(c, args.out / "tp")
        rows.append((name, speeds[False], speeds[True]))
        print(f"{name}: fp32 {speeds[False]:,.0f} img/s, bf16 {speeds[True]:,.0f} img/s", flush=True)

    run = args.out / "mnist-run"
    common = ["--device", "cuda"]
    cli(
        "ddpm_core.train",
        "--dataset",
        "mnist",
        "--data-root",
        args.data_root,
        "--model",
        "small",
        "--batch-size",
        "256",
        "--steps",
        str(args.steps),
        "--preview-every",
        "1000",
        "--checkpoint-every",
        "1000",
        "--out",
        str(run),
        *common,
    )
    cli("ddpm_core.train", "--out", str(run), "--resume", "--steps", str(args.steps + 200), *common)
    cli(
        "ddpm_core.sample",
        "--checkpoint",
        str(run),
        "--sampler",
        "ddim",
        "--steps",
        "50",
        "--n",
        "64",
        "--png",
        str(args.out / "mnist_ddim50.png"),
        "--gif",
        str(args.out / "mnist_ddim50.gif"),
        *common,
    )
    cli("ddpm_core.sample", "--checkpoint", str(run), "--sampler", "ddpm", "--n", "1000", *common)
    report = json.loads(cli("ddpm_core.evaluate", "--checkpoint", str(run), "--n", "1000", *common))
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [m["step"] for m in metrics]
    assert steps == sorted(set(steps)) and steps[-1] == args.steps + 200, "resume did not continue the step count"
    lines = [
        "| model | fp32 images/s | bf16 autocast images/s | bf16 / fp32 |",
        "| --- | --- | --- | --- |",
        *[f"| {n} | {a:,.0f} | {b:,.0f} | {b / a:.2f}× |" for n, a, b in rows],
        "",
        f"MNIST small UNet, {args.steps} + 200 (resumed) steps of batch 256 on CUDA with bf16: final loss "
        f"{metrics[-1]['loss']:.4f}, {metrics[-1]['images_per_s']:,.0f} images/s in the run; 1000 DDIM-50 samples "
        f"in {report['sampling_seconds']:.2f} s, pixel-FD {report['pixel_fd']:.3f}.",
    ]
    print("\n".join(lines))
    (args.out / "gpu_results.md").write_text("\n".join(lines) + "\n")
    (args.out / "metrics.jsonl").write_text((run / "metrics.jsonl").read_text())


if __name__ == "__main__":
    main()
