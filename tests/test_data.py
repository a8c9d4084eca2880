"""ddpm_core.data: the datasets a user can pick, each through its real loader, on small files written here.

MNIST, Fashion-MNIST and CIFAR-10 are written in their real on-disk formats and read by torchvision's own classes;
the network is blocked for the whole module, so nothing here can download anything.
"""

from __future__ import annotations

import hashlib
import math
import pickle
import socket
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from ddpm_core.data import (
    DATASETS,
    IMAGE_DATASETS,
    POINT_DATASETS,
    Dataset,
    DatasetError,
    dataset_summary,
    digits_arrays,
    load_dataset,
    make_toy,
)
from ddpm_core.toys import CIRCLE_RADII, TOYS
from tests.conftest import ROOT


@pytest.fixture(autouse=True)
def network_attempts(monkeypatch):
    """Block and record every connection and DNS lookup: a test that needs the network fails instead of hanging."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network blocked by tests/test_data.py")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", lambda self, *args: refuse(*args))
    return attempts


def test_the_dataset_names():
    assert DATASETS == IMAGE_DATASETS + POINT_DATASETS
    assert IMAGE_DATASETS == ("digits", "mnist", "fashion_mnist", "cifar10", "folder")
    assert set(TOYS) == set(POINT_DATASETS)


# ----------------------------------------------------------------------------------------------------------------
# digits: scikit-learn's 8×8 set, embedded.


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_digits_are_scaled_to_minus_one_one(digits):
    assert digits.kind == "image" and digits.x.dtype == torch.float32 and digits.y.dtype == torch.int64
    assert digits.x.shape == (1797, 1, 8, 8) and digits.sample_shape == (1, 8, 8)
    assert digits.x.min() == -1 and digits.x.max() == 1  # 0 ↦ -1 and 16 ↦ 1, exactly
    assert torch.equal(digits.y.unique(), torch.arange(10))
    assert digits.classes == [str(i) for i in range(10)]
    assert dataset_summary(digits) == "digits: 1797 images 1×8×8, 10 classes"


def test_digits_are_scikit_learns_read_without_importing_it(monkeypatch):
    from sklearn.datasets import load_digits

    reference = load_digits()
    images, target = digits_arrays()
    assert np.array_equal(images, reference.images) and np.array_equal(target, reference.target)
    assert images.dtype == np.float64 and target.dtype == np.int64
    monkeypatch.setattr("ddpm_core.data.DIGITS_FILE", ("datasets", "data", "moved.csv.gz"))
    images, target = digits_arrays()  # a scikit-learn that keeps the file elsewhere: its own loader
    assert np.array_equal(images, reference.images) and np.array_equal(target, reference.target)
    code = (
        "import sys; import ddpm_core.train, explorer.train_widgets, explorer.sample_widgets; "
        "from ddpm_core.data import load_dataset; load_dataset('digits'); print('sklearn' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"  # a page's first visit or a trainer's start does not wait 1 s for it


def test_digits_resize_and_channels(digits):
    big = load_dataset("digits", image_size=16)
    assert big.x.shape == (1797, 1, 16, 16) and big.x.min() >= -1 and big.x.max() <= 1
    assert torch.allclose(big.x.mean((1, 2, 3)), digits.x.mean((1, 2, 3)), atol=0.05)  # a resize keeps brightness
    rgb = load_dataset("digits", channels=3)
    assert rgb.x.shape == (1797, 3, 8, 8) and all(torch.equal(rgb.x[:, c], digits.x[:, 0]) for c in range(3))


@pytest.mark.parametrize("classes", [[3], ["3"], "3", 3, (3, 3)])
def test_digits_class_subset(classes):
    ds = load_dataset("digits", classes=classes)
    assert set(ds.y.tolist()) == {3} and len(ds.y) == 183
    assert ds.classes[3] == "3" and dataset_summary(ds) == "digits: 183 images 1×8×8, 1 of 10 classes"


def test_max_images_keeps_the_first_after_filtering(digits):
    ds = load_dataset("digits", classes=[1, 7], max_images=5)
    first = torch.nonzero((digits.y == 1) | (digits.y == 7))[:5, 0]
    assert torch.equal(ds.x, digits.x[first]) and torch.equal(ds.y, digits.y[first])


# ----------------------------------------------------------------------------------------------------------------
# 2D toys.


@pytest.mark.parametrize("name", POINT_DATASETS)
def test_toy_is_deterministic_and_standardised(name):
    ds = load_dataset(name)
    assert ds.kind == "points" and ds.y is None and ds.classes == []
    assert ds.x.shape == (10_000, 2) and ds.x.dtype == torch.float32
    assert torch.equal(ds.x, make_toy(name, 10_000, seed=0))
    assert torch.equal(make_toy(name, 100, seed=1), make_toy(name, 100, seed=1))
    assert not torch.equal(make_toy(name, 100, seed=1), make_toy(name, 100, seed=2))
    assert (ds.x.mean(0).abs() < 0.2).all()
    assert ((ds.x.std(0) > 0.6) & (ds.x.std(0) < 1.6)).all()
    assert dataset_summary(ds) == f"{name}: 10000 points in 2D"


@pytest.mark.parametrize("name", POINT_DATASETS)
def test_toy_moments_are_the_exact_ones(name):
    """The documented closed forms: a large sample has mean 0 and E‖x‖² = 2 (so the scale is right)."""
    x = make_toy(name, 200_000, seed=123).double()
    assert x.mean(0).abs().max() < 0.01
    assert abs(x.pow(2).sum(1).mean() - 2) < 0.02


def _raw(name, n=4000):
    """The toy in its raw coordinates, undoing the documented standardisation: (n, 2) float64."""
    toy = TOYS[name]
    return make_toy(name, n).double().numpy() * toy.scale + np.asarray(toy.mean)


def test_eight_gaussians_cluster_around_eight_centres():
    raw = _raw("8gaussians")
    angle = np.arctan2(raw[:, 1], raw[:, 0])
    nearest = np.round(angle / (math.pi / 4))  # bins of width π/4 around the centres' angles kπ/4
    off = np.abs(angle - nearest * math.pi / 4)
    assert np.quantile(off, 0.9) < math.pi / 16 and off.max() < math.pi / 8  # tight around each centre
    counts = np.bincount(nearest.astype(int) % 8, minlength=8)
    assert counts.min() > 0.8 * 4000 / 8 and counts.max() < 1.2 * 4000 / 8
    assert abs(np.median(np.linalg.norm(raw, axis=1)) - 1) < 0.02


def test_checkerboard_points_lie_in_alternating_squares():
    raw = _raw("checkerboard")
    assert raw.min() >= -2 and raw.max() <= 2
    cells = np.floor(raw + 2).astype(int)
    assert ((cells.sum(1) % 2) == 0).all()
    assert len({tuple(c) for c in cells}) == 8  # every black square is used


def test_circles_have_two_radii():
    radius = np.linalg.norm(_raw("circles"), axis=1)
    outer, inner = np.abs(radius - CIRCLE_RADII[0]) < 0.25, np.abs(radius - CIRCLE_RADII[1]) < 0.25
    assert (outer ^ inner).all() and 0.45 < outer.mean() < 0.55  # every point on exactly one ring, half on each
    assert radius[outer].std() < 0.07 and radius[inner].std() < 0.07


def test_moons_and_swiss_roll_keep_their_shape():
    x, y = _raw("moons").T
    upper = y > 0.25 + 0.5 * (x - 0.5)  # the lower moon lies below the line through both tips' midpoints
    assert 0.4 < upper.mean() < 0.6
    x, y = _raw("swiss_roll").T
    radius = np.hypot(x, y)
    assert radius.min() > 1.5 * math.pi - 2 and radius.max() < 4.5 * math.pi + 2


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(POINT_DATASETS), st.integers(1, 500), st.integers(0, 2**64 - 1))
def test_make_toy_any_n_and_seed(name, n, seed):
    x = make_toy(name, n, seed)
    assert x.shape == (n, 2) and x.dtype == torch.float32 and torch.isfinite(x).all()


# ----------------------------------------------------------------------------------------------------------------
# MNIST and Fashion-MNIST: idx files, the real format, read by torchvision's loaders.


def _write_idx(path, array: np.ndarray) -> None:
    """Big-endian uint32 magic 0x0800 + d (uint8 data in d dims: 2049 labels, 2051 images), the d sizes, the bytes."""
    header = struct.pack(f">{1 + array.ndim}I", 0x0800 + array.ndim, *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _write_mnist(root, folder: str, n_train=20, n_test=12) -> dict[str, np.ndarray]:
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(1, 255, (n, 28, 28), dtype=np.uint8)
        images[0, 0, 0], images[0, 0, 1] = 0, 255
        labels = np.arange(n, dtype=np.uint8) % 10
        _write_idx(raw / f"{split}-images-idx3-ubyte", images)
        _write_idx(raw / f"{split}-labels-idx1-ubyte", labels)
        written[split] = images
    return written


@pytest.mark.parametrize(("name", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_like_through_torchvision(tmp_path, network_attempts, name, folder):
    written = _write_mnist(tmp_path, folder)
    ds = load_dataset(name, data_root=tmp_path)
    assert ds.x.shape == (20, 1, 28, 28) and ds.x.dtype == torch.float32
    assert ds.x[0, 0, 0, 0] == -1 and ds.x[0, 0, 0, 1] == 1  # 0 ↦ -1, 255 ↦ 1
    assert torch.allclose(ds.x[:, 0], torch.from_numpy(written["train"]).float() / 127.5 - 1)
    assert torch.equal(ds.y, torch.arange(20) % 10) and len(ds.classes) == 10
    if name == "fashion_mnist":
        boots = load_dataset(name, data_root=tmp_path, classes=["ankle boot"])  # names match in any case
        assert ds.classes[9] == "Ankle boot" and boots.y.tolist() == [9, 9]
    again = load_dataset(name, data_root=tmp_path, download=True)  # files in place: torchvision downloads nothing
    assert torch.equal(again.x, ds.x) and network_attempts == []
    test = load_dataset(name, data_root=tmp_path, train=False)
    assert torch.allclose(test.x[:, 0], torch.from_numpy(written["t10k"]).float() / 127.5 - 1)


def test_a_class_with_no_images_is_an_error(tmp_path):
    _write_mnist(tmp_path, "MNIST", n_train=5)  # labels 0 … 4 only
    with pytest.raises(DatasetError, match="has no images of the class"):
        load_dataset("mnist", data_root=tmp_path, classes=9)


def test_mnist_to_32_by_pad_or_resize(tmp_path):
    _write_mnist(tmp_path, "MNIST")
    native = load_dataset("mnist", data_root=tmp_path)
    padded = load_dataset("mnist", data_root=tmp_path, image_size=32)
    resized = load_dataset("mnist", data_root=tmp_path, image_size=32, resize_mode="resize")
    assert padded.x.shape == resized.x.shape == (20, 1, 32, 32)
    assert torch.equal(padded.x[..., 2:30, 2:30], native.x)
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert (padded.x[..., border] == -1).all()
    assert resized.x.min() >= -1 and resized.x.max() <= 1 and (resized.x[..., border] > -1).any()


# ----------------------------------------------------------------------------------------------------------------
# CIFAR-10: pickled batches, the real format; only the expected md5 sums are pointed at the files written here.

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _write_cifar(root, monkeypatch, per_batch=3) -> np.ndarray:
    """Five training batches and a test batch of `per_batch` images each; returns the training images (N, 32, 32, 3)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    md5, train_images = {}, []
    for i, batch in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        images = rng.integers(0, 256, (per_batch, 32, 32, 3), dtype=np.uint8)
        images[0, 0, 0] = (0, 255, 0)
        labels = [(i * per_batch + j) % 10 for j in range(per_batch)]
        rows = images.transpose(0, 3, 1, 2).reshape(per_batch, 3072)  # CIFAR stores planes: 1024 R, 1024 G, 1024 B
        names = [f"{batch}_{j}.png" for j in range(per_batch)]
        entry = {"batch_label": batch, "labels": labels, "data": rows, "filenames": names}
        (folder / batch).write_bytes(pickle.dumps(entry))
        train_images += [images] if batch != "test_batch" else []
    meta = {"label_names": CIFAR_CLASSES, "num_cases_per_batch": per_batch, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    for path in folder.iterdir():
        md5[path.name] = hashlib.md5(path.read_bytes()).hexdigest()
    cls = torchvision.datasets.CIFAR10
    monkeypatch.setattr(cls, "train_list", [[f, md5[f]] for f, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[f, md5[f]] for f, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5["batches.meta"]})
    return np.concatenate(train_images)


def test_cifar10_through_torchvision(tmp_path, monkeypatch):
    images = _write_cifar(tmp_path, monkeypatch)
    ds = load_dataset("cifar10", data_root=tmp_path)
    assert ds.x.shape == (15, 3, 32, 32) and ds.x.dtype == torch.float32
    assert torch.equal(ds.x, torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1)
    assert ds.x[0, :, 0, 0].tolist() == [-1, 1, -1]
    assert torch.equal(ds.y, torch.arange(15) % 10) and ds.classes == CIFAR_CLASSES
    ships = load_dataset("cifar10", data_root=tmp_path, classes=["ship", "cat"])
    assert ships.y.tolist() == [3, 8, 3] and dataset_summary(ships) == "cifar10: 3 images 3×32×32, 2 of 10 classes"
    gray = load_dataset("cifar10", data_root=tmp_path, channels=1, train=False, image_size=16)
    assert gray.x.shape == (3, 1, 16, 16) and gray.x.min() >= -1 and gray.x.max() <= 1


def test_cifar10_corrupted_file_says_so(tmp_path, monkeypatch):
    _write_cifar(tmp_path, monkeypatch)
    (tmp_path / "cifar-10-batches-py" / "data_batch_2").write_bytes(b"not a pickle")
    with pytest.raises(DatasetError, match=r"could not be read.*--download"):
        load_dataset("cifar10", data_root=tmp_path)


# ----------------------------------------------------------------------------------------------------------------
# Missing files and downloads: a DatasetError that says what to do, and no network unless download=True.


@pytest.mark.parametrize(
    ("name", "where"),
    [("mnist", "MNIST/raw"), ("fashion_mnist", "FashionMNIST/raw"), ("cifar10", "cifar-10-batches-py")],
)
def test_missing_dataset_says_where_and_how(tmp_path, network_attempts, name, where):
    with pytest.raises(DatasetError) as caught:
        load_dataset(name, data_root=tmp_path / "data")
    message = str(caught.value)
    assert str(tmp_path / "data" / where) in message and "--download" in message
    assert network_attempts == []


def test_partly_missing_mnist_names_the_missing_file(tmp_path):
    _write_mnist(tmp_path, "MNIST")
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetError, match=r"missing: t10k-labels-idx1-ubyte\)"):
        load_dataset("mnist", data_root=tmp_path)


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_download_offline_is_a_clear_error(tmp_path, network_attempts, name):
    with pytest.raises(DatasetError, match=r"Could not download .* needs internet"):
        load_dataset(name, data_root=tmp_path, download=True)
    assert network_attempts  # it did try


