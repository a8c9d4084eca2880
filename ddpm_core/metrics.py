"""Sample-quality measures that stay meaningful for short runs and a few hundred samples.

Images: the Fréchet distance (FD) between Gaussians fitted to two sample sets, in pixel space or in a feature space,
and, for the 8×8 scikit-learn digits, a small classifier's confidence and class histogram.
Points (N, 2): the kernel maximum mean discrepancy (MMD) and the sliced Wasserstein distance to a fresh ground-truth
sample. Everything is computed in float64 numpy; inputs may be numpy arrays or torch tensors on any device.

    >>> digits_report(samples)              # samples (N, 1, 8, 8) in [-1, 1]
    {'pixel_fd': …, 'confidence': …, 'class_histogram': [10 counts], 'n': N}
    >>> points_report(samples, reference)   # (N, 2) and a fresh ground-truth (M, 2)
    {'mmd': …, 'sliced_wasserstein': …, 'n': N}
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from ddpm_core.data import digits_arrays

DIGITS_SEED = 0  # fixes the classifier's train/held-out split, so every process trains the same model
DIGITS_HELD_OUT = 0.25  # fraction of the 1797 digits kept out of training to measure accuracy
FEATURE_BATCH = 256  # images per call of a feature extractor: bounds its memory on large sample sets
KERNEL_BLOCK = 2048  # rows per block of a kernel matrix: 2048 × M float64 stays small for any M we use

ArrayLike = np.ndarray | Tensor


def _as_float64(x: ArrayLike) -> np.ndarray:
    """A float64 numpy copy of a numpy array or a torch tensor (any device, grad or not)."""
    if isinstance(x, Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def _check_sets(a: np.ndarray, b: np.ndarray, min_n: int) -> None:
    for name, x in (("a", a), ("b", b)):
        if x.ndim != 2:
            raise ValueError(f"{name} must be a (N, D) array of N samples, got shape {x.shape}")
        if len(x) < min_n:
            raise ValueError(f"{name} needs at least {min_n} samples, got {len(x)}")
        if not np.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or infinite values")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must have the same dimension, got {a.shape[1]} and {b.shape[1]}")


# ----------------------------------------------------------------------------------------------------------------
# Fréchet distance


def _psd_sqrt(cov: np.ndarray) -> np.ndarray:
    """Σ^½ of a symmetric positive semi-definite (D, D) matrix; round-off negative eigenvalues count as 0."""
    w, v = np.linalg.eigh(cov)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def _mean_cov(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of x (N, D), N ≥ 2."""
    return x.mean(0), np.atleast_2d(np.cov(x, rowvar=False))


def frechet_distance_from_stats(mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray) -> float:
    """d² = ‖μa − μb‖² + Tr(Σa + Σb − 2 (Σa Σb)^½) between N(μa, Σa) and N(μb, Σb); μ (D,), Σ (D, D).

    Tr (Σa Σb)^½ is the sum of the singular values of Σa^½ Σb^½ (both products have the eigenvalues of
    Σa^½ Σb Σa^½). Taking symmetric square roots by eigen-decomposition keeps this real and stable for singular Σ
    (fewer samples than dimensions), where scipy's sqrtm of the non-symmetric product can go complex.
    """
    trace_sqrt = np.linalg.svd(_psd_sqrt(cov_a) @ _psd_sqrt(cov_b), compute_uv=False).sum()
    d2 = np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_sqrt
    return max(float(d2), 0.0)  # round-off can take identical sets a few ulps below 0


def frechet_distance(a: ArrayLike, b: ArrayLike) -> float:
    """Fréchet distance between Gaussians fitted to a (N, D) and b (M, D), in float64; N, M ≥ 2.

    Squared, like FID: its units are those of the features squared. 0 for identical sets, symmetric, ≥ 0.

    Raises:
        ValueError: if a or b is not 2-D, has fewer than 2 rows or non-finite values, or their D differ.
    """
    a, b = _as_float64(a), _as_float64(b)
    _check_sets(a, b, min_n=2)
    return frechet_distance_from_stats(*_mean_cov(a), *_mean_cov(b))


def _images_to_unit(x: ArrayLike) -> np.ndarray:
    """Images (N, C, H, W) in [-1, 1] → (N, C·H·W) float64 in [0, 1], clipped."""
    x = _as_float64(x)
    if x.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {x.shape}")
    return np.clip((x.reshape(len(x), -1) + 1.0) / 2.0, 0.0, 1.0)


def _features(x: ArrayLike, features: Callable[[Tensor], Tensor]) -> np.ndarray:
    """features applied in batches to x (N, C, H, W) as a float32 tensor in [-1, 1] → (N, F) float64."""
    x = torch.as_tensor(x).float().clamp(-1, 1)
    with torch.no_grad():
        out = [features(chunk).reshape(len(chunk), -1) for chunk in x.split(FEATURE_BATCH)]
    return _as_float64(torch.cat(out))


