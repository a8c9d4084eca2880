"""Sample-quality metrics: the Fréchet distance against its closed form for Gaussians, the digits measures against
real, degraded and fake digits, and MMD / sliced Wasserstein on 2D Gaussian mixtures."""

from itertools import pairwise

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.ndimage import gaussian_filter
from sklearn.datasets import load_digits

from ddpm_core.metrics import (
    digits_classifier,
    digits_pixel_fd,
    digits_report,
    frechet_distance,
    image_fd,
    mmd_rbf,
    points_report,
    sliced_wasserstein,
)


def gaussian(n, mean, std, seed):
    """n samples of N(mean, diag(std²)), (n, D) float64."""
    rng = np.random.default_rng(seed)
    return np.asarray(mean) + rng.standard_normal((n, len(mean))) * np.asarray(std)


def mixture(n, seed, shift=0.0, scale=1.0):
    """n points of a 4-component 2D Gaussian mixture (modes at (±1.5, ±1.5), σ = 0.3), scaled then shifted in x."""
    rng = np.random.default_rng(seed)
    modes = np.array([[1.5, 1.5], [-1.5, 1.5], [1.5, -1.5], [-1.5, -1.5]])
    x = modes[rng.integers(0, 4, n)] + 0.3 * rng.standard_normal((n, 2))
    return x * scale + np.array([shift, 0.0])


@pytest.fixture(scope="module")
def real_digits():
    """All 1797 real digits as the models see them: (1797, 1, 8, 8) in [-1, 1]."""
    x = load_digits().images / 16.0
    return x[:, None] * 2 - 1


@pytest.fixture(scope="module")
def some_digits(real_digits):
    """A random 1000 of the real digits, (1000, 1, 8, 8) in [-1, 1]."""
    return real_digits[np.random.default_rng(0).choice(len(real_digits), 1000, replace=False)]


# ---------------------------------------------------------------------------------------------------------------
# Fréchet distance


def test_fd_of_a_set_with_itself_is_zero():
    a = gaussian(500, [0.0, 1.0, -2.0], [1.0, 0.5, 2.0], seed=0)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(torch.from_numpy(a).float(), a) == pytest.approx(0.0, abs=1e-5)


def test_fd_matches_the_closed_form_for_diagonal_gaussians():
    # For diagonal covariances (Σa Σb)^½ = diag(σa σb), so d² = ‖Δμ‖² + Σ (σa − σb)²: the sample estimate converges
    mu_a, sd_a = np.array([0.0, 1.0, -1.0, 2.0]), np.array([1.0, 0.5, 2.0, 1.5])
    mu_b, sd_b = np.array([1.0, 1.0, 0.5, 2.0]), np.array([2.0, 0.5, 1.0, 0.2])
    exact = np.sum((mu_a - mu_b) ** 2) + np.sum((sd_a - sd_b) ** 2)
    fd = frechet_distance(gaussian(200_000, mu_a, sd_a, 1), gaussian(200_000, mu_b, sd_b, 2))
    assert fd == pytest.approx(exact, rel=0.01)


def test_fd_matches_the_closed_form_for_full_covariances():
    # Rotated, correlated covariances: Tr (Σa Σb)^½ from the eigenvalues of Σa Σb, which are real and ≥ 0
    rng = np.random.default_rng(3)
    la, lb = rng.standard_normal((3, 3)), rng.standard_normal((3, 3))
    cov_a, cov_b = la @ la.T + 0.1 * np.eye(3), lb @ lb.T + 0.1 * np.eye(3)
    mu_a, mu_b = rng.standard_normal(3), rng.standard_normal(3)
    trace_sqrt = np.sqrt(np.linalg.eigvals(cov_a @ cov_b).real).sum()
    exact = np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_sqrt
    a = rng.multivariate_normal(mu_a, cov_a, 200_000)
    b = rng.multivariate_normal(mu_b, cov_b, 200_000)
    assert frechet_distance(a, b) == pytest.approx(exact, rel=0.02)


def test_fd_grows_with_the_mean_shift():
    a = gaussian(2000, [0.0, 0.0], [1.0, 1.0], seed=0)
    fds = [frechet_distance(a, gaussian(2000, [s, 0.0], [1.0, 1.0], seed=1)) for s in (0.0, 0.5, 1.0, 2.0)]
    assert fds == sorted(fds) and fds[-1] == pytest.approx(4.0, rel=0.1)


def test_fd_rejects_bad_input():
    a = np.zeros((5, 3))
    with pytest.raises(ValueError, match="same dimension"):
        frechet_distance(a, np.zeros((5, 4)))
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(a, np.zeros((1, 3)))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(a, np.full((5, 3), np.nan))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        frechet_distance(np.zeros(5), a)


