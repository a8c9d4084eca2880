"""Widgets, cached calls and plots of the Sample page (pages/sample.py): the checkpoint picker, the sampler settings,
one sampling run kept in session state, and the DDPM-vs-DDIM grid.

A model is loaded once per checkpoint file (keyed on its path, mtime and size, so a run that writes a new checkpoint
is reloaded) and shared read-only by every session: sampling runs under torch.inference_mode and never changes it.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import streamlit as st
import torch
from PIL import Image

from ddpm_core import runs
from ddpm_core.compare import CellResult, SamplerSetting, cheap_settings, compare_samplers, standard_settings
from ddpm_core.data import DatasetError
from ddpm_core.devices import resolve_device
from ddpm_core.diffusion import Diffusion
from ddpm_core.evaluate import quality_metrics
from ddpm_core.forward import png_bytes
from ddpm_core.gif import (
    POINT_COLOR,
    POINT_PRED_COLOR,
    StepRecord,
    axis_limit,
    image_grid,
    points_frame,
    trajectory_gif,
)
from ddpm_core.sample import SampleResult, sample
from explorer.ui import ROOT

BUNDLED = ROOT / "assets" / "checkpoints"
MAX_N = {"images": 256, "points": 2000}
DEFAULT_N = {"images": 64, "points": 1000}
GIF_MAX_IMAGES = 64  # a GIF of 256 noisy grids is ~15 MB; the first 64 show the same story
STEP_LABEL = {"ddpm": "DDPM (ancestral, Ho et al. 2020)", "ddim": "DDIM (Song et al. 2021)"}
VARIANCE_LABEL = {"beta": "σ_t² = β_t (the course's)", "posterior": "σ_t² = β̃_t (the posterior's)"}


@dataclass(frozen=True)
class Loaded:
    ckpt: runs.Checkpoint  # model on `device`, eval mode
    diffusion: Diffusion  # on the same device
    device: str

    @property
    def points(self) -> bool:
        return self.ckpt.config.is_points

    @property
    def T(self) -> int:
        return self.diffusion.num_timesteps


# ----------------------------------------------------------------------------------------------------------------
# Choosing a checkpoint


def checkpoint_files(runs_root: Path) -> dict[str, str]:
    """{path: label} of the bundled checkpoints, then of each run's EMA and raw weights, by name."""
    bundled = sorted(BUNDLED.glob("*.safetensors"), key=lambda p: (p.stem != "digits", p.stem))  # digits first
    found = {str(p): f"{p.stem} (bundled)" for p in bundled}
    if runs_root.is_dir():
        for run in sorted(p for p in runs_root.iterdir() if p.is_dir()):
            for name, what in ((runs.EMA, "EMA weights"), (runs.MODEL, "raw weights")):
                if (run / name).is_file():
                    found[str(run / name)] = f"{run.name} — {what} (runs folder)"
    return found


@st.cache_resource(max_entries=8, show_spinner="Loading the checkpoint…")
def _load(path: str, mtime_ns: int, size: int) -> Loaded:
    """One model per file version (mtime and size are only the cache key); raises CheckpointError."""
    ckpt = runs.load_checkpoint(path)
    device = resolve_device("auto")
    ckpt.model.to(device)
    return Loaded(ckpt, Diffusion(ckpt.config.make_schedule()).to(device), str(device))


def checkpoint_picker() -> Loaded | None:
    """A selectbox (key "checkpoint") over checkpoint_files, and the loaded checkpoint; None after an st.error that
    gives the CheckpointError's message."""
    files = checkpoint_files(runs.default_runs_root())
    if st.session_state.get("checkpoint") not in files:  # a run folder removed since the last run
        st.session_state.pop("checkpoint", None)
    path = st.selectbox("Checkpoint", list(files), format_func=files.get, key="checkpoint",
                        help=f"The bundled ones, and the runs in {runs.default_runs_root()}/")  # fmt: skip
    try:
        stat = Path(path).stat()
        return _load(path, stat.st_mtime_ns, stat.st_size)
    except (runs.CheckpointError, OSError) as e:
        st.error(f"Cannot use this checkpoint: {e}")
        return None


def model_description(ckpt: runs.Checkpoint) -> str:
    m = ckpt.model_config
    params = sum(p.numel() for p in ckpt.model.parameters())
    if m.kind == "mlp":
        what = f"residual MLP, {m.num_layers} × {m.base_channels}"
    else:
        widths = ", ".join(str(m.base_channels * k) for k in m.channel_mults)
        what = f"UNet ({widths} channels, {m.num_res_blocks} res block(s) per level)"
    return f"{what}, {params:,} parameters"


