"""MNIST 28×28 on a laptop CPU: the time-to-quality curve of the `cpu-mnist` recipe, three references in the same
metric, and two peers side by side, in one process on the same threads.

Data: MNIST's test set (torchvision's layout under --data-root, unpacked or .gz), split as ddpm_core.idx does: test
images 0 … 7,999 train (laid out as a torchvision MNIST folder in a temp dir and read through load_dataset, as the app
reads it), 8,000 … 9,999 are held out.

Metric: the FD in the feature space of the project's MNIST classifier (ddpm_core.classifier, trained here on the
8,000 training images, its accuracy on the held-out ones printed), n samples (default 1000) against the 2,000
held-out images; with the classifier's mean confidence and the smallest share of a class among the samples.
References, n images in the same metric: real (training images), real blurred (2×2 average pooling, then nearest
upsampling back to 28×28), real plus N(0, 0.2²) noise on the [0, 1] pixel scale (σ = 0.4 in the model's [−1, 1]).

Contestants, each trained for wall-clock budgets of training (the clock stopped while it is evaluated), the samples
drawn with DDIM-50 (x̂₀ clipped) from the same x_T:
- ours: the `cpu-mnist` recipe (ddpm_core.recipes) through ddpm_core.trainer.Trainer, its EMA weights, in the recipe's
  precision (bf16 autocast where the CPU has native bf16, else float32);
- course: the course's MNIST recipe as bench/course_recipe.py ports it (its tiny LayerNorm UNet on MNIST padded to
  32×32 as the course pads it, Adam 1e-3, batch 128, no EMA, its faulty time table), float32. Scored with our DDIM-50
  on its weights, which is kinder to it than its own 1000 ancestral steps with σ² = β_t and no clipping (the digits race
  in bench/RESULTS.md saw that sampler diverge) and 20× cheaper to evaluate;
- diffusers: UNet2DModel as the Hugging Face diffusion course builds it for MNIST (block_out_channels (32, 64, 64),
  two layers per block, attention in the two lower blocks), squaredcos_cap_v2 β (our "cosine"), AdamW 1e-3, batch 128,
  ε-prediction on [−1, 1] images, no EMA, float32: what a user would pick instead.
For each peer: its best FD within its budget, our time to reach that FD (interpolated on log time between our
measured budgets), and the ratio of the two times (goal ≥ 10×).

Also: sampling time of our final weights (64 and 1000 samples, DDIM-50), FLOPs per image (FlopCounterMode, forward
+ backward), and the share of the CPU's matmul peak. --save-checkpoint PATH writes our final EMA weights as a
self-contained checkpoint (assets/checkpoints/mnist.safetensors is made so).

Usage: python bench/bench_mnist_cpu.py --data-root ../shared/data/mnist [--budgets 30 60 120 300 600]
           [--peer-budgets 150 300 600] [--n 1000] [--peers course diffusers] [--out bench/mnist_cpu] [--write]
           [--save-checkpoint assets/checkpoints/mnist.safetensors] [--set KEY=VALUE ...]
--set changes the recipe's TrainConfig fields for a probe (`--set loss_weighting=min_snr lr=0.004`); the section it
writes names them.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_race import time_to_reach  # noqa: E402
from bench.bench_throughput import matmul_peak  # noqa: E402
from bench.common import flags_line, machine, precision_path, publish  # noqa: E402
from bench.course_recipe import CourseRecipe  # noqa: E402
from ddpm_core import runs  # noqa: E402
from ddpm_core.classifier import SmallCNN, train_classifier  # noqa: E402
from ddpm_core.data import load_dataset  # noqa: E402
from ddpm_core.devices import cpu_native_bf16, for_sampling, uses_bf16  # noqa: E402
from ddpm_core.diffusion import Diffusion  # noqa: E402
from ddpm_core.idx import TRAIN_END, split_test_set  # noqa: E402
from ddpm_core.metrics import image_fd  # noqa: E402
from ddpm_core.models import count_parameters, describe_model  # noqa: E402
from ddpm_core.pictures import image_grid, save_png  # noqa: E402
from ddpm_core.recipes import recipe_config  # noqa: E402
from ddpm_core.sample import sample  # noqa: E402
from ddpm_core.schedules import make_schedule  # noqa: E402
from ddpm_core.trainer import Trainer  # noqa: E402

RECIPE = "cpu-mnist"
GOAL_RATIO = 10.0
NOISE_SIGMA = 0.2  # on the [0, 1] pixel scale: 0.4 in the model's [-1, 1]
GRID_N = 64


# ----------------------------------------------------------------------------------------------------------------
# The metric


class Judge:
    """FD in the classifier's feature space against the held-out images, plus its confidence and class shares."""

    def __init__(self, root: Path, held_out: torch.Tensor):
        path, self.accuracy = train_classifier("mnist", root, log=lambda _: None)
        self.net = SmallCNN(1, 10)
        self.net.load_state_dict(load_file(str(path)))  # the file evaluate's feature extractor reads
        self.net.eval()
        self.features = torch.no_grad()(self.net.features)
        self.held_out = held_out

    @torch.no_grad()
    def __call__(self, samples: torch.Tensor) -> dict:
        samples = torch.nan_to_num(samples.float(), nan=0.0, posinf=1.0, neginf=-1.0).clamp(-1, 1)
        p = torch.cat([self.net(c).softmax(1) for c in samples.split(500)])
        share = torch.bincount(p.argmax(1), minlength=10).float() / len(samples)
        return {"fd": image_fd(samples, self.held_out, self.features), "confidence": p.max(1).values.mean().item(),
                "min_share": share.min().item()}  # fmt: skip


