"""Pictures of samples and of sampling: image grids, point scatters, and GIFs of a reverse-process trajectory.

A trajectory is the sampler's sequence of StepRecord(t, x_t, x0_pred), from x_T (t = T) down to x_0 (t = 0). Each GIF
frame shows x_t and the model's current estimate x̂₀ side by side, so one sees the sample emerge from the noise while
x̂₀ sharpens. Everything returns uint8 RGB arrays or GIF bytes; only numpy and Pillow are used to draw.

    >>> gif = trajectory_gif(records)            # bytes: st.image(gif) or Path("x.gif").write_bytes(gif)
    >>> save_png(image_grid(samples), "grid.png")   # samples (N, C, H, W) in [-1, 1]
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from ddpm_core.fileio import atomic_write

if TYPE_CHECKING:
    from ddpm_core.sample import StepRecord  # what a trajectory is made of

MAX_GIF_WIDTH = 1460  # Streamlit freezes GIFs wider than this; never exceed it
MIN_CELL_PX = 32  # a default grid upscales each image to at least this many pixels a side, so 8×8 digits are visible
PAD_GRAY = 128  # between grid cells: mid-gray separates both white-on-black digits and light images

BACKGROUND = (240, 242, 246)  # the frame around the panels; neither pure white nor black, so cells stand out
TEXT_COLOR = (49, 51, 63)
AXIS_COLOR = (200, 200, 200)
PANEL_COLOR = (255, 255, 255)  # a scatter panel's background
POINT_COLOR = (31, 119, 180)  # x_t points
POINT_PRED_COLOR = (255, 127, 14)  # x̂₀ points: a second colour, so the panels are told apart at a glance
MARGIN, GAP, TEXT_BAND = 4, 8, 16  # px: around the frame, between the two panels, height of a title or label row
FONT_SIZE = 12
POINTS_SIZE = 360  # px side of a scatter panel when the frame width allows it
TITLES = ("x_t", "x0_hat")  # the default font has no glyphs for x̂₀


def _numpy(x) -> np.ndarray:
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


def _grid_shape(n: int, h: int, w: int, nrow: int, scale: int, pad: int) -> tuple[int, int]:
    """(height, width) in px of a grid of n cells of h×w, nrow cells per row, upscaled by scale, pad px apart."""
    rows = math.ceil(n / nrow)
    return rows * h * scale + (rows + 1) * pad, nrow * w * scale + (nrow + 1) * pad


def _default_scale(n: int, h: int, w: int, nrow: int, pad: int, max_width: int) -> int:
    """The smallest scale that makes a cell ≥ MIN_CELL_PX, lowered (not below 1) until the grid fits max_width."""
    scale = max(1, math.ceil(MIN_CELL_PX / min(h, w)))
    while scale > 1 and _grid_shape(n, h, w, nrow, scale, pad)[1] > max_width:
        scale -= 1
    return scale


def _check_images(x: np.ndarray) -> None:
    if x.ndim != 4 or x.shape[0] == 0 or x.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, C, H, W) with N ≥ 1 and C = 1 or 3, got shape {x.shape}")


def image_grid(x, nrow: int | None = None, scale: int | None = None, pad: int = 1) -> np.ndarray:
    """A grid of images x (N, C, H, W) in [-1, 1] (tensor or array) → uint8 RGB (H', W', 3).

    Values are clipped to [-1, 1]; one channel is repeated to three. nrow is the number of images per row
    (default ⌈√N⌉, so N = 10 gives 4 columns and 3 rows). Each image is upscaled by nearest neighbour by scale
    (default: the smallest making a cell ≥ MIN_CELL_PX a side, reduced until the grid fits MAX_GIF_WIDTH). pad px of
    PAD_GRAY separate the cells and frame the grid: H' = rows·H·scale + (rows + 1)·pad, likewise W'. Empty cells
    in the last row stay PAD_GRAY.
    """
    x = _numpy(x)
    _check_images(x)
    n, _, h, w = x.shape
    nrow = min(nrow or math.ceil(math.sqrt(n)), n)
    scale = scale or _default_scale(n, h, w, nrow, pad, MAX_GIF_WIDTH)
    if nrow < 1 or scale < 1 or pad < 0:
        raise ValueError(f"nrow and scale must be ≥ 1 and pad ≥ 0, got nrow={nrow}, scale={scale}, pad={pad}")
    cells = np.broadcast_to(_to_uint8(x).transpose(0, 2, 3, 1), (n, h, w, 3))  # (N, H, W, 3)
    cells = cells.repeat(scale, axis=1).repeat(scale, axis=2)
    grid = np.full((*_grid_shape(n, h, w, nrow, scale, pad), 3), PAD_GRAY, dtype=np.uint8)
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
    p = _numpy(points)
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


def axis_limit(records: Sequence[StepRecord]) -> float:
    """Half-width of the fixed axes: the 99.5th percentile of |x_t| over all frames, +10%, rounded up to 0.5, ≥ 1.

    Only x_t counts: early x̂₀ estimates divide by √ᾱ_t ≈ 0 and fly far out; an outlier must not squash the cloud.
    """
    coords = np.abs(np.concatenate([_numpy(r.x_t).ravel() for r in records]))
    coords = coords[np.isfinite(coords)]
    q = float(np.quantile(coords, 0.995)) if coords.size else 1.0
    return max(1.0, math.ceil(q * 1.1 * 2) / 2)


# ----------------------------------------------------------------------------------------------------------------
# Frames and the GIF


@functools.cache
def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=FONT_SIZE)


def _slot_width(panel_width: int, label: bool) -> int:
    """Width of a panel's column: the panel, or its title if that is wider."""
    if not label:
        return panel_width
    return max(panel_width, *(math.ceil(_font().getlength(t)) + 4 for t in TITLES))