small_sets = st.integers(2, 12).flatmap(
    lambda d: st.tuples(
        arrays(np.float64, st.tuples(st.integers(2, 15), st.just(d)), elements=st.floats(-10, 10)),
        arrays(np.float64, st.tuples(st.integers(2, 15), st.just(d)), elements=st.floats(-10, 10)),
    )
)


@settings(max_examples=60, deadline=None)
@given(small_sets)
def test_fd_is_finite_nonnegative_and_symmetric_even_when_rank_deficient(sets):
    a, b = sets  # often N < D, or constant columns: singular covariances
    fd = frechet_distance(a, b)
    assert np.isfinite(fd) and fd >= 0
    assert frechet_distance(b, a) == pytest.approx(fd, rel=1e-6, abs=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6 * (1 + np.abs(a).max() ** 2))


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.float64, st.tuples(st.integers(2, 10), st.integers(1, 8)), elements=st.floats(-5, 5)),
    st.floats(-3, 3),
)
def test_fd_of_a_translated_set_is_the_squared_shift(a, c):
    # Same covariance, means c·1 apart: d² = ‖c·1‖² = D c²
    assert frechet_distance(a, a + c) == pytest.approx(a.shape[1] * c**2, rel=1e-6, abs=1e-6)


def test_image_fd_in_pixels_and_in_a_feature_space():
    rng = np.random.default_rng(0)
    ref = rng.uniform(-1, 1, (300, 1, 4, 4))
    same, dark = rng.uniform(-1, 1, (300, 1, 4, 4)), rng.uniform(-1, 0, (300, 1, 4, 4))
    assert image_fd(same, ref) < 0.2 < image_fd(dark, ref)
    # Values beyond [-1, 1] count as ±1: tripling a set pushes most pixels to the ends, but not beyond them
    assert image_fd(same * 3, ref) == pytest.approx(image_fd(np.clip(same * 3, -1, 1), ref), rel=1e-9)
    assert image_fd(same * 3, ref) > image_fd(same * 1.5, ref) > image_fd(same, ref)
    # A feature extractor that keeps only the mean brightness: the shift of the mean is all that is left
    mean_pixel = lambda x: x.mean(dim=(1, 2, 3))[:, None]  # noqa: E731
    fd = image_fd(torch.from_numpy(dark), torch.from_numpy(ref), features=mean_pixel)
    expected = frechet_distance(dark.mean(axis=(1, 2, 3))[:, None], ref.mean(axis=(1, 2, 3))[:, None])
    assert fd == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# Digits


def test_real_digits_have_a_small_pixel_fd(real_digits, some_digits):
    assert digits_pixel_fd(some_digits) < 0.1
    halves = np.random.default_rng(1).permutation(len(real_digits))
    flat = (real_digits.reshape(-1, 64) + 1) / 2
    assert 0.03 < frechet_distance(flat[halves[:898]], flat[halves[898:]]) < 0.12  # the docstring's ≈ 0.07


def test_noise_and_black_images_have_a_large_pixel_fd(some_digits):
    rng = np.random.default_rng(0)
    assert digits_pixel_fd(rng.uniform(-1, 1, (1000, 1, 8, 8))) > 1
    assert digits_pixel_fd(-np.ones((1000, 1, 8, 8))) > 1
    assert digits_pixel_fd(some_digits + rng.normal(0, 1.0, some_digits.shape)) > 1


def test_pixel_fd_is_monotone_in_the_noise_level(some_digits):
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(some_digits.shape)
    fds = [digits_pixel_fd(torch.from_numpy(some_digits + s * noise)) for s in (0.0, 0.1, 0.2, 0.4, 0.8, 1.6)]
    assert all(x < y for x, y in pairwise(fds)), fds


def test_blurred_and_shifted_digits_land_in_between(some_digits):
    real = digits_pixel_fd(some_digits)
    black = digits_pixel_fd(-np.ones((1000, 1, 8, 8)))
    blurred = [digits_pixel_fd(gaussian_filter(some_digits, (0, 0, s, s))) for s in (0.5, 1.0, 2.0)]
    shifted = [digits_pixel_fd(np.roll(some_digits, k, axis=3)) for k in (1, 2)]
    assert real < blurred[0] < blurred[1] < blurred[2] < black
    assert real < shifted[0] < shifted[1] < black