# ----------------------------------------------------------------------------------------------------------------
# A folder of the user's images.


@pytest.fixture
def image_folder(tmp_path):
    """cats/: an RGB PNG (non-square) and a grayscale JPEG; dogs/: RGBA, 16-bit and palette PNGs, junk."""
    root = tmp_path / "pets"
    (root / "cats").mkdir(parents=True)
    (root / "dogs" / "puppies").mkdir(parents=True)
    rgb = np.zeros((20, 40, 3), np.uint8)
    rgb[:, 10:30] = (255, 0, 0)  # the centre square, what a centre crop keeps
    Image.fromarray(rgb).save(root / "cats" / "a.png")
    Image.new("L", (24, 24), 0).save(root / "cats" / "b.jpg")
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[:, :8] = (0, 0, 255, 255)  # left half opaque blue, right half fully transparent
    Image.fromarray(rgba).save(root / "dogs" / "c.png")
    Image.fromarray(np.full((16, 16), 128 * 257, np.uint16)).save(root / "dogs" / "e.png")  # 16-bit mid-gray
    Image.new("RGB", (16, 16), (0, 255, 0)).convert("P", palette=Image.Palette.ADAPTIVE).save(
        root / "dogs" / "puppies" / "d.png"
    )
    (root / "dogs" / "notes.txt").write_text("not an image")
    (root / "dogs" / "broken.png").write_bytes(b"\x89PNG but not really")
    (root / ".thumbnails").mkdir()
    Image.new("RGB", (8, 8)).save(root / ".thumbnails" / "hidden.png")
    return root


