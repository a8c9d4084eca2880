"""2D toy distributions: each is a formula in raw coordinates plus the exact mean and variance of that formula.

A sample is standardised with those exact moments, never with the sample's own, so every n and seed gets the same
map (n = 1 included):

    x = (raw − mean) / scale,   scale = √(½ (Var raw_x + Var raw_y))

One isotropic scale per toy keeps each shape's aspect ratio (the moons stay moons) and gives E‖x‖² = 2, the same as
the prior N(0, I₂); each coordinate then has mean 0 and a standard deviation near 1 (from 0.71 for the moons'
y to 1.22 for their x; within 1 ± 0.03 for the others).
The closed forms are under each toy; `tests/test_data.py` checks them against a 200 000-point sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Sampler = Callable[[np.random.Generator, int], np.ndarray]  # (rng, n) -> raw (n, 2) float64


@dataclass(frozen=True)
class Toy:
    sample: Sampler
    mean: tuple[float, float]  # E[raw], exact
    var: tuple[float, float]  # Var[raw] per coordinate, exact
    summary: str

    @property
    def scale(self) -> float:
        """√(½ (Var raw_x + Var raw_y)): the one divisor that makes E‖x‖² = 2."""
        return math.sqrt((self.var[0] + self.var[1]) / 2)


def _noise(rng: np.random.Generator, n: int, std: float) -> np.ndarray:
    return rng.normal(0.0, std, (n, 2))


# ----------------------------------------------------------------------------------------------------------------
# Swiss roll: (t cos t, t sin t), t ~ U[a, b] — sklearn make_swiss_roll's x and z coordinates — plus N(0, σ²).
# With a = 1.5π, b = 4.5π (so sin a = −1, sin b = 1, cos a = cos b = 0, cos 2a = cos 2b = −1) and b − a = 3π:
#   E x = [t sin t + cos t]_a^b / 3π = 2,           E y = [sin t − t cos t]_a^b / 3π = 2 / 3π
#   E x² = ((b³ − a³)/6 − 3π/4) / 3π,               E y² = ((b³ − a³)/6 + 3π/4) / 3π

SWISS_T = (1.5 * math.pi, 4.5 * math.pi)
SWISS_NOISE = 0.5  # in raw units; the arms are 2π apart


def swiss_roll(rng: np.random.Generator, n: int) -> np.ndarray:
    t = rng.uniform(*SWISS_T, n)
    return np.stack([t * np.cos(t), t * np.sin(t)], 1) + _noise(rng, n, SWISS_NOISE)


def _swiss_roll_moments() -> tuple[tuple[float, float], tuple[float, float]]:
    a, b = SWISS_T
    cubic = (b**3 - a**3) / 6 / (b - a)
    mean = (2.0, 2 / (3 * math.pi))
    var = (cubic - 0.25 - mean[0] ** 2 + SWISS_NOISE**2, cubic + 0.25 - mean[1] ** 2 + SWISS_NOISE**2)
    return mean, var


# ----------------------------------------------------------------------------------------------------------------
# Two moons (sklearn make_moons's curves): with probability ½ the upper moon (cos θ, sin θ), else the lower one
# (1 − cos θ, ½ − sin θ), θ ~ U[0, π], plus N(0, σ²). E cos θ = 0, E sin θ = 2/π, E cos²θ = E sin²θ = ½, so
#   E = (½, ¼),   Var x = 1 − ¼ = ¾,   Var y = (½ + ¾ − 2/π)/2 − 1/16 = 9/16 − 1/π   (each + σ²)

MOONS_NOISE = 0.1


def moons(rng: np.random.Generator, n: int) -> np.ndarray:
    theta = rng.uniform(0.0, math.pi, n)
    upper = rng.random(n) < 0.5
    x = np.where(upper, np.cos(theta), 1 - np.cos(theta))
    y = np.where(upper, np.sin(theta), 0.5 - np.sin(theta))
    return np.stack([x, y], 1) + _noise(rng, n, MOONS_NOISE)


# ----------------------------------------------------------------------------------------------------------------
# 8 Gaussians: centres at angles kπ/4 on the unit circle, k = 0 … 7, each N(centre, σ² I).
#   E = 0,   Var x = Var y = E cos²(kπ/4) + σ² = ½ + σ²

GAUSSIANS_NOISE = 0.1  # σ / radius: the clusters are ~4σ apart in angle


def eight_gaussians(rng: np.random.Generator, n: int) -> np.ndarray:
    angle = rng.integers(0, 8, n) * (math.pi / 4)
    return np.stack([np.cos(angle), np.sin(angle)], 1) + _noise(rng, n, GAUSSIANS_NOISE)


# ----------------------------------------------------------------------------------------------------------------
# Checkerboard: uniform on the 8 "black" cells of a 4×4 board on [−2, 2]², black meaning floor(x+2) + floor(y+2)
# is even. Each column and each row holds two black cells, so both marginals are U[−2, 2]:
#   E = 0,   Var x = Var y = 4²/12 = 4/3

BOARD = 4  # cells per side, each 1 × 1 in raw units


def checkerboard(rng: np.random.Generator, n: int) -> np.ndarray:
    col = rng.integers(0, BOARD, n)
    row = 2 * rng.integers(0, BOARD // 2, n) + col % 2  # the black rows of this column
    cells = np.stack([col, row], 1)
    return cells + rng.random((n, 2)) - BOARD / 2


# ----------------------------------------------------------------------------------------------------------------
# Concentric circles (sklearn make_circles with factor ½): radius 1 or ½ with probability ½ each, θ ~ U[0, 2π),
# plus N(0, σ²). E = 0,   Var x = Var y = E r² · E cos²θ + σ² = (1 + ¼)/2 · ½ + σ² = 5/16 + σ²

CIRCLE_RADII = (1.0, 0.5)
CIRCLES_NOISE = 0.05


def circles(rng: np.random.Generator, n: int) -> np.ndarray:
    theta = rng.uniform(0.0, 2 * math.pi, n)
    radius = np.where(rng.random(n) < 0.5, *CIRCLE_RADII)
    return radius[:, None] * np.stack([np.cos(theta), np.sin(theta)], 1) + _noise(rng, n, CIRCLES_NOISE)


# ----------------------------------------------------------------------------------------------------------------

TOYS: dict[str, Toy] = {
    "swiss_roll": Toy(swiss_roll, *_swiss_roll_moments(), "a 2D Swiss roll: one spiral arm"),
    "moons": Toy(
        moons,
        (0.5, 0.25),
        (0.75 + MOONS_NOISE**2, 9 / 16 - 1 / math.pi + MOONS_NOISE**2),
        "two interleaved half circles",
    ),
    "8gaussians": Toy(eight_gaussians, (0.0, 0.0), (0.5 + GAUSSIANS_NOISE**2,) * 2, "eight Gaussian blobs on a circle"),
    "checkerboard": Toy(checkerboard, (0.0, 0.0), (4 / 3, 4 / 3), "uniform on the dark squares of a 4×4 board"),
    "circles": Toy(circles, (0.0, 0.0), (5 / 16 + CIRCLES_NOISE**2,) * 2, "two concentric rings, radii 1 and ½"),
}


def sample_toy(name: str, n: int, seed: int) -> np.ndarray:
    """n fresh points of the toy `name`, standardised with its exact moments: (n, 2) float64."""
    toy = TOYS[name]
    raw = toy.sample(np.random.default_rng(seed), n)
    return (raw - np.asarray(toy.mean)) / toy.scale