def references(real: torch.Tensor, judge: Judge, seed: int = 1) -> dict[str, dict]:
    g = torch.Generator().manual_seed(seed)
    blurred = F.interpolate(F.avg_pool2d(real, 2), scale_factor=2, mode="nearest")
    noisy = real + 2 * NOISE_SIGMA * torch.randn(real.shape, generator=g)  # σ on [0, 1] is 2σ on [-1, 1]
    return {
        "real": judge(real),
        "blurred": judge(blurred),
        f"noisy (σ = {NOISE_SIGMA} of the pixel range)": judge(noisy),
    }


# ----------------------------------------------------------------------------------------------------------------
# Contestants: a train step, a network ε_θ(x, t) to sample, and the sample shape


class Contestant:
    def __init__(self, name: str, step: Callable[[], None], net: Callable[[], nn.Module], diffusion: Diffusion,
                 shape: tuple[int, ...], crop: int = 0):  # fmt: skip
        self.name, self.step, self.net, self.diffusion, self.shape, self.crop = name, step, net, diffusion, shape, crop

    def draw(self, n: int) -> torch.Tensor:
        net = self.net()
        net.eval()
        with torch.no_grad():
            out = sample(net, self.diffusion, n, self.shape, sampler="ddim", steps=50, clip_x0=True, seed=0,
                         record_every=10**9).samples  # fmt: skip
        c = self.crop
        return out[..., c : out.shape[-2] - c, c : out.shape[-1] - c] if c else out


def ours(root: Path, run_dir: Path, changes: dict) -> tuple[Contestant, Trainer]:
    config = recipe_config(RECIPE, **changes, data_root=str(root), steps=1_000_000, preview_every=0, checkpoint_every=0,
                           evaluate_n=0, log_every=10**9, out=str(run_dir))  # fmt: skip
    trainer = Trainer(config, run_dir, log=lambda _: None)
    batches = trainer.batches()

    def step() -> None:
        trainer.train_step(next(batches))

    net = lambda: for_sampling(trainer.ema.model, config)  # noqa: E731 — in the recipe's precision, as the app samples
    return Contestant("ours", step, net, trainer.diffusion, (1, 28, 28)), trainer


def course(x: torch.Tensor) -> Contestant:
    recipe = CourseRecipe(x, size=32)
    batches = recipe.batches()
    diffusion = Diffusion(make_schedule("linear", 1000, beta_start=1e-4, beta_end=0.02))
    return Contestant("course", lambda: recipe.train_step(next(batches)), lambda: recipe.network, diffusion,
                      (1, 32, 32), crop=2)  # fmt: skip