def test_folder_with_class_subfolders(image_folder):
    with pytest.warns(UserWarning, match="skipped 1 unreadable .*broken.png"):
        ds = load_dataset("folder", folder=image_folder, image_size=16)
    assert ds.x.shape == (5, 3, 16, 16) and ds.x.dtype == torch.float32 and ds.x.min() >= -1 and ds.x.max() <= 1
    assert ds.classes == ["cats", "dogs"] and ds.y.tolist() == [0, 0, 1, 1, 1]
    a, b, c, e, d = ds.x  # sorted paths: cats/a, cats/b, dogs/c, dogs/e, dogs/puppies/d
    red = torch.tensor([1.0, -1, -1]).view(3, 1, 1)
    assert torch.allclose(a[:, :, 1:-1], red, atol=0.01)  # the centre square; the edges blend the cropped-off black
    assert torch.allclose(b, torch.tensor(-1.0), atol=0.05)
    assert torch.allclose(c[:, :, 0], torch.tensor([-1.0, -1, 1]).view(3, 1)) and (c[:, :, -1] == 1).all()  # white
    assert torch.allclose(e, torch.tensor(128 / 127.5 - 1), atol=0.01)  # rescaled from 16 bits, not clipped to 255
    assert torch.allclose(d, torch.tensor([-1.0, 1, -1]).view(3, 1, 1), atol=0.01)
    assert dataset_summary(ds) == "folder: 5 images 3×16×16, 2 classes"


