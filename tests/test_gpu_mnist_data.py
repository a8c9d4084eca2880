"""bench/gpu_mnist.py's data, checked here because a lent GPU machine gives one short call: MNIST's files in
torchvision's layout, unpacked or .gz, all of them or the test set alone (split into training and held-out images),
read back through the project's loader as the run reads them."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from bench.gpu_mnist import mnist_root, read_idx, write_idx
from ddpm_core.data import load_dataset


def mnist_files(folder, splits: dict[str, int], packed: bool) -> dict[str, np.ndarray]:
    """Write MNIST-format files with n random images per split into folder/MNIST/raw; returns the images."""
    raw = folder / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng, images = np.random.default_rng(0), {}
    for split, n in splits.items():
        images[split] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        for name, array in ((f"{split}-images-idx3-ubyte", images[split]),
                            (f"{split}-labels-idx1-ubyte", rng.integers(0, 10, n, dtype=np.uint8))):  # fmt: skip
            write_idx(raw / name, array)
            if packed:
                (raw / f"{name}.gz").write_bytes(gzip.compress((raw / name).read_bytes()))
                (raw / name).unlink()
    return images


@pytest.mark.parametrize("packed", [False, True])
def test_idx_files_round_trip_packed_or_not(tmp_path, packed):
    images = mnist_files(tmp_path, {"t10k": 5}, packed)
    path = tmp_path / "MNIST" / "raw" / ("t10k-images-idx3-ubyte" + (".gz" if packed else ""))
    assert np.array_equal(read_idx(path), images["t10k"])


def test_the_whole_of_mnist_is_used_as_it_is(tmp_path):
    images = mnist_files(tmp_path / "data", {"train": 30, "t10k": 10}, packed=True)
    root, what = mnist_root(str(tmp_path / "data"), 100, 20, into=tmp_path / "work")
    assert what.startswith("MNIST from") and "training and test sets" in what
    train = load_dataset("mnist", data_root=root, image_size=28)
    assert len(train.x) == 30 and len(load_dataset("mnist", data_root=root, train=False).x) == 10
    assert np.array_equal(((train.x[:, 0].numpy() + 1) * 127.5).round(), images["train"])


def test_the_test_set_alone_is_split_into_training_and_held_out_images(tmp_path):
    images = mnist_files(tmp_path / "data", {"t10k": 50}, packed=True)  # what ../shared/data/mnist holds
    root, what = mnist_root(str(tmp_path / "data"), 100, 2000, into=tmp_path / "work")
    assert "40 images to train on, the other 10 held out" in what
    train = load_dataset("mnist", data_root=root, image_size=28)
    held = load_dataset("mnist", data_root=root, image_size=28, train=False)
    assert np.array_equal(((held.x[:, 0].numpy() + 1) * 127.5).round(), images["t10k"][40:])
    assert np.array_equal(((train.x[:, 0].numpy() + 1) * 127.5).round(), images["t10k"][:40])


def test_a_test_set_copied_as_the_training_set_is_split_too(tmp_path):
    mnist_files(tmp_path / "data", {"t10k": 50}, packed=False)
    raw = tmp_path / "data" / "MNIST" / "raw"
    for kind in ("images-idx3", "labels-idx1"):  # as an earlier check once prepared its folder
        (raw / f"train-{kind}-ubyte").write_bytes((raw / f"t10k-{kind}-ubyte").read_bytes())
    _, what = mnist_root(str(tmp_path / "data"), 100, 2000, into=tmp_path / "work")
    assert "40 images to train on, the other 10 held out" in what  # never scored on the images it trained on


def test_no_files_give_mnist_format_digits(tmp_path):
    root, what = mnist_root(str(tmp_path / "nothing"), 64, 16, into=tmp_path / "work")
    assert what.startswith("synthetic MNIST-format digits (64 train, 16 test")
    assert load_dataset("mnist", data_root=root, image_size=32).x.shape == (64, 1, 32, 32)
