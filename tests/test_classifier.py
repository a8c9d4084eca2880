"""The project's feature classifier for MNIST-like FD: trains on the user's files, saves beside them, and evaluate
switches from pixel-space to feature-space FD once it is there."""

import numpy as np
import pytest
import torch

from ddpm_core.classifier import classifier_path, load_feature_extractor, main, train_classifier
from ddpm_core.config import TrainConfig
from ddpm_core.evaluate import quality_metrics
from ddpm_core.metrics import image_fd
from tests.test_data import _write_idx


def _patterns(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 28, 28) uint8 images whose class k is a bright 6×6 block at its own place, over noise; labels (n,)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    images = rng.integers(0, 60, (n, 28, 28))
    for i, k in enumerate(labels):
        r, c = 3 + (k // 5) * 12, 1 + (k % 5) * 5
        images[i, r : r + 6, c : c + 6] = 255
    return images.astype(np.uint8), labels.astype(np.uint8)


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("mnist")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for split, n, seed in (("train", 300, 0), ("t10k", 100, 1)):
        images, labels = _patterns(n, seed)
        _write_idx(raw / f"{split}-images-idx3-ubyte", images)
        _write_idx(raw / f"{split}-labels-idx1-ubyte", labels)
    return root


@pytest.fixture(scope="module")
def trained(mnist_root):
    return train_classifier("mnist", mnist_root, epochs=3, batch_size=32, log=lambda _: None)


def test_the_classifier_learns_and_is_saved_beside_the_data(mnist_root, trained):
    path, accuracy = trained
    assert accuracy > 0.9
    assert path == classifier_path(mnist_root, "mnist", 28) and path.is_file()


def test_feature_fd_tells_real_images_from_noise(mnist_root, trained):
    features = load_feature_extractor(mnist_root, "mnist", 28)
    assert features is not None
    real = torch.from_numpy(_patterns(200, 2)[0]).float()[:, None] / 127.5 - 1
    other_real = torch.from_numpy(_patterns(200, 3)[0]).float()[:, None] / 127.5 - 1
    noise = torch.rand(200, 1, 28, 28) * 2 - 1
    assert features(real[:5]).shape == (5, 128)
    same, different = image_fd(other_real, real, features), image_fd(noise, real, features)
    assert same < 0.1 * different


def test_no_or_broken_classifier_means_no_feature_extractor(tmp_path):
    assert load_feature_extractor(tmp_path, "mnist", 28) is None
    path = classifier_path(tmp_path, "mnist", 28)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a safetensors file")
    assert load_feature_extractor(tmp_path, "mnist", 28) is None


def test_evaluate_uses_feature_fd_when_the_classifier_exists(mnist_root, trained, tmp_path):
    samples = torch.rand(50, 1, 28, 28) * 2 - 1
    with_classifier = quality_metrics(samples, TrainConfig(dataset="mnist", data_root=str(mnist_root)))
    assert with_classifier["feature_fd"] > 0 and with_classifier["pixel_fd"] > 0 and "note" not in with_classifier
    empty = tmp_path / "other"
    (empty / "MNIST").mkdir(parents=True)
    (empty / "MNIST" / "raw").symlink_to(mnist_root / "MNIST" / "raw")
    without = quality_metrics(samples, TrainConfig(dataset="mnist", data_root=str(empty)))
    assert without["feature_fd"] is None and "python -m ddpm_core.classifier" in without["note"]
    assert without["pixel_fd"] == pytest.approx(with_classifier["pixel_fd"])


def test_cli_without_data_exits_2_with_a_message(tmp_path, capsys):
    assert main(["--dataset", "mnist", "--data-root", str(tmp_path), "--device", "cpu"]) == 2
    assert "--download" in capsys.readouterr().err