def config_table(loaded: Loaded) -> str:
    """The checkpoint's settings as a markdown table."""
    c, ckpt = loaded.ckpt.config, loaded.ckpt
    schedule = c.schedule + "".join(f", {k}={v:g}" for k, v in c.schedule_params.items())
    schedule += " + zero terminal SNR" if c.rescale_zero_terminal_snr else ""
    rows = {
        "data set": f"{c.dataset} — samples of shape {'×'.join(map(str, ckpt.sample_shape))}",
        "model": model_description(ckpt),
        "schedule": schedule,
        "T": f"{c.T:,}",
        "trained for": f"{ckpt.step:,} steps",
        "file": f"`{ckpt.path}`",
        "sampling on": loaded.device,
    }
    return "| setting | value |\n| --- | --- |\n" + "".join(f"| {k} | {v} |\n" for k, v in rows.items())


# ----------------------------------------------------------------------------------------------------------------
# Sampler settings: widget keys are sample()'s argument names


def _init_state(loaded: Loaded) -> None:
    """Defaults for the widgets below, set through session state (the widgets take no value=): a checkpoint of
    another kind or T resets those that depend on it — the cap on N, clipping, the step count, the grid's cells."""
    state, kind = st.session_state, "points" if loaded.points else "images"
    changed = state.get("sample.for") != (kind, loaded.T)
    state["sample.for"] = (kind, loaded.T)
    defaults = {
        "sampler": "ddpm", "variance": "beta", "eta": 0.0, "seed": 0,
        "steps": min(int(state.get("steps", 50)), loaded.T), "clip_x0": not loaded.points, "n": DEFAULT_N[kind],
        "compare_settings": [s.label for s in cheap_settings(loaded.T)],
    }  # fmt: skip
    resets = {"steps", "clip_x0", "n", "compare_settings"}
    for key, value in defaults.items():
        if key not in state or (changed and key in resets):
            state[key] = value


def sampler_settings(loaded: Loaded) -> dict:
    """The sampler's widgets → the keyword arguments of ddpm_core.sample (sampler, steps, eta, variance, clip_x0,
    seed) and n."""
    _init_state(loaded)
    kind = "points" if loaded.points else "images"
    cols = st.columns(4)
    sampler = cols[0].radio("Sampler", ["ddpm", "ddim"], key="sampler", format_func=str.upper, horizontal=True)
    settings = {"sampler": sampler, "steps": loaded.T, "eta": 0.0, "variance": "beta"}
    if sampler == "ddpm":
        settings["variance"] = cols[1].radio("Variance", list(VARIANCE_LABEL), key="variance",
                                             format_func=VARIANCE_LABEL.get)  # fmt: skip
        cols[2].markdown(f"Steps: **all T = {loaded.T:,}**")
    else:
        settings["eta"] = cols[1].slider("η", 0.0, 1.0, step=0.1, key="eta", help="0: deterministic; 1: DDPM-like")
        settings["steps"] = int(cols[2].number_input("Steps", 1, loaded.T, step=1, key="steps",
                                                     help="Strided (trailing) steps from T down to 1"))  # fmt: skip
    clip_help = "On for images (the data lie in [-1, 1]), off for 2D points"
    settings["clip_x0"] = cols[3].checkbox("Clip x̂₀ to [-1, 1]", key="clip_x0", help=clip_help)
    left, right = st.columns(2)
    settings["n"] = int(left.number_input(f"N samples (≤ {MAX_N[kind]:,})", 1, MAX_N[kind], step=1, key="n"))
    settings["seed"] = int(right.number_input("Seed", 0, 2**31 - 1, step=1, key="seed", help="Draws x_T and z"))
    return settings


def sampling_latex(sampler: str, variance: str, eta: float) -> list[str]:
    """The update of the chosen sampler, in the course's notation (Ho et al. Algorithm 2; Song et al. eq. 12)."""
    if sampler == "ddpm":
        posterior = r"\tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\beta_t"
        sigma = r"\beta_t" if variance == "beta" else posterior
        return [
            r"x_{t-1} = \frac{1}{\sqrt{\alpha_t}}\left(x_t - \frac{1-\alpha_t}{\sqrt{1-\bar\alpha_t}}"
            r"\,\epsilon_\theta(x_t,t)\right) + \sigma_t z,\qquad z\sim\mathcal{N}(0,I)",
            rf"\sigma_t^2 = {sigma},\qquad t = T, T-1, \dots, 1\ \ (z = 0 \text{{ at }} t = 1)",
        ]
    return [
        r"x_{t-1} = \sqrt{\bar\alpha_{t-1}}\underbrace{\left(\frac{x_t-\sqrt{1-\bar\alpha_t}\,\epsilon_\theta(x_t,t)}"
        r"{\sqrt{\bar\alpha_t}}\right)}_{\text{predicted } x_0}"
        r" + \underbrace{\sqrt{1-\bar\alpha_{t-1}-\sigma_t^2}\,\epsilon_\theta(x_t,t)}"
        r"_{\text{direction pointing to } x_t}"
        r" + \underbrace{\sigma_t z}_{\text{random noise}}",
        rf"\sigma_t = \eta\sqrt{{\frac{{1-\bar\alpha_{{t-1}}}}{{1-\bar\alpha_t}}}}"
        rf"\sqrt{{1-\frac{{\bar\alpha_t}}{{\bar\alpha_{{t-1}}}}}},\qquad \eta = {eta:g}",
    ]


