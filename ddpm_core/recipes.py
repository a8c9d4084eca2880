"""Recipes: named starting points for a training run, shared by the CLI (`--recipe`, `--list-recipes`) and the Train
page's picker. A recipe is a few TrainConfig field values (its overlay) over TrainConfig's defaults.

    >>> recipe_config("cpu-digits").steps                     # 1500
    >>> recipe_config("cpu-digits", steps=7, out="runs/x")     # keyword overrides, as CLI flags override a recipe
    >>> [r.title for r in RECIPES.values()]                   # what the picker shows

Slugs are stable: links (`?recipe=cpu-mnist`), the classroom file's `[defaults.train] recipe` and `--recipe` name a
recipe by its slug. Titles and notes say what a recipe trains, never how long it takes: measured times live in
bench/RESULTS.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from ddpm_core.config import TrainConfig


@dataclass(frozen=True)
class Recipe:
    slug: str  # lowercase-kebab, stable: what links, classroom files and --recipe name
    title: str  # what the picker and --list-recipes show
    note: str  # what it trains, one or two sentences
    overlay: dict  # TrainConfig field values over its defaults
    needs_gpu: bool = False  # practical on a CUDA GPU only: the Train page says so on a machine without one

    def config(self, **overrides) -> TrainConfig:
        """TrainConfig's defaults, this recipe's overlay, then overrides (ValueError for an unknown field)."""
        return TrainConfig.from_dict({**self.overlay, **overrides})


DEFAULT_RECIPE = "cpu-digits"
RECIPES: dict[str, Recipe] = {r.slug: r for r in (
    Recipe("cpu-digits", "Digits 8×8 on a CPU",
           "The tiny UNet on scikit-learn's 8×8 digits, embedded in the code (nothing to download): recognisable "
           "digits from a laptop CPU.",
           dict(dataset="digits", model="auto", image_size=0, T=1000, steps=1500, batch_size=128, lr=2e-3,
                warmup=100, ema_decay=0.999, preview_every=500, preview_n=64)),
    Recipe("cpu-mnist", "MNIST 28×28 on a CPU",
           "A UNet on 2×2 patches of MNIST's own 28×28 (32 and 64 channels at 14 and 7 px), sized for a laptop "
           "CPU, in bf16 where the CPU has it, with min-SNR-5 loss weights (Hang et al. 2023); MNIST must be on disk "
           "(the CLI's --download fetches it).",
           dict(dataset="mnist", model="patch", image_size=0, T=1000, steps=3000, batch_size=128, lr=2e-3,
                warmup=100, ema_decay=0.999, cpu_bf16=True, loss_weighting="min_snr", min_snr_gamma=5.0,
                preview_every=500, preview_n=64, evaluate_n=0)),
    Recipe("gpu-mnist", "MNIST 32×32 on a GPU",
           "The small UNet (6 M parameters) on MNIST padded to 32×32, with bf16 autocast on CUDA; MNIST must be "
           "on disk.",
           dict(dataset="mnist", model="small", image_size=32, T=1000, steps=4000, batch_size=256, lr=2e-3,
                warmup=200, ema_decay=0.999, preview_every=1000, preview_n=64),
           needs_gpu=True),
    Recipe("2d-swiss-roll", "2D: swiss roll",
           "A residual MLP learns a 2D point cloud; T = 200 steps are plenty in 2D, and a short EMA (0.99) lets the "
           "preview show the roll after 1,000 steps.",
           dict(dataset="swiss_roll", model="auto", image_size=0, T=200, steps=1000, batch_size=256, lr=5e-3,
                warmup=100, ema_decay=0.99, preview_every=250, preview_n=1000)),
)}  # fmt: skip


FORMER_TITLES = {  # what links and classroom files named them by before recipes had slugs
    "CPU: digits in a minute": "cpu-digits",
    "2D: swiss roll in 20 s": "2d-swiss-roll",
    "GPU: MNIST 32×32": "gpu-mnist",
}


def recipe_slug(text) -> str | None:
    """The slug of the recipe text names — by its slug, its title (as the address bar writes it) or a former
    title — or None."""
    if not isinstance(text, str):
        return None
    if text in RECIPES:
        return text
    return {r.title: slug for slug, r in RECIPES.items()}.get(text) or FORMER_TITLES.get(text)


def recipe(slug: str) -> Recipe:
    """The recipe named slug; ValueError listing the valid slugs for any other."""
    if slug not in RECIPES:
        raise ValueError(f"unknown recipe {slug!r}; valid: {', '.join(RECIPES)}")
    return RECIPES[slug]


def recipe_config(slug: str, **overrides) -> TrainConfig:
    """The TrainConfig of recipe slug with overrides applied (field name → value)."""
    return recipe(slug).config(**overrides)
