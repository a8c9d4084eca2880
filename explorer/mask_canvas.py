"""The Edit page's painted mask: a canvas over the input image (streamlit-drawable-canvas, a maintained Fabric.js
component that ships its frontend in the wheel, so it works offline) on which the user paints with a brush or drags
rectangles over what to regenerate. ddpm_core.edit_inputs.mask_from_painting turns the painted layer into a mask at
the model's resolution; a preview shows that mask as it is painted.
"""

from __future__ import annotations

import numpy as np
import streamlit as st
from torch import Tensor

from ddpm_core.edit_inputs import PAINT_COVER, mask_from_painting
from ddpm_core.pictures import png_bytes, to_picture

CANVAS = 224  # px a side the canvas aims at: a whole number of canvas pixels per image pixel
TOOLS = {"freedraw": "Brush", "rect": "Rectangles"}
PAINT = "rgba(255, 64, 64, 0.55)"  # see-through, so the input stays visible under the paint
RED = np.array([255, 64, 64], np.uint8)  # the regenerated pixels in a mask's picture


def canvas_side(size: int) -> int:
    """The canvas's side for an image of size×size: a multiple of size near CANVAS (8 → 224, 28 → 224, 64 → 192)."""
    return size * max(1, CANVAS // size)


def overlay_png(x0: Tensor, mask: Tensor, side: int) -> bytes:
    """The input x0 (C, H, W) with the pixels that the mask (C, H, W) regenerates in red: the picture of a mask. (A
    plain white-on-black mask would lose its white edge against the page.)"""
    picture = to_picture(x0.float().cpu(), side).copy()
    marked = to_picture(mask.float().cpu() * 2 - 1, side)[..., 0] > 127
    picture[marked] = RED
    return png_bytes(picture)


def painted_mask(x0: Tensor) -> Tensor | None:
    """Draw the canvas over x0 (C, H, W) and return the painted mask (C, H, W), 1 = regenerate; None (after an
    st.info saying what to do) while nothing is painted."""
    from streamlit_drawable_canvas import st_canvas  # imported here: only this view needs the component

    shape = tuple(x0.shape)
    side = canvas_side(shape[-1])
    left, right = st.columns([3, 2])
    tool = right.radio("Tool", list(TOOLS), format_func=TOOLS.get, horizontal=True, key="paint_tool")
    width = right.slider("Brush width (image pixels)", 1, max(1, shape[-1] // 2), max(1, shape[-1] // 8),
                         key="paint_width", disabled=tool != "freedraw")  # fmt: skip
    with left:
        brush = width * side // shape[-1] if tool == "freedraw" else 1  # a rectangle's edge adds nothing to it
        background = png_bytes(to_picture(x0.float().cpu(), side))
        drawing = st_canvas(fill_color=PAINT, stroke_width=brush, stroke_color=PAINT, background_image=background,
                            height=side, width=side, drawing_mode=tool, return_image_data=True,
                            key=f"paint_{shape[-1]}")  # fmt: skip
    painting = drawing.image_data
    right.caption(f"Paint over what to regenerate: a pixel is regenerated when {PAINT_COVER:.0%} of it or more is "
                  "painted. The toolbar above the canvas undoes, redoes and clears. The painting is not part of the "
                  "page's link.")  # fmt: skip
    mask = None if painting is None else mask_from_painting(painting[..., 3], shape)
    if mask is None or not mask.any():
        right.info("Nothing painted yet: paint on the image to mark what to regenerate.")
        return None
    pixels = f"{int(mask[0].sum())} of {shape[-1] * shape[-2]} pixels"
    right.image(overlay_png(x0, mask, 96), output_format="PNG", caption=f"the mask: {pixels} regenerated (red)")
    return mask