# ----------------------------------------------------------------------------------------------------------------
# One sampling run, kept in session state


@dataclass(frozen=True)
class SampleView:
    checkpoint: str  # the path it was sampled from: a result from another checkpoint is not shown
    settings: dict
    result: SampleResult
    gif: bytes
    png: bytes
    lim: float  # half-width of the fixed axes of point plots
    metric: dict | None
    metric_note: str  # why there is no metric, when there is none


def _progress_callback(bar):
    shown = [-1]

    def update(done: int, total: int) -> None:
        percent = 100 * done // total
        if percent != shown[0]:  # ≤ 101 messages to the browser, not one per step
            shown[0] = percent
            bar.progress(percent / 100, text=f"Sampling: step {done:,} of {total:,}")

    return update


def _metric(samples: torch.Tensor, loaded: Loaded) -> tuple[dict | None, str]:
    if len(samples) < 2:
        return None, "The quality metric needs N ≥ 2."
    try:
        return quality_metrics(samples, loaded.ckpt.config), ""
    except (DatasetError, ValueError) as e:
        return None, f"No quality metric: {e}"


def generate(loaded: Loaded, settings: dict) -> SampleView:
    """Sample with a progress bar, then draw the GIF and the PNG and score the samples."""
    bar = st.progress(0.0, text="Sampling…")
    args = {k: v for k, v in settings.items() if k != "n"}
    result = sample(loaded.ckpt.model, loaded.diffusion, settings["n"], loaded.ckpt.sample_shape,
                    progress=_progress_callback(bar), **args)  # fmt: skip
    bar.progress(1.0, text="Drawing the GIF and scoring the samples…")
    if loaded.points:
        lim = axis_limit(result.trajectory)
        gif, final = trajectory_gif(result.trajectory, lim=lim), points_frame(result.samples, lim=lim)
    else:
        lim = 1.0
        shown = [StepRecord(r.t, r.x_t[:GIF_MAX_IMAGES], r.x0_pred[:GIF_MAX_IMAGES]) for r in result.trajectory]
        gif, final = trajectory_gif(shown), image_grid(result.samples)
    metric, note = _metric(result.samples, loaded)
    bar.empty()
    return SampleView(str(loaded.ckpt.path), settings, result, gif, png_bytes(final), lim, metric, note)


# ----------------------------------------------------------------------------------------------------------------
# Showing a result


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


# ----------------------------------------------------------------------------------------------------------------
# DDPM vs DDIM


@dataclass(frozen=True)
class CompareView:
    checkpoint: str
    cells: list[CellResult]
    n: int
    seed: int


def compare_picker(loaded: Loaded) -> list[SamplerSetting]:
    options = [s.label for s in standard_settings(loaded.T)]
    chosen = st.multiselect("Samplers to compare", options, key="compare_settings",
                            help=f"DDPM-{loaded.T} takes all T steps: minutes on a CPU for many samples")  # fmt: skip
    return [SamplerSetting.from_label(label) for label in chosen]


def run_compare(loaded: Loaded, settings: dict, chosen: list[SamplerSetting]) -> CompareView:
    bar = st.progress(0.0, text="Sampling…")
    cells = compare_samplers(
        loaded.ckpt.model, loaded.diffusion, loaded.ckpt.sample_shape, chosen, settings["n"], settings["seed"],
        metric=(lambda s: _metric(s, loaded)[0]), eta=settings["eta"], variance=settings["variance"],
        clip_x0=settings["clip_x0"], progress=_progress_callback(bar),
    )  # fmt: skip
    bar.empty()
    return CompareView(str(loaded.ckpt.path), cells, settings["n"], settings["seed"])


def show_compare(view: CompareView) -> None:
    """One cell per setting: its final samples, step count, wall time and metric; points share fixed axes."""
    first = view.cells[0].x_T
    lim = axis_limit([StepRecord(0, first, first)]) if first.dim() == 2 else 1.0
    per_row = 3
    for start in range(0, len(view.cells), per_row):
        cols = st.columns(per_row)
        for col, cell in zip(cols, view.cells[start : start + per_row], strict=False):
            col.image(picture(cell.samples, lim), output_format="PNG", caption=cell.setting.label)
            col.markdown(f"**{cell.setting.label}** — {cell.steps:,} steps in **{cell.wall_time:.2f} s**")
            if cell.metric:
                col.caption(short_metric(cell.metric))
