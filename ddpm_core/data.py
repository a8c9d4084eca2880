"""Datasets: small image sets scaled to [-1, 1], and 2D toy point clouds (`ddpm_core/toys.py`).

    >>> ds = load_dataset("digits")                # scikit-learn's 8×8 digits, embedded: works offline
    >>> ds.x.shape, ds.y.shape, ds.classes[:2]     # (1797, 1, 8, 8) float32 in [-1, 1], (1797,) int64, ['0', '1']
    >>> load_dataset("mnist", image_size=32)       # torchvision's files under data/MNIST/raw, padded 28 → 32
    >>> load_dataset("moons").x.shape              # (10000, 2) float32, standardised with the toy's exact moments

Whatever a user can get wrong (missing files, no internet, a bad folder, a bad argument) raises DatasetError, whose
message is meant to be shown as it is.
"""

from __future__ import annotations

import importlib.util
import numbers
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ddpm_core.toys import sample_toy

IMAGE_DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "folder")
POINT_DATASETS = ("swiss_roll", "moons", "8gaussians", "checkerboard", "circles")
DATASETS = IMAGE_DATASETS + POINT_DATASETS

ResizeMode = Literal["pad", "resize"]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 4, 256  # below 4 a U-Net cannot downsample; above 256 a set no longer fits in memory
MAX_POINTS = 10_000_000
FOLDER_IMAGE_SIZE = 32  # a folder's images differ in size, so they need one
CHUNK = 4096  # images converted to float at a time: the peak is the output plus one chunk, not two float copies
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, the weights of PIL's convert("L")
TRANSPARENT_BACKGROUND = (255, 255, 255)  # transparent pixels become white, as a page shows them
DIGITS_FILE = ("datasets", "data", "digits.csv.gz")  # inside the sklearn package, what load_digits reads

TORCHVISION_SETS = {  # name -> (torchvision class, title in messages)
    "mnist": ("MNIST", "MNIST"),
    "fashion_mnist": ("FashionMNIST", "Fashion-MNIST"),
    "cifar10": ("CIFAR10", "CIFAR-10"),
}


class DatasetError(ValueError):
    """A dataset cannot be loaded; the message tells the user what to do (shown as-is in UI/CLI, no traceback)."""