def image_fd(samples: ArrayLike, reference: ArrayLike, features: Callable[[Tensor], Tensor] | None = None) -> float:
    """Fréchet distance between two image sets, samples (N, C, H, W) and reference (M, C, H, W), both in [-1, 1].

    Without features: in pixel space, each image a C·H·W vector in [0, 1]. With features: in the space of
    features(x) (B, F), which receives float32 batches of B ≤ FEATURE_BATCH images still in [-1, 1] (clipped), on
    the CPU, under no_grad — the feature extractor moves them to its device if it needs to.
    """
    if features is None:
        return frechet_distance(_images_to_unit(samples), _images_to_unit(reference))
    return frechet_distance(_features(samples, features), _features(reference, features))


# ----------------------------------------------------------------------------------------------------------------
# The scikit-learn digits: pixel FD against all 1797 of them, and a classifier


@functools.cache
def _real_digits() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 scikit-learn digits as (1797, 64) float64 in [0, 1] (pixel / 16), and their labels (1797,)."""
    images, y = digits_arrays()
    return images.reshape(len(images), 64) / 16.0, y


@functools.cache
def _real_digit_stats() -> tuple[np.ndarray, np.ndarray]:
    return _mean_cov(_real_digits()[0])


def _digits_to_unit(samples: ArrayLike) -> np.ndarray:
    """Digits (N, 1, 8, 8) in [-1, 1] → (N, 64) in [0, 1], clipped: the scale of the real ones."""
    x = _images_to_unit(samples)
    if x.shape[1] != 64:
        raise ValueError(f"digits must be (N, 1, 8, 8), got shape {tuple(samples.shape)}")
    return x


def digits_pixel_fd(samples: ArrayLike) -> float:
    """Pixel-space Fréchet distance of samples (N, 1, 8, 8) in [-1, 1], N ≥ 2, to all 1797 real digits.

    Both as 64-d vectors in [0, 1]. For scale: two disjoint halves of the real digits are ≈ 0.07 apart, a random 1000
    of them ≈ 0.01 from the whole set; real digits blurred by a Gaussian of σ = 1 px are ≈ 3, uniform noise ≈ 10 and
    all-black images ≈ 15. Few samples bias FD upwards (their covariance is noisier), so compare runs at equal N.
    """
    x = _digits_to_unit(samples)
    _check_sets(x, x, min_n=2)
    return frechet_distance_from_stats(*_mean_cov(x), *_real_digit_stats())


class DigitsClassifier:
    """A logistic regression on the 64 pixels in [0, 1] of the scikit-learn digits: ≈ 0.97 held-out accuracy.

    Trained in well under a second on 75% of the digits (a stratified split fixed by DIGITS_SEED); the other 25% give
    `held_out_accuracy`. Linear and L2-regularised, so its probabilities stay moderate off the data: ≈ 0.9 mean
    max-probability on real digits, ≈ 0.5 on uniform noise. Use `digits_classifier()` for the per-process copy.
    """

    def __init__(self, seed: int = DIGITS_SEED):
        from sklearn.linear_model import LogisticRegression  # here: scikit-learn takes a second to import, and the
        from sklearn.model_selection import train_test_split  # pages that only import this module need none of it

        x, y = _real_digits()
        x_train, x_test, y_train, y_test = train_test_split(
            x, y, test_size=DIGITS_HELD_OUT, random_state=seed, stratify=y
        )
        self.model = LogisticRegression(max_iter=2000).fit(x_train, y_train)  # lbfgs: deterministic
        self.held_out_accuracy = float(self.model.score(x_test, y_test))

    def predict_proba(self, samples: ArrayLike) -> np.ndarray:
        """Class probabilities (N, 10) of samples (N, 1, 8, 8) in [-1, 1]; rows sum to 1."""
        return self.model.predict_proba(_digits_to_unit(samples))

    def predict(self, samples: ArrayLike) -> np.ndarray:
        """Most likely digit (N,) int of samples (N, 1, 8, 8) in [-1, 1]."""
        return self.predict_proba(samples).argmax(1)


@functools.cache
def digits_classifier() -> DigitsClassifier:
    """The DigitsClassifier, trained on first use and then shared by the whole process."""
    return DigitsClassifier()


def predicted_digits(samples: ArrayLike) -> np.ndarray:
    """The classifier's digit (N,) for each of the samples (N, 1, 8, 8) in [-1, 1]."""
    return digits_classifier().predict_proba(samples).argmax(1)


def digits_report(samples: ArrayLike, requested: ArrayLike | None = None) -> dict:
    """Quality of digits samples (N, 1, 8, 8) in [-1, 1], N ≥ 2.

    Returns {"pixel_fd": digits_pixel_fd, "confidence": mean max-probability of the classifier (high: the samples
    look like some digit), "class_histogram": predicted-class counts, a list of 10 ints summing to N (even: the model
    covers every digit), "n": N}, and with requested (N,) digits asked of a conditional model, "class_accuracy": the
    share of samples the classifier assigns to their requested digit.
    """
    proba = digits_classifier().predict_proba(samples)
    report = {
        "pixel_fd": digits_pixel_fd(samples),
        "confidence": float(proba.max(1).mean()),
        "class_histogram": np.bincount(proba.argmax(1), minlength=10).tolist(),
        "n": len(proba),
    }
    if requested is not None:
        report["class_accuracy"] = float((proba.argmax(1) == np.asarray(requested)).mean())
    return report


