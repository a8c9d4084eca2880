"""Pictures of tensors for the pages and the CLIs: one x (an image or a 2D cloud) as a uint8 RGB array, a labelled
row of them, and PNG bytes for st.image or a download. Grids of many images and point frames: ddpm_core/gif.py. No
Streamlit here.

    >>> png_bytes(strip_picture(xs, ts))      # a strip of x_t, each labelled "t = …"
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from ddpm_core.gif import image_grid, points_frame

POINTS_LIM = 4.0  # 2D clouds are drawn on the fixed square [-4, 4]²
LABEL_BAND = 16  # px under each strip panel for its "t = …"
MAX_ROW_WIDTH = 1460  # Streamlit's widest image: it resizes and re-encodes a wider one on every rerun


def to_picture(x: Tensor, min_side: int = 256) -> np.ndarray:
    """One image (C, H, W) in [-1, 1] → uint8 (H', W', 3), upscaled by nearest neighbour to ≥ min_side px a side
    (an 8×8 digit becomes 256×256 blocks); points (N, 2) → a scatter on [-POINTS_LIM, POINTS_LIM]²."""
    if x.dim() == 2:
        return points_frame(x, size=max(min_side, 8), lim=POINTS_LIM)
    return image_grid(x[None], nrow=1, scale=max(1, math.ceil(min_side / min(x.shape[-2:]))), pad=0)


def labelled_row(
    pictures: list[np.ndarray], labels: list[str], gap: int = 4, max_width: int | None = None
) -> np.ndarray:
    """Pictures (h, w, 3) uint8 of one height side by side, `gap` px apart, each label written under its picture;
    shrunk (area-averaged) to fit max_width px when given."""
    room = (max_width or 0) - gap * (len(pictures) + 1)
    if max_width and sum(p.shape[1] for p in pictures) > room:
        scale = room / sum(p.shape[1] for p in pictures)
        pictures = [_shrink(p, scale) for p in pictures]
    h = max(p.shape[0] for p in pictures)
    width = sum(p.shape[1] for p in pictures) + gap * (len(pictures) + 1)
    row = Image.new("RGB", (width, h + LABEL_BAND + gap), (255, 255, 255))
    draw, font, left = ImageDraw.Draw(row), ImageFont.load_default(size=12), gap
    for picture, label in zip(pictures, labels, strict=True):
        row.paste(Image.fromarray(picture), (left, gap))
        draw.text((left + picture.shape[1] / 2, h + gap + LABEL_BAND / 2), label, fill=(49, 51, 63), font=font,
                  anchor="mm")  # fmt: skip
        left += picture.shape[1] + gap
    return np.asarray(row)


def _shrink(picture: np.ndarray, scale: float) -> np.ndarray:
    h, w = picture.shape[:2]
    size = (max(1, int(w * scale)), max(1, int(h * scale)))
    return np.asarray(Image.fromarray(picture).resize(size, Image.Resampling.BOX))


def strip_picture(xs: Tensor, ts: list[int], min_side: int | None = None) -> np.ndarray:
    """A strip (n, C, H, W) or (n, N, 2) → one uint8 row of pictures, each labelled "t = …" with its index, at most
    MAX_ROW_WIDTH px wide. min_side: default 96 px for images, 160 for point clouds (their 3-pixel dots need room)."""
    min_side = min_side or (160 if xs.dim() == 3 else 96)
    return labelled_row([to_picture(x, min_side) for x in xs], [f"t = {t}" for t in ts], max_width=MAX_ROW_WIDTH)


def png_bytes(picture: np.ndarray) -> bytes:
    """PNG of a uint8 (H, W, 3) picture. zlib level 1: noise barely compresses, and level 1 encodes a noisy 256×256
    photo about 4× faster than the default 6 for a few percent more bytes."""
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
