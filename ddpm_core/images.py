"""Single images x_0 for the forward-process page: scikit-learn's sample photos, an uploaded PNG/JPEG, the MNIST
digits bundled in assets/mnist/, and which of torchvision's data sets are on disk. No Streamlit here.

Every image comes out as a (C, H, W) float32 tensor in [-1, 1], C = 1 (grayscale) or 3 (RGB), square:

    >>> sample_photo("china", size=64).shape          # (3, 64, 64)
    >>> bundled_mnist().x.shape                       # (300, 1, 28, 28): 300 digits, a batch of them
    >>> decode_image(uploaded_bytes, size=128, channels=1).shape   # (1, 128, 128), or ImageError saying why not
    >>> [d.name for d in datasets_on_disk("data") if d.present]    # e.g. ["mnist"]

Whatever a user can get wrong (a file that is not an image, a truncated one, a decompression bomb) raises ImageError,
whose message is meant to be shown as it is.
"""

from __future__ import annotations

import ctypes
import io
import math
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from ddpm_core.data import TORCHVISION_SETS, DatasetError, expected_files, one_line, to_8bit

SAMPLE_PHOTOS = ("china", "flower")  # scikit-learn's load_sample_images, shipped with the package: works offline
RESOLUTIONS = (32, 64, 128, 256)  # the sizes the page offers; any 1 … MAX_SIZE works here
MAX_SIZE = 1024
MAX_UPLOAD_BYTES = 10 * 2**20  # as .streamlit/config.toml's server.maxUploadSize = 10 (MB)
MAX_PIXELS = 40_000_000  # refused from the header alone, before a pixel is decoded
MAX_DECODED_BYTES = 96_000_000  # what decoding holds (PIL's picture, a progressive JPEG's coefficients): 24 MP RGBA
UPLOAD_FORMATS = ("PNG", "JPEG")
MNIST_BUNDLE = Path(__file__).resolve().parents[1] / "assets" / "mnist" / "mnist_digits.npz"  # assets/mnist/make.py


class ImageError(ValueError):
    """An image cannot be used; the message tells the user why (shown as-is in the UI, no traceback)."""


def _check_size(size, channels) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_SIZE:
        raise ImageError(f"size must be an integer from 1 to {MAX_SIZE}, got {size!r}")
    if channels not in (1, 3):
        raise ImageError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")


def image_to_tensor(img: Image.Image, size: int, channels: int = 3) -> Tensor:
    """A PIL image → (channels, size, size) float32 in [-1, 1]: 0 ↦ -1, 255 ↦ 1.

    In order: EXIF orientation applied (phones store portraits rotated, plus a tag); 16-bit scaled to 8 bits;
    transparency composited on white; converted to grayscale (luma) or RGB; centre-cropped to a square and resized
    (Lanczos) to size × size — a 1×1 image becomes a flat square.
    """
    _check_size(size, channels)
    img = to_8bit(ImageOps.exif_transpose(img), "L" if channels == 1 else "RGB")
    img = ImageOps.fit(img, (size, size), Image.Resampling.LANCZOS)
    pixels = np.asarray(img, dtype=np.float32).reshape(size, size, channels)  # (H, W, C)
    return torch.from_numpy(pixels / 127.5 - 1).permute(2, 0, 1).clamp(-1, 1).contiguous()


def _bytes_per_pixel(mode: str) -> int:
    """What PIL stores per pixel: 1 byte for 1-bit, gray and palette, 2 for 16-bit gray, else 4 (RGB is padded)."""
    return 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4


_MODE_NAMES = {"1": "1-bit", "L": "gray", "LA": "gray + alpha", "P": "palette", "I;16": "16-bit gray"}
STRIP_BYTES = 4_000_000  # the full-size picture is reduced a strip of about this many bytes at a time


def _check_pixels(img: Image.Image) -> None:
    """Refuse, from the header, a picture of more than MAX_PIXELS pixels."""
    width, height = img.size
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"the image is {width:,} × {height:,} = {width * height / 1e6:,.0f} megapixels; the limit is "
            f"{MAX_PIXELS / 1e6:.0f} megapixels"
        )


def _progressive_jpeg_bytes(img: Image.Image) -> int:
    """What libjpeg holds while decoding a progressive JPEG at any scale: every DCT coefficient of the full-size
    picture, 2 bytes each, one per pixel of each component at its sampling (4:2:0 chroma: a quarter each). 0 for
    baseline JPEGs and PNGs, which decode a row of blocks at a time."""
    if img.format != "JPEG" or not img.info.get("progressive"):
        return 0
    width, height = img.size
    h_max, v_max = max(h for _, h, _, _ in img.layer), max(v for _, _, v, _ in img.layer)
    return sum(2 * math.ceil(width * h / h_max) * math.ceil(height * v / v_max) for _, h, v, _ in img.layer)


