"""Pictures of tensors for the pages and the CLIs, as uint8 RGB arrays: a grid of images, a scatter of 2D points,
one x (an image or a cloud), a labelled row of them; PNG bytes for st.image or a download, and PNG files. GIFs of a
trajectory: ddpm_core/gif.py. Only numpy and Pillow draw; no Streamlit here.

    >>> save_png(image_grid(samples), "grid.png")   # samples (N, C, H, W) in [-1, 1]
    >>> png_bytes(strip_picture(xs, ts))            # a strip of x_t, each labelled "t = …"
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from ddpm_core.fileio import atomic_write

MAX_ROW_WIDTH = 1460  # Streamlit's widest image: it resizes a wider one on every rerun, and freezes a wider GIF
MIN_CELL_PX = 32  # a default grid upscales each image to at least this many pixels a side, so 8×8 digits are visible
PAD_GRAY = 128  # between grid cells: mid-gray separates both white-on-black digits and light images
AXIS_COLOR = (200, 200, 200)
PANEL_COLOR = (255, 255, 255)  # a scatter panel's background
POINT_COLOR = (31, 119, 180)  # x_t points
POINT_PRED_COLOR = (255, 127, 14)  # x̂₀ points: a second colour, so the panels are told apart at a glance
POINTS_SIZE = 360  # px side of a scatter panel when the frame width allows it
POINTS_LIM = 4.0  # 2D clouds are drawn on the fixed square [-4, 4]²
LABEL_BAND = 16  # px under each strip panel for its "t = …"


def as_numpy(x) -> np.ndarray:
    """A float32 numpy copy of a tensor (any device, grad or not) or array."""
    if isinstance(x, Tensor):
        return x.detach().to("cpu", torch.float32).numpy()
    return np.asarray(x, dtype=np.float32)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """[-1, 1] → 0 … 255, clipped; NaN shows as mid-gray rather than crashing the cast."""
    x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)
    return np.round((np.clip(x, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------------------
# Image grids


def grid_shape(n: int, h: int, w: int, nrow: int, scale: int, pad: int) -> tuple[int, int]:
    """(height, width) in px of a grid of n cells of h×w, nrow cells per row, upscaled by scale, pad px apart."""
    rows = math.ceil(n / nrow)
    return rows * h * scale + (rows + 1) * pad, nrow * w * scale + (nrow + 1) * pad


def _default_scale(n: int, h: int, w: int, nrow: int, pad: int, max_width: int) -> int:
    """The smallest scale that makes a cell ≥ MIN_CELL_PX, lowered (not below 1) until the grid fits max_width."""
    scale = max(1, math.ceil(MIN_CELL_PX / min(h, w)))
    while scale > 1 and grid_shape(n, h, w, nrow, scale, pad)[1] > max_width:
        scale -= 1
    return scale


def _check_images(x: np.ndarray) -> None:
    if x.ndim != 4 or x.shape[0] == 0 or x.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, C, H, W) with N ≥ 1 and C = 1 or 3, got shape {x.shape}")


def image_grid(x, nrow: int | None = None, scale: int | None = None, pad: int = 1) -> np.ndarray:
    """A grid of images x (N, C, H, W) in [-1, 1] (tensor or array) → uint8 RGB (H', W', 3).

    Values are clipped to [-1, 1]; one channel is repeated to three. nrow is the number of images per row
    (default ⌈√N⌉, so N = 10 gives 4 columns and 3 rows). Each image is upscaled by nearest neighbour by scale
    (default: the smallest making a cell ≥ MIN_CELL_PX a side, reduced until the grid fits MAX_ROW_WIDTH). pad px of
    PAD_GRAY separate the cells and frame the grid: H' = rows·H·scale + (rows + 1)·pad, likewise W'. Empty cells
    in the last row stay PAD_GRAY.
    """
    x = as_numpy(x)
    _check_images(x)
    n, _, h, w = x.shape
    nrow = min(nrow or math.ceil(math.sqrt(n)), n)
    scale = scale or _default_scale(n, h, w, nrow, pad, MAX_ROW_WIDTH)
    if nrow < 1 or scale < 1 or pad < 0:
        raise ValueError(f"nrow and scale must be ≥ 1 and pad ≥ 0, got nrow={nrow}, scale={scale}, pad={pad}")
    cells = np.broadcast_to(_to_uint8(x).transpose(0, 2, 3, 1), (n, h, w, 3))  # (N, H, W, 3)
    cells = cells.repeat(scale, axis=1).repeat(scale, axis=2)
    grid = np.full((*grid_shape(n, h, w, nrow, scale, pad), 3), PAD_GRAY, dtype=np.uint8)
    ch, cw = h * scale, w * scale
    for i, cell in enumerate(cells):
        top, left = pad + (i // nrow) * (ch + pad), pad + (i % nrow) * (cw + pad)
        grid[top : top + ch, left : left + cw] = cell
    return grid


def save_png(array: np.ndarray, path) -> None:
    """Write a uint8 image (H, W, 3), (H, W, 4) or (H, W) to path as PNG, atomically.

    The PNG goes to a temporary file in the same folder, then os.replace puts it in place: a reader (the app polling
    a run folder) never sees half a file. On any error the temporary file is removed and the error re-raised.
    """
    atomic_write(path, lambda tmp: Image.fromarray(np.asarray(array)).save(tmp, format="PNG"))


# ----------------------------------------------------------------------------------------------------------------
# Point scatters


def _to_pixels(v: np.ndarray, size: int, lim: float) -> np.ndarray:
    """Coordinates in [-lim, lim] → pixel indices 0 … size-1, rounded."""
    return np.round((v + lim) / (2 * lim) * (size - 1)).astype(int)


def points_frame(points, *, size: int = POINTS_SIZE, lim: float = 4.0, color=POINT_COLOR) -> np.ndarray:
    """A scatter of points (N, 2) on the fixed square [-lim, lim]² → uint8 (size, size, 3).

    x grows to the right and y upwards: (x, y) lands on row round((lim − y)/(2 lim)·(size − 1)) and column
    round((x + lim)/(2 lim)·(size − 1)), as a 3×3 dot. Axes through the origin and a border are drawn in AXIS_COLOR
    so that the fixed scale shows from frame to frame. Points outside the square (or not finite) are not drawn.
    """
    p = as_numpy(points)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"points must be (N, 2), got shape {p.shape}")
    if size < 8 or not lim > 0:
        raise ValueError(f"size must be ≥ 8 and lim > 0, got size={size}, lim={lim}")
    img = np.full((size, size, 3), PANEL_COLOR, dtype=np.uint8)
    origin = int(_to_pixels(np.float32(0), size, lim))
    img[origin, :] = img[:, origin] = AXIS_COLOR
    img[[0, -1], :] = AXIS_COLOR
    img[:, [0, -1]] = AXIS_COLOR
    p = p[np.isfinite(p).all(1) & (np.abs(p) <= lim).all(1)]
    rows, cols = _to_pixels(-p[:, 1], size, lim), _to_pixels(p[:, 0], size, lim)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            img[np.clip(rows + dr, 0, size - 1), np.clip(cols + dc, 0, size - 1)] = color
    return img


# ----------------------------------------------------------------------------------------------------------------
# One x, and labelled rows


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
