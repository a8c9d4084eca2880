"""The notebooks' cells around the exercises, in order: the introduction, the setup (finding ddpm_core, the
settings), the grader, the data, training with the student's loss, sampling with the student's sampler, and where to
go next. Markdown cells end in _MD (INTRO and OUTRO are markdown too); the others are code. make_notebooks.py puts
them together with the exercises (the functions to write) into both notebooks."""

INTRO = """\
# DDPM from scratch — exercise

Denoising diffusion probabilistic models (Ho, Jain & Abbeel 2020), as the course presents them: you write the \
diffusion math (six short functions), and this notebook trains a small UNet from `ddpm_core` with your loss and \
samples digits with your sampler. The grader (`ddpm_core.exercises`) runs each of your functions next to \
ddpm_core's own on the same inputs and the same noise, and says what is wrong in the course's notation.

Fill in each `raise NotImplementedError("TODO: …")`, run the grader cell, repeat. The cells after the grader skip \
(with a message) until the functions they need are written.

Settings come from environment variables: `DDPM_NOTEBOOK_STEPS` (training steps, default 3000), `DDPM_NOTEBOOK_T` \
(diffusion steps T, default 1000), `DDPM_NOTEBOOK_DATASET` (`auto`: MNIST when it is on disk, else the 8×8 digits \
that ship with scikit-learn)."""

SETUP = """\
import os
import sys
from pathlib import Path

try:
    import ddpm_core  # installed (pip install the repository), or already on the path
except ImportError:  # a clone: walk up from here to the folder that holds ddpm_core/
    here = Path.cwd().resolve()
    root = next((p for p in (here, *here.parents) if (p / "ddpm_core" / "__init__.py").is_file()), None)
    if root is None:
        raise ImportError("ddpm_core not found: pip install the repository, or open this inside a clone") from None
    sys.path.insert(0, str(root))
    import ddpm_core

STEPS = int(os.environ.get("DDPM_NOTEBOOK_STEPS", "3000"))  # optimiser steps
T = int(os.environ.get("DDPM_NOTEBOOK_T", "1000"))  # diffusion steps
DATASET = os.environ.get("DDPM_NOTEBOOK_DATASET", "auto")  # auto, digits or mnist
N_SAMPLES = 64  # images sampled at the end
SEED = 0
print(f"ddpm_core from {Path(ddpm_core.__file__).parent}; {STEPS} training steps, T = {T}, data set {DATASET}")
"""

GRADER_MD = """\
## The grader

One row per exercise: ✓ passed, ✗ failed (with what is wrong), · not done yet. The same check runs from a shell on \
a file that defines these functions: `python -m ddpm_core.exercises check my_ddpm.py`."""

GRADER = """\
from ddpm_core.exercises import check_all

results = check_all(globals())
done = {r.name: r.done for r in results}  # written, right or wrong: the cells below run what is written
"""

DATA_MD = """\
## The data

`ddpm_core.data.load_dataset` gives images already in [−1, 1]; here they are turned back into pixels in [0, 1], so \
that your `to_model_range` does the scaling. MNIST (28×28) is used when torchvision's files are under `data/`, \
else scikit-learn's 1797 digits (8×8), which need no download and train in minutes on a CPU."""

DATA = """\
from IPython.display import Image, display

from ddpm_core.data import load_dataset
from ddpm_core.pictures import image_grid, png_bytes


def mnist_on_disk(root):
    try:
        from ddpm_core.images import datasets_on_disk  # needs torchvision
    except ImportError:
        return False
    return any(d.name == "mnist" and d.present for d in datasets_on_disk(root))


data_root = next((p for p in (Path("data"), Path(ddpm_core.__file__).parent.parent / "data") if p.is_dir()), "data")
name = DATASET if DATASET != "auto" else ("mnist" if mnist_on_disk(data_root) else "digits")
pixels = (load_dataset(name, data_root=data_root).x + 1) / 2  # (N, 1, H, W) in [0, 1]
print(f"{name}: {tuple(pixels.shape)} pixels in [{pixels.min():.0f}, {pixels.max():.0f}]")
display(Image(png_bytes(image_grid(pixels[:64] * 2 - 1))))
x0 = None
if done["to_model_range"]:
    x0 = to_model_range(pixels)
    print(f"x_0 in [{x0.min():.2f}, {x0.max():.2f}]")
else:
    print("Skipped: to_model_range is not done yet, so there is no x_0 to train on.")
"""

TRAIN_MD = """\
## Training with your loss

A small UNet from `ddpm_core.models` (the settings of the app's CPU recipe: widths, learning rate, warm-up, \
gradient clipping), trained with your `training_loss` on t uniform over 0 … T − 1 (Algorithm 1). An exponential \
moving average of the weights (`ddpm_core.ema`, as Ho et al. use) is what samples: the raw weights of a short run \
are noisier."""

