"""GIFs of a reverse-process trajectory, drawn with the grids and scatters of ddpm_core/pictures.py.

A trajectory is the sampler's sequence of StepRecord(i, x_t, x0_pred), from x_T (the paper's t = T) down to x_0
(t = 0); frames are labelled with the paper's t. Each frame shows x_t and the model's current estimate x̂₀ side by
side, so one sees the sample emerge from the noise while x̂₀ sharpens. Only numpy and Pillow are used to draw.

    >>> gif = trajectory_gif(records)            # bytes: st.image(gif) or Path("x.gif").write_bytes(gif)
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ddpm_core.pictures import (
    MAX_ROW_WIDTH,
    MIN_CELL_PX,
    POINT_PRED_COLOR,
    POINTS_SIZE,
    as_numpy,
    grid_shape,
    image_grid,
    points_frame,
)

if TYPE_CHECKING:
    from ddpm_core.sample import StepRecord  # what a trajectory is made of

MAX_GIF_WIDTH = MAX_ROW_WIDTH  # Streamlit freezes GIFs wider than this; never exceed it
BACKGROUND = (240, 242, 246)  # the frame around the panels; neither pure white nor black, so cells stand out
TEXT_COLOR = (49, 51, 63)
MARGIN, GAP, TEXT_BAND = 4, 8, 16  # px: around the frame, between the two panels, height of a title or label row
FONT_SIZE = 12
TITLES = ("x_t", "x0_hat")  # the default font has no glyphs for x̂₀


# ----------------------------------------------------------------------------------------------------------------
# Point clouds: one fixed scale for all frames


def axis_limit(records: Sequence[StepRecord]) -> float:
    """Half-width of the fixed axes: the 99.5th percentile of |x_t| over all frames, +10%, rounded up to 0.5, ≥ 1.

    Only x_t counts: early x̂₀ estimates divide by √ᾱ_t ≈ 0 and fly far out; an outlier must not squash the cloud.
    """
    coords = np.abs(np.concatenate([as_numpy(r.x_t).ravel() for r in records]))
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
    while scale > 1 and _frame_width(grid_shape(n, h, w, nrow, scale, 1)[1], label) > max_width:
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
