"""Showing the Sample page's results (pages/sample.py): the animated GIF, pictures of samples, the point-cloud plots,
the quality metric and the DDPM-vs-DDIM grid. Pure display: explorer/sample_widgets.py makes what is shown."""

from __future__ import annotations

import base64
import io

import numpy as np
import plotly.graph_objects as go
import streamlit as st
import torch
from PIL import Image

from ddpm_core.gif import axis_limit
from ddpm_core.pictures import POINT_COLOR, POINT_PRED_COLOR, image_grid, points_frame
from ddpm_core.sample import StepRecord


def gif_html(gif: bytes, alt: str) -> str:
    """An <img> holding the GIF as a data URI, at its own pixel width (CSS may shrink it; it keeps animating —
    st.image would re-encode a GIF it resizes and freeze it on frame 1)."""
    width = Image.open(io.BytesIO(gif)).width
    data = base64.b64encode(gif).decode("ascii")
    return (
        f'<img src="data:image/gif;base64,{data}" width="{width}" alt="{alt}" '
        'style="max-width: 100%; height: auto; image-rendering: pixelated">'
    )


def picture(x: torch.Tensor, lim: float, color=POINT_COLOR) -> np.ndarray:
    """Samples as a picture: an image grid, or a scatter of points on [-lim, lim]²."""
    return points_frame(x, lim=lim, color=color) if x.dim() == 2 else image_grid(x)


def _scatter(x: torch.Tensor, name: str, color: tuple, visible=None) -> go.Scatter:
    xy = x.numpy().astype(np.float32)
    return go.Scatter(x=xy[:, 0], y=xy[:, 1], mode="markers", name=name, visible=visible,
                      marker={"size": 4, "color": f"rgb{color}"})  # fmt: skip


def _fixed_axes(fig: go.Figure, lim: float) -> go.Figure:
    fig.update_layout(
        height=460, margin={"l": 10, "r": 10, "t": 30, "b": 10},
        xaxis={"range": [-lim, lim], "constrain": "domain", "autorange": False},
        yaxis={"range": [-lim, lim], "scaleanchor": "x", "scaleratio": 1, "autorange": False},
    )  # fmt: skip
    return fig


def points_figure(record: StepRecord, lim: float) -> go.Figure:
    """x_t and x̂₀ of one recorded step, on the fixed square [-lim, lim]²."""
    data = [_scatter(record.x0_pred, "x̂₀", POINT_PRED_COLOR), _scatter(record.x_t, "x_t", POINT_COLOR)]  # x_t on top
    return _fixed_axes(go.Figure(data=data), lim)


def points_animation(records: list[StepRecord], lim: float) -> go.Figure:
    """The point cloud x_t (and x̂₀, off until clicked in the legend) over the recorded steps, on fixed axes, with a
    play button and a slider."""
    frames = [
        go.Frame(data=[_scatter(r.x_t, "x_t", POINT_COLOR), _scatter(r.x0_pred, "x̂₀", POINT_PRED_COLOR)], name=str(r.t))
        for r in records
    ]
    first = [frames[0].data[0], _scatter(records[0].x0_pred, "x̂₀", POINT_PRED_COLOR, "legendonly")]
    fig = _fixed_axes(go.Figure(data=first, frames=frames), lim)
    play = {"frame": {"duration": 80, "redraw": False}, "fromcurrent": True, "transition": {"duration": 0}}
    jump = {"mode": "immediate", "frame": {"duration": 0, "redraw": False}, "transition": {"duration": 0}}
    fig.update_layout(
        height=560, margin={"l": 10, "r": 10, "t": 50, "b": 90},  # room for the buttons above, the slider below
        updatemenus=[{"type": "buttons", "direction": "left", "x": 0, "y": 1.02, "xanchor": "left", "yanchor": "bottom",
                      "buttons": [
            {"label": "▶ Play", "method": "animate", "args": [None, play]},
            {"label": "❚❚ Pause", "method": "animate", "args": [[None], jump]},
        ]}],
        sliders=[{"x": 0, "len": 1, "y": -0.08, "yanchor": "top", "currentvalue": {"prefix": "t = "}, "steps": [
            {"label": f.name, "method": "animate", "args": [[f.name], jump]} for f in frames
        ]}],
    )  # fmt: skip
    return fig


def show_metric(metric: dict | None, note: str, n: int) -> None:
    if metric is None:
        st.info(note)
        return
    cols = st.columns(3)
    if "confidence" in metric:  # digits
        cols[0].metric("Pixel-FD", f"{metric['pixel_fd']:.3f}", help="Real digits vs real digits: ≈ 0.07")
        cols[1].metric("Classifier confidence", f"{metric['confidence']:.3f}", help="Mean max-probability")
        hist = go.Figure(go.Bar(x=list(range(10)), y=metric["class_histogram"]))
        hist.update_layout(height=200, margin={"l": 10, "r": 10, "t": 30, "b": 10}, title="predicted classes",
                           xaxis={"dtick": 1})  # fmt: skip
        cols[2].plotly_chart(hist, key="class_histogram")
    elif "mmd" in metric:  # 2D points
        cols[0].metric("MMD²", f"{metric['mmd']:.4f}", help="Unbiased: can dip below 0 for equal distributions")
        cols[1].metric("Sliced Wasserstein-1", f"{metric['sliced_wasserstein']:.3f}", help="In data units")
    else:
        for col, key in zip(cols, ("pixel_fd", "feature_fd"), strict=False):
            if metric.get(key) is not None:
                col.metric(key.replace("_", "-"), f"{metric[key]:.3f}")
    st.caption(f"Measured on these {n} samples: noisy for small N (the bundled scores use N = 1000).")


def short_metric(metric: dict | None) -> str:
    if not metric:
        return ""
    if "confidence" in metric:
        return f"FD {metric['pixel_fd']:.3f} · confidence {metric['confidence']:.2f}"
    if "mmd" in metric:
        return f"MMD² {metric['mmd']:.4f} · SW₁ {metric['sliced_wasserstein']:.3f}"
    return f"pixel-FD {metric['pixel_fd']:.3f}"


def show_compare(view) -> None:
    """One cell per setting: its final samples, step count, wall time and metric; points share fixed axes."""
    first = view.cells[0].x_T
    lim = axis_limit([StepRecord(-1, first, first)]) if first.dim() == 2 else 1.0
    per_row = 3
    for start in range(0, len(view.cells), per_row):
        cols = st.columns(per_row)
        for col, cell in zip(cols, view.cells[start : start + per_row], strict=False):
            col.image(picture(cell.samples, lim), output_format="PNG", caption=cell.setting.label)
            col.markdown(f"**{cell.setting.label}** — {cell.steps:,} steps in **{cell.wall_time:.2f} s**")
            if cell.metric:
                col.caption(short_metric(cell.metric))