def _draft_within_limit(img: Image.Image, size: int) -> None:
    """Set JPEG's draft scale for `size`, and refuse, from the header, a picture that needs more than
    MAX_DECODED_BYTES to decode: PIL's picture at that scale, plus a progressive JPEG's coefficients."""
    header, coefficients = img.size, _progressive_jpeg_bytes(img)
    img.draft(None, (size, size))  # JPEG: the decoder will downscale by 2, 4 or 8 (a no-op for PNG)
    (width, height), per_pixel = img.size, _bytes_per_pixel(img.mode)
    needed = width * height * per_pixel + coefficients
    if needed <= MAX_DECODED_BYTES:
        return
    (width, height), mode = header, _MODE_NAMES.get(img.mode, img.mode)
    why = "progressive JPEG: its coefficients, 2 bytes each" if coefficients else f"{per_pixel} bytes a pixel"
    raise ImageError(
        f"the image is {width:,} × {height:,} {mode}: {needed / 1e6:,.0f} MB once decoded ({why}); the limit is "
        f"{MAX_DECODED_BYTES / 1e6:.0f} MB"
    )


def _reduced(img: Image.Image, size: int, mode: str) -> Image.Image:
    """A decoded picture → its centre square in 8-bit `mode` ("L" or "RGB"), box-averaged by the largest integer
    factor that keeps its side ≥ 2·size (for image_to_tensor's Lanczos resize), EXIF orientation kept (the centre
    square of a rotated picture is the rotated centre square).

    It goes a strip of rows at a time, so that beside the full-size picture only strip-sized copies ever exist
    (to_8bit's 16-bit rescale and alpha compositing would each copy the whole picture)."""
    width, height = img.size
    factor = max(1, min(width, height) // (2 * size))
    side = min(width, height) // factor * factor  # whole boxes only: a partial last one would stretch the picture
    left, top = (width - side) // 2, (height - side) // 2
    rows = factor * max(1, STRIP_BYTES // (8 * side * factor))  # 8: to_8bit's float64 copy of a 16-bit strip
    out = Image.new(mode, (side // factor, side // factor))
    for y in range(0, side, rows):
        strip = to_8bit(img.crop((left, top + y, left + side, top + min(y + rows, side))), mode)
        out.paste(strip.reduce(factor) if factor > 1 else strip, (0, y // factor))
    if orientation := img.getexif().get(0x0112):  # 0x0112: EXIF orientation, for exif_transpose
        out.getexif()[0x0112] = orientation
    return out


def _find_malloc_trim():
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc's; not in macOS's or Windows' C library, nor in musl
    except (OSError, AttributeError, TypeError):
        return None


_MALLOC_TRIM = _find_malloc_trim()


def _release_freed_memory() -> None:
    """Hand the freed full-size buffers back to the system: glibc keeps freed heap memory for reuse otherwise, and
    the server's resident size would stay at its peak. A no-op without glibc."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def decode_image(data: bytes, size: int, channels: int = 3) -> Tensor:
    """An uploaded PNG or JPEG file's bytes → (channels, size, size) float32 in [-1, 1] (see image_to_tensor).

    The header is read first: anything but PNG/JPEG, more than MAX_PIXELS pixels, or more than MAX_DECODED_BYTES to
    decode (a decompression bomb: a small file that claims a huge picture) is refused before any pixel is decoded.
    JPEGs decode at a reduced scale (1/2, 1/4 or 1/8) where the size allows; the picture's centre square is reduced
    a strip at a time right after decoding, so one full-size copy of it exists at most, and only until this returns.

    Raises:
        ImageError: empty or too large a file, not a PNG/JPEG image, too large a picture, truncated or corrupt data.
    """
    _check_size(size, channels)
    if not data:
        raise ImageError("the file is empty")
    if len(data) > MAX_UPLOAD_BYTES:
        raise ImageError(f"the file is {len(data) / 2**20:.1f} MB; the limit is {MAX_UPLOAD_BYTES // 2**20} MB")
    try:
        with warnings.catch_warnings():  # PIL warns above 89 MP; MAX_PIXELS refuses those below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=UPLOAD_FORMATS)  # reads the header only
    except Image.DecompressionBombError as err:
        raise ImageError(f"the image is far too large ({one_line(err)}); the limit is {MAX_PIXELS:,} pixels") from err
    except (OSError, ValueError, SyntaxError) as err:  # UnidentifiedImageError is an OSError
        raise ImageError("this file is not a PNG or JPEG image (or it is damaged beyond reading)") from err
    try:
        with img:
            _check_pixels(img)
            try:
                _draft_within_limit(img, size)
                img.load()
                small = _reduced(img, size, "L" if channels == 1 else "RGB")
            except ImageError:
                raise
            except Exception as err:  # PIL's decoders raise OSError, SyntaxError, EOFError, struct.error… by format
                raise ImageError(f"the {img.format} file could not be decoded: it may be truncated or corrupt "
                                 f"({one_line(err, 160)})") from err.with_traceback(None)  # fmt: skip
        return image_to_tensor(small, size, channels)
    finally:
        del img  # the full-size picture goes before the trim (the decoder's traceback, which holds it, is dropped)
        _release_freed_memory()


def sample_photo(name: str, size: int = 64, channels: int = 3) -> Tensor:
    """One of scikit-learn's sample photos (SAMPLE_PHOTOS; 640 × 427 JPEGs) → (channels, size, size) in [-1, 1]."""
    if name not in SAMPLE_PHOTOS:
        raise ImageError(f"unknown sample photo {name!r}; valid names: {', '.join(SAMPLE_PHOTOS)}")
    from sklearn.datasets import load_sample_image  # sklearn takes a second to import; only the photos need it

    return image_to_tensor(Image.fromarray(load_sample_image(f"{name}.jpg")), size, channels)


# ----------------------------------------------------------------------------------------------------------------
# torchvision's data sets: present on disk or not, and how to get them.


@dataclass(frozen=True)
class OnDisk:
    """Whether one of torchvision's data sets can be loaded from data_root without downloading."""

    name: str  # as load_dataset knows it: "mnist", "fashion_mnist", "cifar10"
    title: str  # "MNIST", "Fashion-MNIST", "CIFAR-10"
    where: Path  # the folder torchvision reads
    missing: tuple[str, ...]  # file names not found there

    @property
    def present(self) -> bool:
        return not self.missing

    def how_to_get(self) -> str:
        """What to do when the files are missing: one paragraph, Markdown."""
        return (
            f"{self.title} is not on disk: `{self.where}` lacks {', '.join(self.missing)}. Download it once (needs "
            f"internet) with `python -m ddpm_core.train --dataset {self.name} --data-root {self.where.parent} "
            "--download` (it then starts training: stop it with Ctrl+C), or copy torchvision's files into that "
            "folder."
        )


def datasets_on_disk(data_root: str | Path = "data") -> list[OnDisk]:
    """MNIST, Fashion-MNIST and CIFAR-10 under data_root: the files torchvision's loaders check for, present or not.

    Only file names are checked (no reading, no network): load_dataset(name, data_root=…) reports damaged files.
    """
    from torchvision import datasets  # a second to import; only this listing needs it

    root = Path(data_root).expanduser()
    found = []
    for name, (cls_name, title) in TORCHVISION_SETS.items():
        where, files = expected_files(getattr(datasets, cls_name), root)
        found.append(OnDisk(name, title, where, tuple(f for f in files if not (where / f).is_file())))
    return found


# ----------------------------------------------------------------------------------------------------------------
# MNIST digits shipped with the app (assets/mnist/, made by its make.py): x_0 with no download.


class BundledDigits(NamedTuple):
    x: Tensor  # (N, 1, 28, 28) float32 in [-1, 1]: 0 ↦ -1 (background), 255 ↦ 1 (ink)
    y: Tensor  # (N,) int64, the class 0 … 9
    test_index: Tensor  # (N,) int64, each digit's index in MNIST's test set


def _bundle_arrays(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DatasetError(
            f"the bundled MNIST digits are missing: {path} not found. Restore the file from git, or rebuild it with "
            "`python assets/mnist/make.py --raw <folder with MNIST's t10k .gz files>`."
        )
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ValueError(f"a single {npz.dtype} array, not an .npz")
        with npz:
            return {name: npz[name] for name in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise DatasetError(f"the bundled MNIST digits in {path} cannot be read ({one_line(err, 160)})") from err


def _bundle_problem(a: dict[str, np.ndarray]) -> str | None:
    """What is wrong with a bundle's arrays, or None."""
    images, labels, indices = (a.get(k) for k in ("images", "labels", "test_indices"))
    if images is None or labels is None or indices is None:
        return f"it holds {', '.join(a) or 'nothing'}; expected images, labels, test_indices"
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) == 0:
        return f"images are {images.dtype} {images.shape}; expected uint8 (N, 28, 28), N ≥ 1"
    if labels.shape != (len(images),) or indices.shape != (len(images),):
        return f"{len(images)} images but labels {labels.shape} and test_indices {indices.shape}"
    if labels.dtype.kind not in "iu" or indices.dtype.kind not in "iu":
        return f"labels are {labels.dtype} and test_indices {indices.dtype}; expected integers"
    if labels.min() < 0 or labels.max() > 9:
        return f"labels run from {labels.min()} to {labels.max()}; expected classes 0 … 9"
    return None


def bundled_mnist(path: str | Path = MNIST_BUNDLE) -> BundledDigits:
    """MNIST test digits shipped with the app, as x (N, 1, 28, 28) in [-1, 1], labels and test-set indices. The
    bundled file holds 30 per class from test-set indices 8,000 … 9,999 (the last 2,000, held out from training), in
    test-set order; assets/mnist/README.md says how it was made.

    Raises:
        DatasetError: the file is missing, not an .npz, or lacks images (N, 28, 28) uint8, labels (N,) in 0 … 9 and
            test_indices (N,).
    """
    path = Path(path)
    a = _bundle_arrays(path)
    if problem := _bundle_problem(a):
        raise DatasetError(f"the bundled MNIST digits in {path} are malformed: {problem}")
    x = torch.from_numpy(a["images"]).unsqueeze(1).float() / 127.5 - 1  # exact at both ends: 255 / 127.5 = 2
    y, index = (torch.from_numpy(a[k].astype(np.int64)) for k in ("labels", "test_indices"))
    return BundledDigits(x, y, index)