def test_the_classifier_is_accurate_and_confident_on_real_digits_only(real_digits):
    clf = digits_classifier()
    assert clf is digits_classifier()  # trained once per process
    assert clf.held_out_accuracy >= 0.95
    proba = clf.predict_proba(torch.from_numpy(real_digits).float())
    assert proba.shape == (1797, 10) and np.allclose(proba.sum(1), 1)
    assert (clf.predict(real_digits) == load_digits().target).mean() >= 0.95
    noise = np.random.default_rng(0).uniform(-1, 1, (500, 1, 8, 8))
    real_conf, noise_conf = proba.max(1).mean(), clf.predict_proba(noise).max(1).mean()
    assert real_conf >= 0.8 and noise_conf < real_conf - 0.2


def test_digits_report(some_digits):
    report = digits_report(some_digits[:300])
    assert set(report) == {"pixel_fd", "confidence", "class_histogram", "n"}
    assert report["n"] == 300 and len(report["class_histogram"]) == 10 and sum(report["class_histogram"]) == 300
    assert min(report["class_histogram"]) > 0  # a random 300 real digits cover every class
    assert report["confidence"] >= 0.8 and report["pixel_fd"] == pytest.approx(digits_pixel_fd(some_digits[:300]))
    ones = load_digits().images[load_digits().target == 1][:50, None] / 8.0 - 1
    assert np.argmax(digits_report(ones)["class_histogram"]) == 1  # all one digit: one tall bar


def test_digits_reject_other_shapes():
    with pytest.raises(ValueError, match=r"\(N, 1, 8, 8\)"):
        digits_pixel_fd(np.zeros((10, 1, 28, 28)))


# ---------------------------------------------------------------------------------------------------------------
# Point clouds


@pytest.mark.parametrize("metric", [mmd_rbf, sliced_wasserstein])
def test_point_metrics_are_near_zero_for_the_same_distribution_and_grow_with_the_shift(metric):
    # Two iid draws differ in how many points each mode gets, which W1 sees: compare with a half-σ shift and more
    ref = mixture(2000, seed=0)
    same = metric(mixture(2000, seed=1), ref)
    shifted = [metric(mixture(2000, seed=1, shift=s), ref) for s in (0.25, 0.5, 1.0, 2.0)]
    assert abs(same) < 0.5 * shifted[1]
    assert all(x < y for x, y in pairwise([abs(same), *shifted])), (same, shifted)
    assert metric(mixture(2000, seed=1, scale=1.5), ref) > 4 * abs(same)


@pytest.mark.parametrize("metric", [mmd_rbf, sliced_wasserstein])
def test_point_metrics_are_symmetric_and_handle_unequal_sizes(metric):
    a, b = mixture(300, seed=0), mixture(700, seed=1, shift=0.5)
    assert metric(a, b) == pytest.approx(metric(b, a), rel=1e-9)
    assert metric(a, b) > 0
    assert abs(metric(mixture(300, seed=2), mixture(1700, seed=3))) < 0.5 * metric(a, b)


def test_sliced_wasserstein_is_the_shift_along_the_only_axis():
    # Two 1-D-like sets differing by a translation c along x: W1 of each projection is |c θ_x|; the mean over
    # uniform directions in 2D of |cos φ| is 2/π
    a = mixture(500, seed=0)
    sw = sliced_wasserstein(a, a + np.array([1.0, 0.0]), n_projections=4000)
    assert sw == pytest.approx(2 / np.pi, rel=0.03)
    assert sliced_wasserstein(a, a) == 0.0


def test_sliced_wasserstein_with_unequal_sizes_is_exact_in_1d():
    # a = {0, 1}, b = {0, 0.5, 1}: quantile functions differ by 0.5 on (1/3, 1/2] and on (1/2, 2/3], W1 = 1/6
    a, b = np.array([[0.0], [1.0]]), np.array([[0.0], [0.5], [1.0]])
    assert sliced_wasserstein(a, b, n_projections=3) == pytest.approx(1 / 6)


def test_mmd_is_unbiased_around_zero():
    # The unbiased estimator scatters around 0 for equal distributions, so some draws come out negative
    values = [mmd_rbf(mixture(100, seed=2 * k), mixture(100, seed=2 * k + 1)) for k in range(20)]
    assert min(values) < 0 < max(values)
    assert abs(np.mean(values)) < 3 * np.std(values) / np.sqrt(len(values))


def test_points_report():
    samples = torch.from_numpy(mixture(400, seed=1, shift=1.0)).float()
    report = points_report(samples, mixture(600, seed=0))
    assert set(report) == {"mmd", "sliced_wasserstein", "n"} and report["n"] == 400
    assert report["mmd"] == pytest.approx(mmd_rbf(samples, mixture(600, seed=0)))
    assert report["sliced_wasserstein"] > 0.3