def test_folder_as_grayscale_with_a_class_subset(image_folder):
    with pytest.warns(UserWarning):
        ds = load_dataset("folder", folder=str(image_folder), channels=1, classes=["dogs"], max_images=2)
    assert ds.x.shape == (2, 1, 32, 32) and ds.y.tolist() == [1, 1] and ds.classes == ["cats", "dogs"]


def test_folder_without_subfolders_is_unlabelled(tmp_path):
    for i in range(3):
        Image.new("RGB", (10 + i, 12), (i * 100, 0, 0)).save(tmp_path / f"{i}.webp")
    ds = load_dataset("folder", folder=tmp_path, image_size=8)
    assert ds.x.shape == (3, 3, 8, 8) and ds.y is None and ds.classes == []
    assert dataset_summary(ds) == "folder: 3 images 3×8×8, unlabelled"
    with pytest.raises(DatasetError, match="no classes"):
        load_dataset("folder", folder=tmp_path, classes=["a"])


@pytest.mark.filterwarnings("ignore:skipped 1 unreadable")
@pytest.mark.parametrize(
    ("folder", "expected"),
    [("empty", "no images"), ("missing", "does not exist"), ("file.png", "is not a folder"), ("junk", "none of the 1")],
)
def test_bad_folders(tmp_path, folder, expected):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.png").write_bytes(b"garbage")
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(DatasetError, match=expected) as caught:
        load_dataset("folder", folder=tmp_path / folder)
    assert str(tmp_path / folder) in str(caught.value)