@dataclass(eq=False)
class Dataset:
    name: str
    x: Tensor  # (N, C, H, W) float32 in [-1, 1] for images; (N, 2) float32 for points
    y: Tensor | None  # (N,) int64 class labels, or None (points, a folder without class subfolders)
    classes: list[str]  # class names, index = label ([] when unlabelled)
    kind: Literal["image", "points"]

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The shape of one sample: (C, H, W) or (2,)."""
        return tuple(self.x.shape[1:])

    def __repr__(self) -> str:  # the dataclass default would print every tensor element
        return f"Dataset({dataset_summary(self)})"


# ----------------------------------------------------------------------------------------------------------------
# Validation: every message names the value and says what would be valid.


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_count(what: str, value, low: int, high: int) -> int:
    if not _is_int(value) or not low <= value <= high:
        raise DatasetError(f"{what} must be an integer from {low:,} to {high:,}, got {value!r}")
    return int(value)


def _check_seed(seed) -> int:
    if not _is_int(seed) or seed < 0:
        raise DatasetError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _check_image_args(image_size, resize_mode, channels, max_images) -> None:
    if image_size is not None:
        _check_count("image_size", image_size, MIN_IMAGE_SIZE, MAX_IMAGE_SIZE)
    if resize_mode not in get_args(ResizeMode):
        raise DatasetError(f"unknown resize_mode {resize_mode!r}; valid values: {', '.join(get_args(ResizeMode))}")
    if channels is not None and (not _is_int(channels) or channels not in (1, 3)):
        raise DatasetError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    if max_images is not None and (not _is_int(max_images) or max_images < 1):
        raise DatasetError(f"max_images must be a positive integer (or None for all), got {max_images!r}")


def _class_index(wanted, names: list[str], dataset: str) -> int:
    """One entry of `classes` -> its label: a name (any case), an index, or an index written as a string."""
    valid = f"valid names: {', '.join(names)}; or an index 0 … {len(names) - 1}"
    if isinstance(wanted, str):
        folded = [n.casefold() for n in names]
        if wanted.casefold() in folded:
            return folded.index(wanted.casefold())
        if not wanted.strip().isdigit():
            raise DatasetError(f"unknown class {wanted!r} for {dataset}; {valid}")
        wanted = int(wanted)
    if not _is_int(wanted) or not 0 <= wanted < len(names):
        raise DatasetError(f"class {wanted!r} is not one of {dataset}'s classes; {valid}")
    return int(wanted)


def _class_indices(classes: Sequence[int | str], names: list[str], dataset: str) -> list[int]:
    """`classes` as the user gave it -> the sorted labels to keep."""
    if isinstance(classes, str | numbers.Integral):  # a bare "ship" would otherwise be iterated letter by letter
        classes = [classes]
    if not names:
        raise DatasetError(f"{dataset} has no classes to choose from; leave classes empty")
    if len(classes) == 0:
        raise DatasetError(f"classes is empty, which would keep nothing of {dataset}; pass None to keep all classes")
    return sorted({_class_index(c, names, dataset) for c in classes})


def _select(raw: Tensor, labels: Tensor, names: list[str], classes, max_images: int | None, dataset: str):
    """Keep the images of `classes`, then the first `max_images` of them: raw (N, …), labels (N,) -> (M, …), (M,)."""
    if classes is not None:
        wanted = _class_indices(classes, names, dataset)
        keep = torch.isin(labels, torch.tensor(wanted))
        raw, labels = raw[keep], labels[keep]
        if len(labels) == 0:
            asked = ", ".join(names[i] for i in wanted)
            raise DatasetError(f"this copy of {dataset} has no images of the class(es) {asked}; choose others")
    return raw[:max_images], labels[:max_images]


# ----------------------------------------------------------------------------------------------------------------
# Images: raw pixels (N, C, H, W) -> float32 in [-1, 1] at the asked size and channel count.


def _set_size(x: Tensor, size: int, mode: ResizeMode) -> Tensor:
    """x: (B, C, H, W) in [-1, 1] -> (B, C, size, size). "pad" frames MNIST's 28 → 32 with background (-1);
    every other change of size is a bilinear, antialiased resize."""
    if x.shape[-2:] == (size, size):
        return x
    if mode == "pad" and x.shape[-2:] == (28, 28) and size == 32:
        return F.pad(x, (2, 2, 2, 2), value=-1.0)
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def _set_channels(x: Tensor, channels: int) -> Tensor:
    """x: (B, 1 or 3, H, W) -> (B, channels, H, W); RGB → gray by luma (the weights sum to 1, so [-1, 1] stays)."""
    if x.shape[1] == channels:
        return x
    if channels == 3:
        return x.expand(-1, 3, -1, -1)
    return (x * torch.tensor(LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)


def _to_model_range(raw: Tensor, peak: float, size: int, mode: ResizeMode, channels: int) -> Tensor:
    """raw: (N, C, H, W), values 0 … peak -> (N, channels, size, size) float32 in [-1, 1]: 0 ↦ -1, peak ↦ 1."""
    out = torch.empty(raw.shape[0], channels, size, size)
    for i in range(0, raw.shape[0], CHUNK):
        x = raw[i : i + CHUNK].float() / (peak / 2) - 1  # exact at both ends: 255 / 127.5 = 2
        out[i : i + CHUNK] = _set_channels(_set_size(x, size, mode), channels).clamp(-1, 1)
    return out


def _digits() -> tuple[Tensor, Tensor, list[str], float]:
    """scikit-learn's 8×8 digits: (1797, 1, 8, 8) float64 in 0 … 16, labels (1797,), names "0" … "9", peak 16."""
    images, target = digits_arrays()
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(target), [str(i) for i in range(10)], 16.0


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 digits of scikit-learn's `load_digits` as (1797, 8, 8) float64 in 0 … 16 and labels (1797,) int64,
    read from the file scikit-learn ships without importing scikit-learn (which takes 1.5 s: the Forward page's first
    visit and every trainer start would wait for it); through `load_digits` where that file is not found."""
    spec = importlib.util.find_spec("sklearn")  # finds the package without running it
    folders = spec.submodule_search_locations if spec else None
    path = Path(folders[0]).joinpath(*DIGITS_FILE) if folders else None
    if path is not None and path.is_file():
        table = np.loadtxt(path, delimiter=",")  # 64 pixels, then the label, a row per digit (gzip read by numpy)
        return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images, d.target.astype(np.int64)


# ----------------------------------------------------------------------------------------------------------------
# torchvision's MNIST, Fashion-MNIST and CIFAR-10, read through its own loaders.


def expected_files(cls, root: Path) -> tuple[Path, list[str]]:
    """Where torchvision looks for `cls`'s files, and their names (the same checks torchvision makes)."""
    if hasattr(cls, "resources"):  # MNIST-like: every split's idx files, unpacked (name without .gz)
        return root / cls.__name__ / "raw", [Path(url).name.removesuffix(".gz") for url, _ in cls.resources]
    return root / cls.base_folder, [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]