def _frame_width(panel_width: int, label: bool) -> int:
    return 2 * MARGIN + 2 * _slot_width(panel_width, label) + GAP


def _compose(left: np.ndarray, right: np.ndarray, t: int, label: bool) -> np.ndarray:
    """Two panels (h, w, 3) side by side, titled x_t / x0_hat above and "t = …" below when label → (H, W, 3)."""
    slot = _slot_width(max(left.shape[1], right.shape[1]), label)
    top = MARGIN + (TEXT_BAND if label else 0)
    panel_h = max(left.shape[0], right.shape[0])
    height = top + panel_h + (TEXT_BAND if label else 0) + MARGIN
    frame = Image.new("RGB", (2 * MARGIN + 2 * slot + GAP, height), BACKGROUND)
    draw = ImageDraw.Draw(frame)
    for i, (panel, title) in enumerate(zip((left, right), TITLES, strict=True)):
        x = MARGIN + i * (slot + GAP)
        frame.paste(Image.fromarray(panel), (x + (slot - panel.shape[1]) // 2, top))
        if label:
            draw.text((x + slot / 2, MARGIN + TEXT_BAND / 2), title, fill=TEXT_COLOR, font=_font(), anchor="mm")
    if label:
        draw.text(
            (frame.width / 2, top + panel_h + TEXT_BAND / 2), f"t = {t}", fill=TEXT_COLOR, font=_font(), anchor="mm"
        )
    return np.asarray(frame)


def _fit_width(frame: np.ndarray, max_width: int) -> np.ndarray:
    """Downscale a frame (H, W, 3) that is still wider than max_width at scale 1, keeping its aspect ratio."""
    h, w = frame.shape[:2]
    if w <= max_width:
        return frame
    size = (max_width, max(1, round(h * max_width / w)))
    return np.asarray(Image.fromarray(frame).resize(size, Image.Resampling.BOX))


def _image_frames(records: Sequence[StepRecord], max_width: int, label: bool) -> list[np.ndarray]:
    n, _, h, w = records[0].x_t.shape
    nrow = math.ceil(math.sqrt(n))
    scale = max(1, math.ceil(MIN_CELL_PX / min(h, w)))
    while scale > 1 and _frame_width(_grid_shape(n, h, w, nrow, scale, 1)[1], label) > max_width:
        scale -= 1
    grid = functools.partial(image_grid, nrow=nrow, scale=scale)
    return [_compose(grid(r.x_t), grid(r.x0_pred), r.t, label) for r in records]


def _point_frames(records: Sequence[StepRecord], max_width: int, label: bool, lim: float | None) -> list[np.ndarray]:
    lim = lim or axis_limit(records)
    size = max(8, min(POINTS_SIZE, (max_width - 2 * MARGIN - GAP) // 2))
    return [
        _compose(
            points_frame(r.x_t, size=size, lim=lim),
            points_frame(r.x0_pred, size=size, lim=lim, color=POINT_PRED_COLOR),
            r.t,
            label,
        )
        for r in records
    ]


def _check_trajectory(records: Sequence[StepRecord]) -> None:
    if not records:
        raise ValueError("the trajectory is empty: it needs at least one StepRecord")
    shape = tuple(records[0].x_t.shape)
    if not (len(shape) == 2 and shape[1] == 2) and len(shape) != 4:
        raise ValueError(f"x_t must be images (N, C, H, W) or points (N, 2), got shape {shape}")
    for r in records:
        if tuple(r.x_t.shape) != shape or tuple(r.x0_pred.shape) != shape:
            raise ValueError(
                f"every x_t and x0_pred must have the first record's shape {shape}; at t = {r.t} got "
                f"{tuple(r.x_t.shape)} and {tuple(r.x0_pred.shape)}"
            )


def trajectory_gif(
    trajectory: Sequence[StepRecord],
    *,
    fps: int = 12,
    hold_last: float = 1.5,
    max_width: int = MAX_GIF_WIDTH,
    label: bool = True,
    lim: float | None = None,
) -> bytes:
    """An animated, endlessly looping GIF of a reverse-process trajectory, one frame per record, in order.

    Each frame shows two panels side by side, x_t on the left and x̂₀ on the right: image grids (⌈√N⌉ per row,
    clipped to [-1, 1]) or, for (N, 2) points, scatters on fixed axes [-lim, lim]² (lim None: from the spread of x_t
    over all frames, see axis_limit). With label, each panel is titled ("x_t", "x0_hat") and "t = …" is written below.

    Timing: every frame shows for 1/fps s except the last, which shows for max(hold_last, 1/fps) s (one longer frame,
    no repeats), so the frame count is exactly len(trajectory). GIF stores durations in 10 ms units: 12 fps is 80 ms.
    Pillow merges consecutive frames that are pixel-identical (adding their durations); with label the "t = …" text
    keeps frames of distinct t apart.

    Width ≤ max_width: the per-cell scale (or the scatter size) shrinks until the frame fits; a frame still too wide
    at scale 1 is downscaled as a whole. Thin long trajectories (e.g. every 20th of 1000 steps) before calling: each
    frame is a full picture.

    Raises:
        ValueError: for an empty trajectory, shapes that differ between records, or fps < 1.
    """
    records = list(trajectory)
    _check_trajectory(records)
    if fps < 1:
        raise ValueError(f"fps must be at least 1, got {fps}")
    if records[0].x_t.ndim == 4:
        frames = _image_frames(records, max_width, label)
    else:
        frames = _point_frames(records, max_width, label, lim)
    frames = [_fit_width(f, max_width) for f in frames]
    step_ms = round(1000 / fps)
    durations = [step_ms] * (len(frames) - 1) + [max(step_ms, round(1000 * hold_last))]
    images = [Image.fromarray(f) for f in frames]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0)
    return buffer.getvalue()
