"""MNIST's own file format (idx), and the split the project uses when only MNIST's test set is at hand.

    >>> images = read_idx(Path("data/MNIST/raw/t10k-images-idx3-ubyte.gz"))     # (10000, 28, 28) uint8
    >>> split_test_set(Path("../shared/data/mnist"), Path("/tmp/mnist-split"))  # then load_dataset("mnist", …)

The idx header: two zero bytes, the type code (0x08 = uint8), the number of dimensions d, then d big-endian uint32
sizes; the data follows, row-major. torchvision reads these files unpacked from <root>/MNIST/raw/.

The test-set split (TRAIN_END): the bundled MNIST model and the CPU benchmark train on test images 0 … 7,999 and
hold out 8,000 … 9,999 for the FD, and the digits the app bundles come from the held-out part (assets/mnist/).
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"
TRAIN_IMAGES, TRAIN_LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
TRAIN_END = 8000  # test-set images 0 … 7,999 train; 8,000 … 9,999 are held out


def read_idx(path: Path) -> np.ndarray:
    """An idx file (gzip'd when its name ends in .gz) → its uint8 array; ValueError for anything else."""
    path = Path(path)
    try:
        data = (gzip.decompress if path.suffix == ".gz" else bytes)(path.read_bytes())
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{path} cannot be unpacked: {e}") from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise ValueError(f"{path} is not a uint8 idx file (its header is {data[:4].hex() or 'empty'})")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise ValueError(f"{path} ends inside its header ({len(data)} bytes for {ndim} dimensions)")
    shape = struct.unpack_from(f">{ndim}I", data, 4)
    body = data[4 + 4 * ndim :]
    if len(body) != int(np.prod(shape)):
        raise ValueError(f"{path}: the header says {shape} = {int(np.prod(shape)):,} bytes, the file has {len(body):,}")
    return np.frombuffer(body, np.uint8).reshape(shape)


def write_idx(path: Path, array: np.ndarray) -> None:
    """array (uint8, any shape) as an unpacked idx file: the inverse of read_idx."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim])
    Path(path).write_bytes(header + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes())


def find_idx(folder: Path, name: str) -> Path | None:
    """folder/name or folder/name.gz, whichever is there (None for neither)."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_test_set(data_root: Path) -> tuple[np.ndarray, np.ndarray]:
    """MNIST's test images (N, 28, 28) and labels (N,) from torchvision's layout <data_root>/MNIST/raw (unpacked or
    .gz); ValueError saying which file is missing."""
    raw = Path(data_root) / "MNIST" / "raw"
    found = [find_idx(raw, n) for n in (TEST_IMAGES, TEST_LABELS)]
    if None in found:
        raise ValueError(f"MNIST's test set is not under {raw} (wanted {TEST_IMAGES} and {TEST_LABELS}, or .gz)")
    images, labels = (read_idx(p) for p in found)  # type: ignore[arg-type]
    if images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise ValueError(f"expected (N, 28, 28) images and (N,) labels under {raw}, got {images.shape}, {labels.shape}")
    return images, labels


def split_test_set(data_root: Path, into: Path, train_end: int = TRAIN_END) -> Path:
    """Lay MNIST's test set out as a torchvision MNIST folder under into: test images 0 … train_end−1 as its train
    split, the rest as its test split. Returns into, for load_dataset("mnist", data_root=into[, train=False])."""
    images, labels = read_test_set(data_root)
    if not 0 < train_end < len(images):
        raise ValueError(f"train_end must split the {len(images)} test images, got {train_end}")
    raw = Path(into) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for (img_name, lab_name), part in (((TRAIN_IMAGES, TRAIN_LABELS), slice(0, train_end)),
                                       ((TEST_IMAGES, TEST_LABELS), slice(train_end, None))):  # fmt: skip
        write_idx(raw / img_name, images[part])
        write_idx(raw / lab_name, labels[part])
    return Path(into)