def one_line(err: BaseException, limit: int = 300) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _open_torchvision(name: str, root: Path, train: bool, download: bool):
    """The torchvision dataset object; every way it can fail becomes a DatasetError that says what to do."""
    from torchvision import datasets

    cls_name, title = TORCHVISION_SETS[name]
    cls = getattr(datasets, cls_name)
    try:
        return cls(root=str(root), train=train, download=download)
    except Exception as err:  # torchvision raises RuntimeError, URLError, OSError, AssertionError … by case
        where, files = expected_files(cls, root)
        if download:
            raise DatasetError(
                f"Could not download {title} into {where}: {one_line(err)}. Downloading needs internet; "
                f"without it, copy the files ({', '.join(files)}) there."
            ) from err
        missing = [f for f in files if not (where / f).is_file()]
        if missing:
            raise DatasetError(
                f"{title} not found under {where} (missing: {', '.join(missing)}). "
                "Re-run with --download (needs internet), or copy the files there."
            ) from err
        raise DatasetError(
            f"{title}'s files under {where} could not be read ({one_line(err)}). They may be corrupted or "
            "incomplete: delete them and re-run with --download (needs internet), or copy fresh ones there."
        ) from err


def _torchvision(name: str, root: Path, train: bool, download: bool) -> tuple[Tensor, Tensor, list[str], float]:
    """(N, C, H, W) uint8, labels (N,) int64, class names, peak 255 — straight from `.data` and `.targets`."""
    ds = _open_torchvision(name, root, train, download)
    # CIFAR-10 keeps a (N, 32, 32, 3) numpy array, the MNISTs a (N, 28, 28) tensor
    raw = torch.from_numpy(np.asarray(ds.data)).permute(0, 3, 1, 2) if name == "cifar10" else ds.data.unsqueeze(1)
    names = [str(i) for i in range(10)] if name == "mnist" else list(ds.classes)  # torchvision's are "0 - zero" …
    return raw, torch.as_tensor(ds.targets, dtype=torch.int64), names, 255.0


# ----------------------------------------------------------------------------------------------------------------
# A folder of the user's images, optionally one subfolder per class.


def _images_in(folder: Path, recursive: bool) -> list[Path]:
    """Image files in `folder` by suffix, sorted; hidden files and folders (.git, .ipynb_checkpoints) are skipped."""
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        p
        for p in found
        if p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and p.is_file()
    )