class DiffusersEps(nn.Module):
    """diffusers' UNet2DModel as ε_θ(x, t) (our samplers call the network with (x, t))."""

    def __init__(self):
        super().__init__()
        from diffusers import UNet2DModel

        self.unet = UNet2DModel(sample_size=28, in_channels=1, out_channels=1, layers_per_block=2,
                                block_out_channels=(32, 64, 64),
                                down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
                                up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"))  # fmt: skip

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t).sample


def diffusers_peer(x: torch.Tensor, seed: int = 0) -> Contestant:
    torch.manual_seed(seed)
    net = DiffusersEps()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    diffusion = Diffusion(make_schedule("cosine", 1000))  # = diffusers' squaredcos_cap_v2 (tests/test_schedules.py)
    g = torch.Generator().manual_seed(seed)
    state = {"perm": torch.randperm(len(x), generator=g), "pos": 0}

    def step() -> None:
        if state["pos"] + 128 > len(x):
            state["perm"], state["pos"] = torch.randperm(len(x), generator=g), 0
        x0 = x[state["perm"][state["pos"] : state["pos"] + 128]]
        state["pos"] += 128
        t = torch.randint(0, 1000, (len(x0),), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        net.train()
        loss = F.mse_loss(net(diffusion.q_sample(x0, t, noise), t), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return Contestant("diffusers", step, lambda: net, diffusion, (1, 28, 28))


# ----------------------------------------------------------------------------------------------------------------
# The race


def race(c: Contestant, budgets: list[float], judge: Judge, n: int, out: Path) -> list[dict]:
    rows, train_s, steps = [], 0.0, 0
    for budget in budgets:
        while train_s < budget:
            tick = time.perf_counter()
            c.step()
            train_s += time.perf_counter() - tick
            steps += 1
        tick = time.perf_counter()
        samples = c.draw(n)
        eval_s = time.perf_counter() - tick
        row = {"budget_s": budget, "train_s": train_s, "steps": steps, "eval_s": eval_s, **judge(samples)}
        rows.append(row)
        save_png(image_grid(samples[:GRID_N].clamp(-1, 1)), out / f"{c.name}_{int(budget)}s.png")
        print(f"  {c.name:9s} {budget:>5g} s: step {steps:>6}, FD {row['fd']:7.2f}, confidence "
              f"{row['confidence']:.3f}, smallest class share {row['min_share']:.3f}, eval {eval_s:.1f} s",
              flush=True)  # fmt: skip
    return rows


def sampling_times(c: Contestant) -> dict[str, float]:
    times = {}
    for n, repeats in ((64, 3), (1000, 1)):
        best = math.inf
        for _ in range(repeats):
            tick = time.perf_counter()
            c.draw(n)
            best = min(best, time.perf_counter() - tick)
        times[n] = best
    return times


def flops_per_image(model: nn.Module, batch: int = 128) -> float:
    """Forward + backward FLOPs of one training image (FlopCounterMode on one eager step)."""
    x, t = torch.randn(batch, 1, 28, 28), torch.randint(0, 1000, (batch,))
    with FlopCounterMode(display=False) as counter:
        model(x, t).square().mean().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / batch


# ----------------------------------------------------------------------------------------------------------------


def peak_text(peaks: dict) -> str:
    bf16 = "bf16 not native" if math.isnan(peaks[torch.bfloat16]) else f"{peaks[torch.bfloat16]:.1f} bf16"
    return f"{peaks[torch.float32]:.1f} GFLOP/s fp32, {bf16}"


def parse_changes(p: argparse.ArgumentParser, pairs: list[str]) -> dict:
    """--set KEY=VALUE pairs as TrainConfig fields; a value is read as JSON, else kept as a string."""
    changes = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            p.error(f"--set takes KEY=VALUE, got {pair!r}")
        try:
            changes[key] = json.loads(value)
        except json.JSONDecodeError:
            changes[key] = value
    try:
        recipe_config(RECIPE, **changes)
    except (TypeError, ValueError) as e:
        p.error(str(e))
    return changes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", type=Path, required=True, help="holds MNIST/raw/t10k-*-idx?-ubyte[.gz]")
    p.add_argument("--budgets", type=float, nargs="+", default=[30, 60, 120, 300, 600])
    p.add_argument("--peer-budgets", type=float, nargs="+", default=[150, 300, 600])
    p.add_argument("--peers", nargs="*", default=["course", "diffusers"], choices=["course", "diffusers"])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "mnist_cpu")
    p.add_argument("--save-checkpoint", type=Path, help="write our final EMA weights here (.safetensors)")
    p.add_argument("--write", action="store_true", help="append the section to bench/RESULTS.md")
    p.add_argument("--no-cpu-bf16", action="store_true",
                   help="train and sample in float32 on any CPU: the path of an AVX2-only laptop")  # fmt: skip
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="probe: change the recipe's TrainConfig fields (JSON values), e.g. lr=0.004")  # fmt: skip
    args = p.parse_args()
    changes = parse_changes(p, args.set + (["cpu_bf16=false"] if args.no_cpu_bf16 else []))
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="bench-mnist-cpu-"))
    root = split_test_set(args.data_root, tmp / "data")
    train = load_dataset("mnist", data_root=root)  # test images 0 … 7,999, through torchvision's MNIST loader
    held = load_dataset("mnist", data_root=root, train=False)  # 8,000 … 9,999
    judge = Judge(root, held.x)
    real = train.x[torch.randperm(len(train.x), generator=torch.Generator().manual_seed(1))[: args.n]]
    refs = references(real, judge)
    # bf16's peak only where the CPU has it: emulated on AVX2, a 2048² bf16 product takes minutes
    dtypes = (torch.float32, torch.bfloat16) if cpu_native_bf16() else (torch.float32,)
    peaks = {dtype: matmul_peak(args.threads, 2048, 5, dtype) for dtype in dtypes}
    peaks.setdefault(torch.bfloat16, math.nan)
    print(f"{machine()}; CPU flags: {flags_line()}; matmul peak {peak_text(peaks)}; classifier accuracy "
          f"{judge.accuracy:.4f}", flush=True)  # fmt: skip
    for name, r in refs.items():
        print(f"  reference {name}: FD {r['fd']:.2f}, confidence {r['confidence']:.3f}", flush=True)

    mine, trainer = ours(root, tmp / "run", changes)
    bf16 = uses_bf16(trainer.device, trainer.config.mixed_precision, trainer.config.cpu_bf16)
    flops = flops_per_image(trainer.model)
    results = {"ours": race(mine, args.budgets, judge, args.n, args.out)}
    sampling = sampling_times(mine)
    if args.save_checkpoint:
        info = runs.data_info(trainer.data)
        # the recipe's settings (data_root "data"), not the bench's
        config = recipe_config(RECIPE, **changes, steps=trainer.step)
        runs.save_weights(args.save_checkpoint, trainer.ema.model, config, trainer.model_config, trainer.step, info)
        print(f"saved {args.save_checkpoint} (step {trainer.step})", flush=True)
    peers = {"course": lambda: course(train.x), "diffusers": lambda: diffusers_peer(train.x)}
    sizes = {}
    for name in args.peers:
        contestant = peers[name]()
        sizes[name] = count_parameters(contestant.net())
        results[name] = race(contestant, args.peer_budgets, judge, args.n, args.out)

    lines = report(args, refs, results, sampling, flops, peaks, bf16, trainer, sizes, judge.accuracy,
                   time.perf_counter() - started)  # fmt: skip
    publish(lines, args.write)


