"""Write notebooks/ddpm_exercise.ipynb and notebooks/ddpm_solution.ipynb from one source, so that they never drift:
the solution is the exercise with the TODO bodies filled in.

    python notebooks/make_notebooks.py            # rewrites both notebooks (cells without outputs)
    python notebooks/make_notebooks.py --check    # exit 1 when a committed notebook differs from this source

Each exercise is a function whose solution is written out here; the exercise notebook keeps its signature and
docstring and replaces the body with `raise NotImplementedError("TODO: …")`. solution_source() is the solution as
one Python file (what the grader's tests check: python -m ddpm_core.exercises check FILE.py).
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # run as a script or loaded from its path (tests/test_exercises.py): its cells beside it

import notebook_cells as nc  # noqa: E402

NOTEBOOKS = {"exercise": HERE / "ddpm_exercise.ipynb", "solution": HERE / "ddpm_solution.ipynb"}

IMPORTS = """\
import torch

from ddpm_core import extract  # arr[t] shaped (B, 1, 1, 1) in x's dtype: extract(arr, t, x)
"""

# (title and explanation, the solution's code, the TODO message)
EXERCISES = [
    (
        "## Exercise 0 — the data in [−1, 1]\n\n"
        "Pictures arrive as pixels in [0, 1] (torchvision's `ToTensor`, or PIL's values / 255). Ho et al. (§3.3) scale "
        "them linearly to [−1, 1]: the same scale as the noise, so that x_T ≈ N(0, I) and the reverse process starts "
        "from the right place, and so that clipping x̂₀ to [−1, 1] while sampling makes sense. The course's MNIST "
        "notebook left them in [0, 1].",
        '''\
def to_model_range(pixels):
    """Pixels in [0, 1] → x_0 in [−1, 1]: 0 (background) ↦ −1, 1 ↦ 1.

    pixels: (N, C, H, W) float32 in [0, 1]. Returns x_0 with the same shape and dtype.
    """
    return 2 * pixels - 1
''',
        "map each pixel value x in [0, 1] to 2x − 1",
    ),
    (
        "## Exercise 1 — the noise schedule\n\n"
        "Ho et al. take β_t linear from β_1 = 10⁻⁴ to β_T = 0.02 with T = 1000; α_t = 1 − β_t and "
        "ᾱ_t = ∏_{s≤t} α_s. **Index convention, used everywhere below:** arrays have length T and index `i` holds "
        "the paper's t = i + 1 (as in the course's code), so `betas[0]` is β_1 and `alpha_bars[T - 1]` is ᾱ_T. "
        "Build them in float64: ᾱ_t is a product of up to T numbers.",
        '''\
def make_schedule(T, beta_start=1e-4, beta_end=0.02):
    """The linear schedule (Ho et al. §4): β_t evenly spaced from beta_start (β_1) to beta_end (β_T),
    α_t = 1 − β_t and ᾱ_t = ∏_{s≤t} α_s.

    Returns (betas, alphas, alpha_bars), each (T,) float64; index i holds the paper's t = i + 1.
    """
    betas = torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
    alphas = 1 - betas
    alpha_bars = torch.cumprod(alphas, dim=0)
    return betas, alphas, alpha_bars
''',
        "betas with torch.linspace(..., dtype=torch.float64), then α_t and their cumulative product",
    ),
    (
        "## Exercise 2 — the forward process q(x_t | x_0)\n\n"
        "Iterating q(x_t | x_{t−1}) = N(√(1 − β_t) x_{t−1}, β_t I) gives x_t in one jump (Ho et al. eq. 4): "
        "x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε with ε ~ N(0, I). `t` holds one **0-based** index per image. "
        "`extract(arr, t, x)` gives `arr[t]` shaped (B, 1, 1, 1) in x's dtype, ready to multiply (B, C, H, W).",
        '''\
def add_noise(x0, t, noise, alpha_bars):
    """Sample q(x_t | x_0) in closed form (Ho et al. eq. 4): x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε.

    x0, noise: (B, C, H, W) float32; t: (B,) long, 0-based indices (t = 0 is the paper's t = 1);
    alpha_bars: (T,) float64. Returns x_t, (B, C, H, W), in x0's dtype.
    """
    sqrt_alpha_bar = extract(alpha_bars.sqrt(), t, x0)  # (B, 1, 1, 1)
    sqrt_one_minus_alpha_bar = extract((1 - alpha_bars).sqrt(), t, x0)
    return sqrt_alpha_bar * x0 + sqrt_one_minus_alpha_bar * noise
''',
        "x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε, with ᾱ_t = alpha_bars[t] shaped (B, 1, 1, 1) by extract",
    ),
    (
        "## Exercise 3 — the training loss L_simple\n\n"
        "Ho et al. drop the weights of the variational bound and train ε_θ to predict the noise (eq. 14, "
        "Algorithm 1): L_simple = E_{t, x_0, ε} ‖ε − ε_θ(√ᾱ_t x_0 + √(1 − ᾱ_t) ε, t)‖². The network is called as "
        "`model(x_t, t)` with the same 0-based indices t. Average the squared error over every element.",
        '''\
def training_loss(model, x0, t, noise, alpha_bars):
    """L_simple (Ho et al. eq. 14): the mean of (ε − ε_θ(x_t, t))² over the batch and every pixel.

    model: ε_θ, called as model(x_t, t); x0, noise: (B, C, H, W); t: (B,) long, 0-based; alpha_bars: (T,).
    Returns a scalar tensor with a gradient (call .backward() on it).
    """
    x_t = add_noise(x0, t, noise, alpha_bars)
    return ((noise - model(x_t, t)) ** 2).mean()
''',
        "noise x0 into x_t with add_noise, then the mean squared error between ε and model(x_t, t)",
    ),
    (
        "## Exercise 4 — one reverse step\n\n"
        "p_θ(x_{t−1} | x_t) = N(μ_θ(x_t, t), σ_t² I) with (Ho et al. eq. 11) "
        "μ_θ = 1/√α_t · (x_t − β_t/√(1 − ᾱ_t) · ε_θ(x_t, t)), then x_{t−1} = μ_θ + σ_t z (Algorithm 2, line 4). "
        'Two choices of σ_t² work equally well in the paper: β_t (`variance="beta"`, the course\'s) and '
        'β̃_t = (1 − ᾱ_{t−1})/(1 − ᾱ_t) · β_t (`variance="posterior"`, the posterior\'s). No noise on the last step '
        "(index 0, the paper's t = 1).\n\n"
        "**Clipping x̂₀** (`clip=True`, the default; Ho et al.'s released code does it too): the network's estimate "
        "x̂₀ = (x_t − √(1 − ᾱ_t) ε_θ)/√ᾱ_t (eq. 15) can leave [−1, 1] at large t. Clip it, then step to the "
        "posterior mean μ̃_t(x_t, x̂₀) = √ᾱ_{t−1} β_t/(1 − ᾱ_t) · x̂₀ + √α_t (1 − ᾱ_{t−1})/(1 − ᾱ_t) · x_t "
        "(eq. 7, with ᾱ_0 = 1). Without clipping, this mean is exactly eq. 11.",
        '''\
def reverse_step(model, x_t, t, z, betas, alphas, alpha_bars, variance="posterior", clip=True):
    """One step of Algorithm 2: x_{t−1} = μ + σ_t z, with μ from eq. 11 (or μ̃_t(x_t, clip(x̂₀)) when clip).

    model: ε_θ, called as model(x_t, t) with t a (B,) long tensor; x_t, z: (B, C, H, W); t: an int, the
    0-based index T − 1 … 0; betas, alphas, alpha_bars: (T,) float64. variance: "beta" (σ_t² = β_t) or
    "posterior" (σ_t² = β̃_t). No noise at t = 0 (z may be None there). Returns x_{t−1}, (B, C, H, W).
    """
    if variance not in ("beta", "posterior"):
        raise ValueError(f"unknown variance {variance!r}; valid values: beta, posterior")
    beta, alpha, alpha_bar = float(betas[t]), float(alphas[t]), float(alpha_bars[t])
    alpha_bar_prev = float(alpha_bars[t - 1]) if t > 0 else 1.0  # ᾱ_{t−1}, with ᾱ_0 = 1
    eps = model(x_t, torch.full((x_t.shape[0],), t, device=x_t.device))
    if clip:
        x0_hat = ((x_t - (1 - alpha_bar) ** 0.5 * eps) / alpha_bar**0.5).clamp(-1, 1)  # eq. 15
        coef_x0 = alpha_bar_prev**0.5 * beta / (1 - alpha_bar)
        coef_xt = alpha**0.5 * (1 - alpha_bar_prev) / (1 - alpha_bar)
        mean = coef_x0 * x0_hat + coef_xt * x_t  # μ̃_t, eq. 7
    else:
        mean = (x_t - beta / (1 - alpha_bar) ** 0.5 * eps) / alpha**0.5  # eq. 11
    if t == 0:
        return mean  # x_0: no noise on the last step
    sigma2 = beta if variance == "beta" else (1 - alpha_bar_prev) / (1 - alpha_bar) * beta
    return mean + sigma2**0.5 * z
''',
        "ε_θ(x_t, t), then the mean (eq. 11, or μ̃_t of the clipped x̂₀), then + σ_t z unless t == 0",
    ),
    (
        "## Exercise 5 — sampling (Algorithm 2)\n\n"
        "Start from x_T ~ N(0, I) and apply `reverse_step` for the indices T − 1, …, 0 (the paper's t = T, …, 1). "
        "Draw every random number from `generator`, in this order — x_T first, then one z per step with index "
        "t ≥ 1 — so that the grader can replay your noise exactly. Run it under `torch.no_grad()`.",
        '''\
def sample(model, shape, betas, alphas, alpha_bars, generator, variance="posterior", clip=True):
    """Algorithm 2: x_T ~ N(0, I), then x_{t−1} = reverse_step(x_t, t) for t = T − 1 … 0 (0-based).

    shape: (B, C, H, W); generator: a torch.Generator, for x_T = torch.randn(shape, generator=generator) and then
    one z = torch.randn(shape, generator=generator) per step with t ≥ 1. Returns the list [x_T, x_{T−1}, …, x_0]
    (T + 1 tensors of `shape`): the last one is the sample.
    """
    x = torch.randn(shape, generator=generator, device=generator.device)
    xs = [x]
    for t in reversed(range(len(betas))):
        z = torch.randn(shape, generator=generator, device=generator.device) if t > 0 else None
        x = reverse_step(model, x, t, z, betas, alphas, alpha_bars, variance, clip)
        xs.append(x)
    return xs
''',
        "draw x_T, then loop t = T − 1 … 0 calling reverse_step (a fresh z for t ≥ 1), keeping every x_t",
    ),
]


def exercise_body(code: str, todo: str) -> str:
    """The function of `code` with its body after the docstring replaced by raise NotImplementedError("TODO: …")."""
    fn = ast.parse(code).body[0]
    assert isinstance(fn, ast.FunctionDef) and isinstance(fn.body[0], ast.Expr), "an exercise starts with a docstring"
    lines = code.splitlines()
    kept = lines[: fn.body[0].end_lineno]
    line = f'    raise NotImplementedError("TODO: {todo}")'
    if len(line) > 120:  # the line length ruff formats notebooks to
        line = f'    raise NotImplementedError(\n        "TODO: {todo}"\n    )'
    return "\n".join([*kept, line]) + "\n"


def solution_source() -> str:
    """Every exercise's solution as one Python file (the imports the notebook's functions need, then the functions)."""
    return IMPORTS + "".join(f"\n\n{code}" for _, code, _ in EXERCISES)


def cells(kind: str) -> list[dict]:
    """The notebook's cells, the exercise's or the solution's (they differ only in the exercise bodies)."""
    title = nc.INTRO if kind == "exercise" else nc.INTRO.replace("— exercise", "— solution", 1)
    out = [_md(title), _code(nc.SETUP), _code(IMPORTS + "\nprint(extract.__doc__)")]
    for text, code, todo in EXERCISES:
        out += [_md(text), _code(code if kind == "solution" else exercise_body(code, todo))]
    out += [_md(nc.GRADER_MD), _code(nc.GRADER), _md(nc.DATA_MD), _code(nc.DATA), _md(nc.TRAIN_MD), _code(nc.TRAIN)]
    out += [_md(nc.SAMPLE_MD), _code(nc.SAMPLE), _md(nc.OUTRO)]
    return out


def _source(text: str) -> list[str]:
    lines = text.rstrip("\n").split("\n")
    return [line + "\n" for line in lines[:-1]] + [lines[-1]]


def _md(text: str) -> dict:
    return {"cell_type": "markdown", "metadata": {}, "source": _source(text)}


def _code(text: str) -> dict:
    return {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": _source(text)}


def notebook(kind: str) -> str:
    """The .ipynb text (nbformat 4.5) of the exercise or solution notebook; cells get stable ids."""
    body = cells(kind)
    for i, cell in enumerate(body):
        cell["id"] = f"{kind[:3]}-{i:02d}"
    nb = {
        "cells": body,
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args not in ([], ["--check"]):
        print("error: usage: python notebooks/make_notebooks.py [--check]", file=sys.stderr)
        return 2
    stale = [path for kind, path in NOTEBOOKS.items() if not path.is_file() or path.read_text() != notebook(kind)]
    if args == ["--check"]:
        for path in stale:
            print(f"{path.name} differs from make_notebooks.py: run python notebooks/make_notebooks.py")
        return 1 if stale else 0
    for kind, path in NOTEBOOKS.items():
        path.write_text(notebook(kind))
    print(f"wrote {', '.join(p.name for p in NOTEBOOKS.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