def _folder_files(root: Path) -> tuple[list[Path], list[int] | None, list[str]]:
    """The image files under root with their labels and class names. Classes = subfolders, sorted by name, but only
    when every image sits in a subfolder; otherwise all images, recursively, unlabelled."""
    if not root.exists():
        raise DatasetError(f"the folder {root} does not exist")
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder; pass a folder of images ({', '.join(IMAGE_SUFFIXES)})")
    subfolders = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    per_class = {d.name: files for d in subfolders if (files := _images_in(d, recursive=True))}
    if _images_in(root, recursive=False) or not per_class:
        files = _images_in(root, recursive=True)
        if not files:
            raise DatasetError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in the folder {root}")
        return files, None, []
    names = sorted(per_class)
    files = [f for c in names for f in per_class[c]]
    return files, [i for i, c in enumerate(names) for _ in per_class[c]], names


def to_8bit(img, mode: str):
    """Any PIL image -> mode "RGB" or "L", 8 bits; transparency composited onto TRANSPARENT_BACKGROUND."""
    from PIL import Image

    if img.mode in ("I", "I;16", "I;16B", "I;16L"):  # 16-bit gray: convert("L") would clip at 255, not rescale
        img = Image.fromarray((np.asarray(img, dtype=np.float64) / 257).round().clip(0, 255).astype(np.uint8))
    if img.has_transparency_data:
        img = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", img.size, (*TRANSPARENT_BACKGROUND, 255)), img)
    return img.convert(mode)