# ----------------------------------------------------------------------------------------------------------------
# Invalid arguments.


@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        ("imagenet", {}, "unknown dataset 'imagenet'; valid names: digits, mnist"),
        ("digits", {"image_size": 2}, "image_size must be an integer from 4 to 256, got 2"),
        ("digits", {"image_size": 512}, "from 4 to 256, got 512"),
        ("digits", {"image_size": 16.0}, "image_size must be an integer"),
        ("digits", {"channels": 2}, "channels must be 1 (grayscale) or 3 (RGB), got 2"),
        ("digits", {"resize_mode": "crop"}, "unknown resize_mode 'crop'; valid values: pad, resize"),
        ("digits", {"classes": ["ten"]}, "unknown class 'ten' for digits; valid names: 0, 1, 2"),
        ("digits", {"classes": [10]}, "class 10 is not one of digits's classes; valid names: 0, 1"),
        ("digits", {"classes": [True]}, "class True is not one of"),
        ("digits", {"classes": []}, "pass None to keep all classes"),
        ("digits", {"max_images": 0}, "max_images must be a positive integer"),
        ("moons", {"n_points": 0}, "n_points must be an integer from 1"),
        ("moons", {"seed": -1}, "seed must be a non-negative integer"),
        ("moons", {"classes": [0]}, "moons is a 2D point set without classes"),
        ("folder", {}, "needs a folder of images: pass folder="),
    ],
)
def test_invalid_arguments(name, kwargs, expected):
    with pytest.raises(DatasetError) as caught:
        load_dataset(name, **kwargs)
    assert expected in str(caught.value)


@pytest.mark.parametrize(("name", "n", "expected"), [("spiral", 10, "unknown 2D toy 'spiral'"), ("moons", 0, "from 1")])
def test_make_toy_invalid(name, n, expected):
    with pytest.raises(DatasetError, match=expected):
        make_toy(name, n)


def test_dataset_error_is_a_value_error_and_repr_is_short(digits):
    assert issubclass(DatasetError, ValueError)
    assert repr(digits) == "Dataset(digits: 1797 images 1×8×8, 10 classes)"
    assert isinstance(digits, Dataset)