# ----------------------------------------------------------------------------------------------------------------
# Point clouds


def _rbf_kernel_sum(x: np.ndarray, y: np.ndarray, bandwidths: Sequence[float]) -> float:
    """Σ_ij k(x_i, y_j) for k(u, v) = Σ_h exp(−‖u − v‖² / (2h²)); x (N, D), y (M, D), in row blocks."""
    total = 0.0
    for start in range(0, len(x), KERNEL_BLOCK):
        block = x[start : start + KERNEL_BLOCK]
        sq = np.sum(block**2, 1)[:, None] + np.sum(y**2, 1)[None, :] - 2.0 * block @ y.T
        sq = np.clip(sq, 0.0, None)  # the expansion can round a tiny distance below 0
        total += sum(float(np.exp(-sq / (2.0 * h * h)).sum()) for h in bandwidths)
    return total


def mmd_rbf(a: ArrayLike, b: ArrayLike, bandwidths: Sequence[float] = (0.1, 0.2, 0.5, 1.0, 2.0)) -> float:
    """Unbiased squared MMD between a (N, D) and b (M, D), N, M ≥ 2, with a sum of RBF kernels.

    MMD²_u = mean_{i≠i'} k(a_i, a_i') + mean_{j≠j'} k(b_j, b_j') − 2 mean_{ij} k(a_i, b_j), with
    k(u, v) = Σ_h exp(−‖u − v‖² / (2h²)) over the bandwidths h (in data units; several, so no single length scale has
    to be right). Unbiased: its expectation is 0 when a and b come from the same distribution, so it can be slightly
    negative for equal distributions. Exactly symmetric in a and b. Cost O((N + M)²).
    """
    a, b = _as_float64(a), _as_float64(b)
    _check_sets(a, b, min_n=2)
    if not bandwidths or min(bandwidths) <= 0:
        raise ValueError(f"bandwidths must be a non-empty list of positive numbers, got {bandwidths!r}")
    n, m, k_self = len(a), len(b), len(bandwidths)  # k(x, x) = number of bandwidths: drop the diagonal
    aa = (_rbf_kernel_sum(a, a, bandwidths) - n * k_self) / (n * (n - 1))
    bb = (_rbf_kernel_sum(b, b, bandwidths) - m * k_self) / (m * (m - 1))
    ab = _rbf_kernel_sum(a, b, bandwidths) / (n * m)
    return float(aa + bb - 2.0 * ab)


def _wasserstein1_sorted(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """W1 between empirical 1-D distributions, columnwise: a (N, P), b (M, P) sorted along axis 0 → (P,).

    W1 = ∫₀¹ |F_a⁻¹(u) − F_b⁻¹(u)| du, exact: both quantile functions are steps, constant between consecutive
    points of {i/N} ∪ {j/M}, so the integral is a sum over those pieces (works for N ≠ M).
    """
    n, m = len(a), len(b)
    edges = np.union1d(np.arange(1, n + 1) / n, np.arange(1, m + 1) / m)  # (K,), ends at 1
    widths = np.diff(edges, prepend=0.0)
    mid = edges - widths / 2
    ia = np.minimum((mid * n).astype(int), n - 1)  # step i covers u ∈ (i/N, (i+1)/N]
    ib = np.minimum((mid * m).astype(int), m - 1)
    return widths @ np.abs(a[ia] - b[ib])


def sliced_wasserstein(a: ArrayLike, b: ArrayLike, n_projections: int = 256, seed: int = 0) -> float:
    """Sliced Wasserstein-1 distance between a (N, D) and b (M, D): the mean over random unit directions θ of the
    exact 1-D W1 between the projections a·θ and b·θ (N ≠ M allowed), in data units.

    The n_projections directions are drawn uniformly on the sphere from numpy's generator seeded by seed, so the
    result is deterministic and exactly symmetric in a and b. 0 for identical sets.
    """
    a, b = _as_float64(a), _as_float64(b)
    _check_sets(a, b, min_n=1)
    if n_projections < 1:
        raise ValueError(f"n_projections must be at least 1, got {n_projections}")
    theta = np.random.default_rng(seed).standard_normal((a.shape[1], n_projections))
    theta /= np.linalg.norm(theta, axis=0, keepdims=True)  # (D, P) unit columns
    return float(_wasserstein1_sorted(np.sort(a @ theta, 0), np.sort(b @ theta, 0)).mean())


def points_report(samples: ArrayLike, reference: ArrayLike) -> dict:
    """Quality of point samples (N, 2) against a fresh ground-truth sample reference (M, 2), N, M ≥ 2.

    Returns {"mmd": mmd_rbf (unbiased, can dip below 0), "sliced_wasserstein": sliced W1 in data units, "n": N}.
    """
    return {
        "mmd": mmd_rbf(samples, reference),
        "sliced_wasserstein": sliced_wasserstein(samples, reference),
        "n": len(samples),
    }