def _read_image(path: Path, size: int, mode: str) -> np.ndarray | None:
    """One file -> (size, size, 3) or (size, size) uint8, centre-cropped to a square; None when PIL cannot read it."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as img:
            img = to_8bit(ImageOps.exif_transpose(img), mode)  # phones store portraits rotated, plus an EXIF tag
            return np.asarray(ImageOps.fit(img, (size, size), Image.Resampling.BILINEAR))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def _load_folder(folder, *, image_size, channels, classes, max_images) -> Dataset:
    root = Path(folder).expanduser()
    files, labels, names = _folder_files(root)
    if classes is not None:
        keep = set(_class_indices(classes, names, f"the folder {root}"))
        files, labels = zip(*[(f, y) for f, y in zip(files, labels, strict=True) if y in keep], strict=True)
    size, mode = image_size or FOLDER_IMAGE_SIZE, "L" if channels == 1 else "RGB"
    pixels, kept, skipped = [], [], []
    for i, path in enumerate(files):
        if max_images is not None and len(pixels) == max_images:
            break
        image = _read_image(path, size, mode)
        if image is None:
            skipped.append(path.name)
        else:
            pixels.append(image)
            kept.append(i)
    if skipped:
        shown = ", ".join(skipped[:5]) + (", …" if len(skipped) > 5 else "")
        warnings.warn(f"skipped {len(skipped)} unreadable image file(s) in {root}: {shown}", stacklevel=3)
    if not pixels:
        raise DatasetError(f"none of the {len(files)} image files in {root} could be read; are they images?")
    raw = torch.from_numpy(np.stack(pixels)).reshape(len(pixels), size, size, -1).permute(0, 3, 1, 2)
    x = _to_model_range(raw, 255.0, size, "resize", 1 if mode == "L" else 3)
    y = None if labels is None else torch.tensor([labels[i] for i in kept], dtype=torch.int64)
    return Dataset("folder", x, y, names, "image")


# ----------------------------------------------------------------------------------------------------------------


def make_toy(name: str, n: int, seed: int = 0) -> Tensor:
    """A fresh ground-truth sample of a 2D toy: (n, 2) float32, deterministic for (name, n, seed).

    Standardised with the toy's exact moments (see `ddpm_core/toys.py`): mean 0, E‖x‖² = 2, for every n and seed.
    """
    if name not in POINT_DATASETS:
        raise DatasetError(f"unknown 2D toy {name!r}; valid names: {', '.join(POINT_DATASETS)}")
    n = _check_count("the number of points", n, 1, MAX_POINTS)
    return torch.from_numpy(sample_toy(name, n, _check_seed(seed))).float()


def load_dataset(
    name: str,
    *,
    data_root: str | Path = "data",
    download: bool = False,
    image_size: int | None = None,
    resize_mode: ResizeMode = "pad",
    channels: int | None = None,
    classes: Sequence[int | str] | None = None,
    folder: str | Path | None = None,
    n_points: int = 10_000,
    seed: int = 0,
    train: bool = True,
    max_images: int | None = None,
) -> Dataset:
    """Load one of DATASETS: images as (N, C, H, W) float32 in [-1, 1], or 2D points as (N, 2) float32.

    Args:
        name: one of IMAGE_DATASETS ("digits" is embedded; mnist, fashion_mnist, cifar10 come through torchvision;
            "folder" reads `folder`) or POINT_DATASETS (2D toys, generated).
        data_root: the folder torchvision's datasets live in (data_root/MNIST/raw, data_root/cifar-10-batches-py).
        download: let torchvision download missing files (needs internet). Without it nothing touches the network.
        image_size: resize images to image_size × image_size, 4 … 256; None keeps the native size (folder: 32).
        resize_mode: how 28×28 images reach 32: "pad" (2 px of background each side) or "resize" (bilinear).
            Every other change of size is a bilinear, antialiased resize.
        channels: 1 (grayscale) or 3 (RGB); None keeps the dataset's own (folder: 3).
        classes: keep only these classes, by label index or by name (e.g. "ship"); None keeps all.
        folder: for name="folder": png/jpg/jpeg/bmp/webp images, read recursively; when all of them sit in
            subfolders, each subfolder is a class (labels in sorted name order). Non-square images are centre-cropped.
        n_points: the number of points of a 2D toy.
        seed: the 2D toy's random seed; the same seed gives the same points.
        train: torchvision's training split (else its test split).
        max_images: keep only the first max_images images (after class filtering), to save memory.

    Raises:
        DatasetError: an unknown name or bad argument, files that are missing or unreadable, a failed download.
    """
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    _check_image_args(image_size, resize_mode, channels, max_images)
    n_points, seed = _check_count("n_points", n_points, 1, MAX_POINTS), _check_seed(seed)
    if name in POINT_DATASETS:
        if classes is not None:
            raise DatasetError(f"{name} is a 2D point set without classes; leave classes empty")
        return Dataset(name, make_toy(name, n_points, seed), None, [], "points")
    if name == "folder":
        if folder is None or str(folder).strip() == "":
            raise DatasetError('the "folder" dataset needs a folder of images: pass folder=… (--folder PATH)')
        return _load_folder(folder, image_size=image_size, channels=channels, classes=classes, max_images=max_images)
    root = Path(data_root).expanduser()
    raw, labels, names, peak = _digits() if name == "digits" else _torchvision(name, root, train, download)
    raw, labels = _select(raw, labels, names, classes, max_images, name)
    x = _to_model_range(raw, peak, image_size or raw.shape[-1], resize_mode, channels or raw.shape[1])
    return Dataset(name, x, labels, names, "image")


def dataset_summary(ds: Dataset) -> str:
    """One line, e.g. "digits: 1797 images 1×8×8, 10 classes" or "moons: 10000 points in 2D"."""
    n = ds.x.shape[0]
    if ds.kind == "points":
        return f"{ds.name}: {n} point{'s' * (n != 1)} in 2D"
    shape = "×".join(map(str, ds.sample_shape))
    if ds.y is None or not ds.classes:
        labels = "unlabelled"
    else:
        present, total = int(ds.y.unique().numel()), len(ds.classes)
        labels = f"{total} class{'es' * (total != 1)}" if present == total else f"{present} of {total} classes"
    return f"{ds.name}: {n} image{'s' * (n != 1)} {shape}, {labels}"