def report(args, refs, results, sampling, flops, peaks, bf16, trainer, sizes, accuracy, wall_s) -> list[str]:
    ours_rows = results["ours"]
    images_per_s = ours_rows[-1]["steps"] * trainer.config.batch_size / ours_rows[-1]["train_s"]
    peak = peaks[torch.bfloat16 if bf16 else torch.float32]
    blur = refs["blurred"]["fd"]
    noisy = next(v["fd"] for k, v in refs.items() if k.startswith("noisy"))
    gflops = flops * images_per_s / 1e9
    peers = f"--peer-budgets {' '.join(f'{b:g}' for b in args.peer_budgets)}" if args.peers else "--peers"
    lines = [
        f"## MNIST 28×28 on the CPU — {time.strftime('%Y-%m-%d')} — {machine()}",
        "",
        f"`python bench/bench_mnist_cpu.py --data-root <MNIST test set> --budgets "
        f"{' '.join(f'{b:g}' for b in args.budgets)} {peers}"
        f"{' --no-cpu-bf16' if args.no_cpu_bf16 else ''}{''.join(f' --set {c}' for c in args.set)}"
        f"{' --write' if args.write else ''}` ({wall_s / 60:.0f} min). Precision path: **{precision_path(bf16)}**. "
        f"CPU flags: {flags_line()}; matmul peak on "
        f"{args.threads} threads (2048², best of 5): {peak_text(peaks)}. MNIST's test set: images "
        f"0–{TRAIN_END - 1:,} train, the rest held out. "
        f"FD in the project's MNIST classifier's feature space (its held-out accuracy {accuracy:.1%}), {args.n} "
        "samples (DDIM-50, x̂₀ clipped, same x_T) against the 2,000 held-out images; training clock stopped while "
        "evaluating.",
        "",
        f"Ours: `{RECIPE}` — {describe_model(trainer.model_config, trainer.model)}, batch "
        f"{trainer.config.batch_size}, lr {trainer.config.lr:g}, EMA {trainer.config.ema_decay}, "
        f"{'bf16 autocast' if bf16 else 'float32'}; {flops / 1e6:.0f} MFLOP per training image (forward + backward), "
        f"{images_per_s:,.0f} images/s = {gflops:.0f} GFLOP/s, {gflops / peak:.0%} of the "
        f"{'bf16' if bf16 else 'fp32'} matmul peak.",
        "",
        "| reference (n images, same metric) | FD | confidence |",
        "| --- | --- | --- |",
        *(f"| {name} | {r['fd']:.2f} | {r['confidence']:.3f} |" for name, r in refs.items()),
        "",
        "| contestant | training s | steps | FD | confidence | smallest class share |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, rows in results.items():
        size = f" ({sizes[name]:,} parameters)" if name in sizes else ""
        lines += [f"| {name}{size} | {r['budget_s']:g} | {r['steps']:,} | {r['fd']:.2f} | {r['confidence']:.3f} | "
                  f"{r['min_share']:.3f} |" for r in rows]  # fmt: skip
    fd_at = {r["budget_s"]: r["fd"] for r in ours_rows}
    lines += ["", "Goals:"]
    if 300 in fd_at:
        lines.append(f"- at 300 s FD ≤ the blurred reference ({blur:.2f}): {fd_at[300]:.2f} — "
                     f"{'met' if fd_at[300] <= blur else f'missed by {fd_at[300] / blur:.2f}×'}")  # fmt: skip
    if 120 in fd_at:
        lines.append(f"- at 120 s FD ≤ the noisy reference ({noisy:.2f}): {fd_at[120]:.2f} — "
                     f"{'met' if fd_at[120] <= noisy else f'missed by {fd_at[120] / noisy:.2f}×'}")  # fmt: skip
        lines.append(f"- stretch, the blurred level by 120 s: {'met' if fd_at[120] <= blur else 'not met'}")
    lines.append(f"- sampling with the default sampler (DDIM-50), 64 ≤ 1 s: {sampling[64]:.2f} s (best of 3); "
                 f"1,000 ≤ 10 s: {sampling[1000]:.1f} s")  # fmt: skip
    for name, rows in results.items():
        if name == "ours":
            continue
        best = min(rows, key=lambda r: r["fd"])
        ours_s, mark = time_to_reach(ours_rows, best["fd"], key="fd")
        if ours_s is None:
            lines.append(f"- {name}: best FD {best['fd']:.2f} at {best['train_s']:.0f} s; ours never reached it")
        else:
            ratio = f"{'≥ ' if mark else ''}{best['train_s'] / ours_s:.1f}×"
            lines.append(f"- {name}: best FD {best['fd']:.2f} at {best['train_s']:.0f} s; ours reached it after "
                         f"{mark}{ours_s:.1f} s: {ratio} (goal ≥ {GOAL_RATIO:g}×)")  # fmt: skip
    grids = args.out.resolve().relative_to(ROOT) if args.out.resolve().is_relative_to(ROOT) else args.out
    lines.append(f"- sample grids: `{grids}/<contestant>_<budget>s.png`; bf16 on this CPU: "
                 f"{'native' if cpu_native_bf16() else 'not native (float32)'}")  # fmt: skip
    return lines


if __name__ == "__main__":
    main()
