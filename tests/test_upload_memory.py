"""Large uploads: refused from the header by their decoded size, or reduced right after decoding and still right.

The memory these cost is measured in bench/bench_upload_memory.py; here only what comes out is checked."""

from __future__ import annotations

import io
import math
import struct

import numpy as np
import pytest
from PIL import Image

import ddpm_core.images as images
from ddpm_core.images import MAX_DECODED_BYTES, ImageError, decode_image
from tests.test_forward import _png, _png_claiming


def _split(width: int, height: int, channels: int = 3) -> np.ndarray:
    """(height, width, channels) uint8: left half 0, right half 255."""
    pixels = np.zeros((height, width, channels), np.uint8)
    pixels[:, width // 2 :] = 255
    return pixels


def _halves(x) -> tuple[float, float]:
    return x[..., : x.shape[-1] // 3].mean().item(), x[..., -(x.shape[-1] // 3) :].mean().item()


def test_the_decoded_size_is_refused_from_the_header_with_its_figures():
    with pytest.raises(ImageError) as refused:
        decode_image(_png_claiming(6000, 6000, colour_type=6), 64)
    assert str(refused.value) == (
        "the image is 6,000 × 6,000 RGBA: 144 MB once decoded (4 bytes a pixel); the limit is 96 MB"
    )
    with pytest.raises(ImageError, match=r"^the image is 5,000 × 5,000 RGB: 100 MB once decoded"):
        decode_image(_png_claiming(5000, 5000), 64)


def test_an_rgba_png_just_under_the_cap_decodes_right():
    """Left half opaque black, right half transparent: dark on the left, white (the background) on the right."""
    side = math.isqrt(MAX_DECODED_BYTES // 4)
    pixels = _split(side, side, 4)
    pixels[:, :, 3] = np.where(pixels[:, :, 0] == 0, 255, 0)
    pixels[:, side // 2 :, :3] = 0  # black under the transparent half: it must not show through
    x = decode_image(_png(Image.fromarray(pixels, "RGBA"), compress_level=1), 64, 3)
    assert x.shape == (3, 64, 64)
    left, right = _halves(x)
    assert left < -0.99 and right > 0.99


@pytest.mark.parametrize("channels", [1, 3])
def test_a_large_16_bit_png_is_rescaled_and_reduced(channels):
    ramp = np.tile(np.linspace(0, 65535, 3000).round().astype(np.uint16), (2000, 1))  # 3,000 × 2,000, 0 … 65535
    x = decode_image(_png(Image.fromarray(ramp), compress_level=1), 32, channels)
    assert x.shape == (channels, 32, 32)
    assert (x[0].diff(dim=1) >= -1e-6).all()  # still a ramp from left to right
    assert x[0, :, 0].max() < -0.2 and x[0, :, -1].min() > 0.2  # the centre square spans the middle third


def test_the_exif_orientation_survives_the_reduction():
    """Stored 4,000 wide × 2,000 high, left dark, right bright, tagged "rotate 90° clockwise": dark on top."""
    exif = Image.Exif()
    exif[0x0112] = 6
    x = decode_image(_png(Image.fromarray(_split(4000, 2000)), exif=exif, compress_level=1), 32, 1)
    top, bottom = x[0, :10].mean(), x[0, -10:].mean()
    assert top < -0.99 and bottom > 0.99


def test_a_large_jpeg_decodes_at_a_reduced_scale(monkeypatch):
    """An 8,000 × 4,000 JPEG asked for at 64 px is decoded at 1/8 (1,000 × 500): dark left, bright right."""
    buffer = io.BytesIO()
    Image.fromarray(_split(8000, 4000)).save(buffer, format="JPEG", quality=90)
    seen = []
    reduced = images._reduced
    monkeypatch.setattr(images, "_reduced", lambda img, *a: seen.append(img.size) or reduced(img, *a))
    x = decode_image(buffer.getvalue(), 64, 3)
    assert seen == [(1000, 500)]
    left, right = _halves(x)
    assert left < -0.95 and right > 0.95


def test_a_progressive_jpeg_counts_its_coefficients():
    """libjpeg keeps every coefficient of a progressive JPEG, whatever the draft scale: 6,000 × 6,000 4:2:0 needs
    108 MB of them (110 MB with the picture at 1/8), refused from the header: a small file whose frame header claims
    that size."""
    buffer = io.BytesIO()
    Image.fromarray(_split(64, 64)).save(buffer, format="JPEG", progressive=True)
    data = buffer.getvalue()
    sof = data.index(b"\xff\xc2")  # SOF2: marker, length (2), precision (1), height (2), width (2)
    data = data[: sof + 5] + struct.pack(">HH", 6000, 6000) + data[sof + 9 :]
    with pytest.raises(ImageError, match=r"^the image is 6,000 × 6,000 RGB: 110 MB once decoded \(progressive JPEG"):
        decode_image(data, 64)


@pytest.mark.parametrize("size", [32, 256])
def test_the_reduction_matches_a_full_size_resize(size):
    """Reducing by whole boxes before the Lanczos resize keeps the picture where it was: against a resize of the
    full-size picture, within a gray level or so (a partial last box would stretch it by a few percent)."""
    y, x = np.mgrid[0:1500, 0:2100]
    gray = (127.5 + 120 * np.sin(x / 90) * np.cos(y / 130)).astype(np.uint8)
    data = _png(Image.fromarray(np.stack([gray, 255 - gray, gray // 2, gray], -1), "RGBA"))
    with Image.open(io.BytesIO(data)) as full:
        expected = images.image_to_tensor(full, size, 3)
    assert (decode_image(data, size, 3) - expected).abs().mean() < 0.015