TRAIN = """\
import time

from ddpm_core.ema import EMA
from ddpm_core.models import build_model
from ddpm_core.recipes import recipe_config

model = ema = None
needed = ("to_model_range", "make_schedule", "add_noise", "training_loss")
if x0 is None or not all(done[n] for n in needed):
    print(f"Skipped training: it needs {', '.join(n for n in needed if not done[n])} (not done yet).")
else:
    recipe = recipe_config("cpu-mnist" if name == "mnist" else "cpu-digits")
    betas, alphas, alpha_bars = make_schedule(T)
    torch.manual_seed(SEED)
    model = build_model(recipe.model_config(in_channels=x0.shape[1], image_size=x0.shape[-1]))
    ema = EMA(model, recipe.ema_decay)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr)
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / recipe.warmup))
    g = torch.Generator().manual_seed(SEED)
    started, losses = time.perf_counter(), []
    for step in range(STEPS):
        batch = x0[torch.randint(0, len(x0), (recipe.batch_size,), generator=g)]
        t = torch.randint(0, T, (len(batch),), generator=g)  # 0-based indices, uniform (Algorithm 1)
        noise = torch.randn(batch.shape, generator=g)
        loss = training_loss(model, batch, t, noise, alpha_bars)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        optimizer.step()
        warmup.step()
        ema.update(model, step)
        losses.append(loss.item())
        if (step + 1) % max(1, STEPS // 10) == 0 or step + 1 == STEPS:
            recent = sum(losses[-50:]) / len(losses[-50:])
            print(f"step {step + 1:5d}/{STEPS}  loss {recent:.4f}  {time.perf_counter() - started:5.1f} s")
"""

SAMPLE_MD = """\
## Sampling with your sampler

Your `sample` from x_T ~ N(0, I) with the EMA weights, σ_t² = β̃_t and x̂₀ clipped. The GIF shows x_t (left) and \
the network's estimate x̂₀ (right) as t goes from T to 0; it is written to `ddpm_samples.gif`, the final grid to \
`ddpm_samples.png`. Try `variance="beta"` (the course's choice) or `clip=False` and compare."""

SAMPLE = """\
from ddpm_core.gif import trajectory_gif
from ddpm_core.pictures import save_png
from ddpm_core.sample import StepRecord

if ema is None or not all(done[n] for n in ("reverse_step", "sample")):
    missing = [n for n in ("reverse_step", "sample") if not done[n]]
    print(f"Skipped sampling: {', '.join(missing) or 'training'} not done yet.")
else:
    net = ema.model
    with torch.no_grad():
        started = time.perf_counter()
        xs = sample(net, (N_SAMPLES, *x0.shape[1:]), betas, alphas, alpha_bars, torch.Generator().manual_seed(SEED))
        print(f"{N_SAMPLES} samples, {T} steps, in {time.perf_counter() - started:.1f} s")
        frames = []  # about 40 frames: x_t and x̂₀ = (x_t − √(1 − ᾱ_t) ε_θ)/√ᾱ_t (eq. 15)
        for k in [*range(0, T, max(1, T // 40)), T]:
            i = T - 1 - k  # x_t's 0-based index; −1 for the final x_0
            x = xs[k]
            if i < 0:
                frames.append(StepRecord(-1, x, x))
                continue
            eps = net(x, torch.full((len(x),), i))
            x0_hat = (x - (1 - alpha_bars[i]).sqrt().float() * eps) / alpha_bars[i].sqrt().float()
            frames.append(StepRecord(i, x, x0_hat.clamp(-1, 1)))
    Path("ddpm_samples.gif").write_bytes(trajectory_gif(frames))
    save_png(image_grid(xs[-1]), "ddpm_samples.png")
    print(f"wrote ddpm_samples.gif ({len(frames)} frames) and ddpm_samples.png")
    display(Image(filename="ddpm_samples.gif"))
"""

OUTRO = """\
## Going further

- Train longer (`DDPM_NOTEBOOK_STEPS`), or fewer diffusion steps (`DDPM_NOTEBOOK_T=200`): the schedule then needs a \
larger β_T to reach x_T ≈ N(0, I) — check ᾱ_T = `alpha_bars[-1]`.
- Sample with `variance="beta"` and `"posterior"`, with and without `clip`: Ho et al. report similar sample quality \
for both σ_t²; without clipping, early x̂₀ overshoot.
- The app (`streamlit run explorer/app.py`) shows every quantity here interactively, and `ddpm_core` holds the same \
equations (`ddpm_core/equations.py` maps each of Ho et al.'s equations to its function)."""
