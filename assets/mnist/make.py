"""Write assets/mnist/mnist_digits.npz: a few hundred MNIST test digits the app ships, so that it needs no download.

    python assets/mnist/make.py --raw data/MNIST/raw      # torchvision's folder with the two t10k .gz files

Reads MNIST's test set from its idx files (gzip + the idx header, nothing downloaded) and keeps, for each class
0 … 9, the first PER_CLASS images in index order among test-set indices START … END-1: the last 2,000 test images,
the part meant to stay out of any MNIST model the project trains on the test set (with indices 0 … 7,999). The digits
are stored in test-set order.

The output is a zip that np.load(path, allow_pickle=False) opens, holding
    images        (N, 28, 28) uint8, 0 = background, 255 = ink, as in MNIST
    labels        (N,) uint8, the class 0 … 9
    test_indices  (N,) int32, each image's index in MNIST's test set
and it is byte-for-byte the same at every run (fixed zip timestamps), so re-making it leaves git with no change.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere: the repo's ddpm_core
from ddpm_core.idx import read_idx

HERE = Path(__file__).resolve().parent
OUT = HERE / "mnist_digits.npz"
IMAGES, LABELS = "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"
PER_CLASS = 30
START, END = 8000, 10_000  # the test set's last 2,000: held out from training
N_CLASSES = 10
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can store: no build time in the file


def select(labels: np.ndarray, per_class: int = PER_CLASS, start: int = START, end: int = END) -> np.ndarray:
    """The test-set indices kept: the first per_class of each class in start … end-1, in index order. (N,) int32."""
    window = np.arange(start, min(end, len(labels)))
    kept = []
    for c in range(N_CLASSES):
        of_c = window[labels[window] == c][:per_class]
        if len(of_c) < per_class:
            raise ValueError(f"only {len(of_c)} images of class {c} in indices {start} … {end - 1}; {per_class} wanted")
        kept.append(of_c)
    return np.sort(np.concatenate(kept)).astype(np.int32)


def bundle(raw: Path, per_class: int = PER_CLASS, start: int = START, end: int = END) -> dict[str, np.ndarray]:
    """The arrays the bundle holds, from the two t10k idx files in the folder raw."""
    images, labels = read_idx(raw / IMAGES), read_idx(raw / LABELS)
    if images.shape[1:] != (28, 28) or images.shape[0] != labels.shape[0] or labels.ndim != 1:
        raise ValueError(f"expected (N, 28, 28) images and (N,) labels, got {images.shape} and {labels.shape}")
    kept = select(labels, per_class, start, end)
    return {"images": images[kept], "labels": labels[kept], "test_indices": kept}


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """As np.savez_compressed, but with fixed timestamps: the same arrays always give the same bytes."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_TIME)
            zf.writestr(info, buffer.getvalue(), compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--raw", type=Path, default=Path("data/MNIST/raw"), help=f"the folder with {IMAGES}, {LABELS}")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--per-class", type=int, default=PER_CLASS)
    parser.add_argument("--start", type=int, default=START, help="the first test-set index to pick from")
    parser.add_argument("--end", type=int, default=END, help="one past the last")
    args = parser.parse_args(argv)
    for name in (IMAGES, LABELS):
        if not (args.raw / name).is_file():
            parser.error(f"{args.raw / name} not found: give --raw the folder holding MNIST's {IMAGES} and {LABELS}")
        print(f"{name}: md5 {hashlib.md5((args.raw / name).read_bytes()).hexdigest()}")
    arrays = bundle(args.raw, args.per_class, args.start, args.end)
    write_npz(args.out, arrays)
    first, last = arrays["test_indices"][[0, -1]]
    print(f"{args.out}: {len(arrays['labels'])} digits (test indices {first} … {last}), {args.out.stat().st_size:,} B")
    return 0


if __name__ == "__main__":
    sys.exit(main())
