"""The MNIST digits bundled in assets/mnist/: the core loader, the file's size and format, and assets/mnist/make.py
run on idx files written here in MNIST's real format (no MNIST needed, nothing downloaded)."""

from __future__ import annotations

import gzip
import importlib.util
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from ddpm_core.data import DatasetError
from ddpm_core.images import MNIST_BUNDLE, bundled_mnist
from tests.conftest import ROOT

MAX_BYTES = 500 * 1024


def _load_make():
    spec = importlib.util.spec_from_file_location("mnist_make", ROOT / "assets" / "mnist" / "make.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make = _load_make()


def _idx_bytes(array: np.ndarray) -> bytes:
    """MNIST's idx format: 0x00 0x00, type 0x08 (uint8), d; the d sizes as big-endian uint32; the bytes, row-major."""
    return struct.pack(f">HBB{array.ndim}I", 0, 0x08, array.ndim, *array.shape) + array.astype(np.uint8).tobytes()


def _write_test_set(raw: Path, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """t10k images and labels as MNIST ships them (gzip'd idx). Image i carries i in its first two pixels."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 28, 28), np.uint8)
    images[:, 0, 0], images[:, 0, 1] = np.arange(n) // 256, np.arange(n) % 256
    images[:, 10:18, 10:18] = rng.integers(0, 256, (n, 8, 8))
    labels = rng.integers(0, 10, n).astype(np.uint8)
    raw.mkdir(parents=True, exist_ok=True)
    (raw / make.IMAGES).write_bytes(gzip.compress(_idx_bytes(images), compresslevel=1))
    (raw / make.LABELS).write_bytes(gzip.compress(_idx_bytes(labels), compresslevel=1))
    return images, labels


def _first_of_each_class(labels: np.ndarray, per_class: int, start: int, end: int) -> list[int]:
    """The selection rule, spelled out: walk start … end-1 and keep an index while its class still has room."""
    kept, count = [], [0] * 10
    for i in range(start, end):
        if count[labels[i]] < per_class:
            kept.append(i)
            count[labels[i]] += 1
    return kept


# ----------------------------------------------------------------------------------------------------------------
# The bundled file and its loader


def test_the_bundle_loads_as_300_digits_in_minus_one_to_one_30_of_each_class():
    d = bundled_mnist()
    assert d.x.shape == (300, 1, 28, 28) and d.x.dtype == torch.float32
    assert d.x.min() == -1 and d.x.max() == 1  # MNIST's background is 0 and its strokes reach 255
    assert d.y.dtype == torch.int64 and torch.bincount(d.y, minlength=10).tolist() == [30] * 10
    assert (d.test_index >= make.START).all() and (d.test_index < make.END).all()  # held out from training
    assert (d.test_index.diff() > 0).all()  # test-set order, no repeats
    assert (d.x == -1).float().mean() > 0.7  # mostly background: not transposed, not inverted


def test_the_bundle_is_small_and_a_plain_npz_that_make_py_writes_byte_for_byte(tmp_path):
    assert MNIST_BUNDLE.stat().st_size <= MAX_BYTES
    with np.load(MNIST_BUNDLE, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    assert {k: (a.dtype, a.shape) for k, a in arrays.items()} == {
        "images": (np.uint8, (300, 28, 28)),
        "labels": (np.uint8, (300,)),
        "test_indices": (np.int32, (300,)),
    }
    again = tmp_path / "again.npz"
    make.write_npz(again, arrays)
    assert again.read_bytes() == MNIST_BUNDLE.read_bytes()  # no build time or extra member in the file


def _mnist_root() -> Path:
    return Path(os.environ.get("DDPM_EXPLORER_DATA", "data")) / "MNIST" / "raw"


@pytest.mark.skipif(not (_mnist_root() / make.IMAGES).is_file(), reason="MNIST's t10k .gz files are not on disk")
def test_the_bundle_is_what_make_py_makes_from_the_real_mnist_test_set():
    fresh = make.bundle(_mnist_root())
    with np.load(MNIST_BUNDLE, allow_pickle=False) as npz:
        assert all(np.array_equal(npz[k], fresh[k]) for k in fresh)


def test_a_missing_or_malformed_bundle_raises_a_dataset_error_that_says_what_is_wrong(tmp_path):
    with pytest.raises(DatasetError, match=r"missing: .*nowhere\.npz not found.*make\.py"):
        bundled_mnist(tmp_path / "nowhere.npz")
    (tmp_path / "text.npz").write_text("not a zip")
    np.save(tmp_path / "one.npy", np.zeros(3))
    for name in ("text.npz", "one.npy"):
        with pytest.raises(DatasetError, match="cannot be read"):
            bundled_mnist(tmp_path / name)
    images, labels, index = np.zeros((4, 28, 28), np.uint8), np.arange(4, dtype=np.uint8), np.arange(4)
    cases = {
        "it holds images, labels; expected": {"images": images, "labels": labels},
        "images are float64": {"images": images.astype(float), "labels": labels, "test_indices": index},
        r"images are uint8 \(4, 8, 8\)": {"images": images[:, :8, :8], "labels": labels, "test_indices": index},
        r"4 images but labels \(3,\)": {"images": images, "labels": labels[:3], "test_indices": index},
        "labels are float64": {"images": images, "labels": labels.astype(float), "test_indices": index},
        "labels run from 0 to 12": {"images": images, "labels": labels * 4, "test_indices": index},
    }
    for message, arrays in cases.items():
        np.savez(tmp_path / "bad.npz", **arrays)
        with pytest.raises(DatasetError, match=f"malformed: {message}"):
            bundled_mnist(tmp_path / "bad.npz")


# ----------------------------------------------------------------------------------------------------------------
# assets/mnist/make.py on idx files in MNIST's format


def test_read_idx_reads_what_torchvision_reads(tmp_path):
    from torchvision.datasets.mnist import read_image_file, read_label_file

    images, labels = _write_test_set(tmp_path, 50)
    for name, reader, written in ((make.IMAGES, read_image_file, images), (make.LABELS, read_label_file, labels)):
        plain = tmp_path / name.removesuffix(".gz")  # torchvision reads the unpacked file
        plain.write_bytes(gzip.decompress((tmp_path / name).read_bytes()))
        ours = make.read_idx(tmp_path / name)
        assert np.array_equal(ours, written) and np.array_equal(ours, reader(str(plain)).numpy())
        assert np.array_equal(make.read_idx(plain), ours)


def test_read_idx_refuses_a_file_that_is_not_uint8_idx_or_is_cut(tmp_path):
    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress(struct.pack(">HBBI", 0, 0x0D, 1, 3) + b"\0" * 12))  # 0x0D: float32
    with pytest.raises(ValueError, match="not a uint8 idx file"):
        make.read_idx(bad)
    cut = tmp_path / "cut"
    cut.write_bytes(_idx_bytes(np.zeros((2, 28, 28), np.uint8))[:-10])
    with pytest.raises(ValueError, match=r"the header says \(2, 28, 28\) = 1,568 bytes, the file has 1,558"):
        make.read_idx(cut)


def test_bundle_keeps_the_first_of_each_class_in_the_window_in_test_set_order(tmp_path):
    images, labels = _write_test_set(tmp_path, 120)
    out = make.bundle(tmp_path, per_class=3, start=40, end=120)
    expected = _first_of_each_class(labels, 3, 40, 120)
    assert out["test_indices"].tolist() == expected and out["test_indices"].dtype == np.int32
    assert np.array_equal(out["images"], images[expected]) and np.array_equal(out["labels"], labels[expected])
    with pytest.raises(ValueError, match=r"only \d+ images of class \d in indices 100 … 119; 5 wanted"):
        make.bundle(tmp_path, per_class=5, start=100, end=120)


def test_the_script_writes_the_bundle_the_app_loads_and_the_same_bytes_every_time(tmp_path, capsys):
    images, labels = _write_test_set(tmp_path / "raw", 10_000)  # the real size: the defaults' window 8,000 … 9,999
    out = tmp_path / "digits.npz"
    assert make.main(["--raw", str(tmp_path / "raw"), "--out", str(out)]) == 0
    assert "md5" in capsys.readouterr().out
    first = out.read_bytes()
    d = bundled_mnist(out)
    expected = _first_of_each_class(labels, make.PER_CLASS, make.START, make.END)
    assert d.test_index.tolist() == expected and len(expected) == 300
    pixels = ((d.x[:, 0, 0, :2] + 1) * 127.5).round().long()  # the index each image carries
    assert (pixels[:, 0] * 256 + pixels[:, 1]).tolist() == expected
    assert d.y.tolist() == labels[expected].tolist()
    assert np.array_equal(((d.x[:, 0] + 1) * 127.5).round().numpy().astype(np.uint8), images[expected])
    make.main(["--raw", str(tmp_path / "raw"), "--out", str(out)])
    assert out.read_bytes() == first
    with pytest.raises(SystemExit):
        make.main(["--raw", str(tmp_path / "elsewhere"), "--out", str(out)])
