"""Widgets and cached calls of the Sample page (pages/sample.py): the sampler settings within the classroom's caps,
one sampling run kept in session state, and the DDPM-vs-DDIM grid. The checkpoint (picked and loaded by
explorer/checkpoints.py) is shared read-only by every session: sampling runs under torch.inference_mode and never
changes it. Progress and Cancel: explorer/sampling_progress.py; results are drawn by explorer/sample_views.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import streamlit as st
import torch

from ddpm_core.compare import CellResult, SamplerSetting, cheap_settings, compare_samplers, standard_settings
from ddpm_core.data import DatasetError
from ddpm_core.evaluate import quality_metrics
from ddpm_core.gif import axis_limit, trajectory_gif
from ddpm_core.pictures import image_grid, png_bytes, points_frame
from ddpm_core.sample import SampleResult, SamplingConfig, StepRecord, sample
from ddpm_core.sampling_cost import CallTime, call_time, expected_seconds, network_calls
from ddpm_core.threads import set_threads, tuning_enabled
from explorer import gate, links
from explorer.checkpoints import Loaded
from explorer.cpu_share import share_cpu
from explorer.sampling_progress import progress_callback

MAX_N = {"images": 256, "points": 2000}  # per request, before the classroom's cap
DEFAULT_N = {"images": 64, "points": 1000}
# the sampler a page opens on: DDIM-50 for images (a first Generate in seconds on a laptop CPU, where DDPM's 1,000
# steps take minutes); DDPM for 2D points, whose T = 200 steps of a small MLP take a second
DEFAULT_SAMPLER = {"images": "ddim", "points": "ddpm"}
POINTS_PER_SAMPLE = 8  # the classroom's max_n counts images; a 2D point is this much cheaper
GIF_MAX_IMAGES = 64  # a GIF of 256 noisy 8×8 grids is ~15 MB; the first 64 show the same story
GIF_MAX_PIXELS = 16 * 28 * 28  # image pixels per frame: 16 MNIST digits (64 of them made a 12 MB GIF for DDIM-50)
STEP_LABEL = {"ddpm": "DDPM (ancestral, Ho et al. 2020)", "ddim": "DDIM (Song et al. 2021)"}
VARIANCE_LABEL = {"posterior": "β̃_t (the posterior's)", "beta": "β_t (the course's)"}  # the first is the default


# ----------------------------------------------------------------------------------------------------------------
# Sampler settings: widget keys are SamplingConfig's field names


@dataclass(frozen=True)
class Request:
    """What Generate (and the grids below it) sample: how (the SamplingConfig), how many, from which random seed."""

    config: SamplingConfig
    n: int
    seed: int


def caps(loaded: Loaded) -> tuple[int, int]:
    """(most samples, most sampler steps) per request for this checkpoint: the classroom's [sampling] caps (2D points:
    POINTS_PER_SAMPLE × max_n), within the page's own caps and T."""
    room, kind = links.classroom(), "points" if loaded.points else "images"
    return min(MAX_N[kind], room.max_n * per_sample(loaded)), min(loaded.T, room.max_steps)


def _compare_defaults(loaded: Loaded, max_steps: int) -> list[str]:
    return [s.label for s in cheap_settings(loaded.T) if s.steps <= max_steps]


def _init_state(loaded: Loaded, max_n: int, max_steps: int) -> dict:
    """The defaults of the widgets that depend on the checkpoint; when its kind, T or the caps differ from the last
    run's, those widgets are reset (the cap on N, clipping, the step count, the grid's cells)."""
    state, kind = st.session_state, "points" if loaded.points else "images"
    defaults = {"n": min(DEFAULT_N[kind], max_n), "clip_x0": not loaded.points, "steps": min(50, max_steps),
                "sampler": DEFAULT_SAMPLER[kind]}  # fmt: skip
    before, state["sample.for"] = state.get("sample.for"), (kind, loaded.T, max_n, max_steps)
    if before is not None and before != state["sample.for"]:  # not on a first run: a link's values stay
        steps = state.get("steps", defaults["steps"])
        state.update(n=defaults["n"], clip_x0=defaults["clip_x0"], steps=min(int(steps), max_steps),
                     compare_settings=_compare_defaults(loaded, max_steps))  # fmt: skip
        if before[0] != kind:
            state["sampler"] = defaults["sampler"]
    state.setdefault("compare_settings", _compare_defaults(loaded, max_steps))
    return defaults


def sampler_request(loaded: Loaded) -> Request:
    """The sampler's widgets, bound to the page's link → the Request they set (a class and guidance scale are added
    by explorer.guidance_widgets.with_class)."""
    max_n, max_steps = caps(loaded)
    defaults = _init_state(loaded, max_n, max_steps)
    links.in_range("steps", 1, max_steps, defaults["steps"])  # the Train page's "steps" are optimiser steps
    cols = st.columns(4)
    sampler = links.radio("Sampler", ["ddpm", "ddim"], key="sampler", default=defaults["sampler"],
                          format_func=str.upper, horizontal=True, where=cols[0],
                          help="DDIM (50 steps) by default for images: the same model, seconds instead of minutes "
                          "on a CPU; DDPM takes all T steps")  # fmt: skip
    settings = {"sampler": sampler, "steps": loaded.T}
    if sampler == "ddpm":
        settings["variance"] = links.radio("Variance σ_t²", list(VARIANCE_LABEL), key="variance",
                                           format_func=VARIANCE_LABEL.get, where=cols[1])  # fmt: skip
        cols[2].markdown(f"Steps: **all T = {loaded.T:,}**")
    else:
        settings["eta"] = links.slider("η", key="eta", default=0.0, min_value=0.0, max_value=1.0, step=0.1,
                                       where=cols[1], help="0: deterministic; 1: DDPM-like")  # fmt: skip
        settings["steps"] = int(links.number("Steps", key="steps", default=defaults["steps"], min_value=1,
                                             max_value=max_steps, step=1, where=cols[2],
                                             help=f"Strided (trailing) steps from T down to 1; at most {max_steps:,} "
                                             "on this server"))  # fmt: skip
    settings["clip_x0"] = links.flag("Clip x̂₀ to [-1, 1]", key="clip_x0", default=defaults["clip_x0"], where=cols[3],
                                     help="On for images (the data lie in [-1, 1]), off for 2D points")  # fmt: skip
    left, right = st.columns(2)
    n = int(links.number(f"N samples (≤ {max_n:,})", key="n", default=defaults["n"], min_value=1, max_value=max_n,
                         step=1, where=left))  # fmt: skip
    seed = int(links.number("Seed", key="seed", default=0, min_value=0, max_value=2**31 - 1, step=1, where=right,
                            help="Draws x_T and z"))  # fmt: skip
    return Request(SamplingConfig(**settings), n, seed)


def refusal(loaded: Loaded, request: Request) -> str:
    """Why the server will not run this request ("" when it will): the gate's answer (explorer.gate), over the
    classroom's caps. The widgets keep within the caps; this also holds for a request that did not come through
    them."""
    room, T = links.classroom(), loaded.T
    if request.config.sampler == "ddpm" and room.max_steps < T:
        return (
            f"DDPM takes all T = {T:,} steps, more than this server allows per request ({room.max_steps:,}): "
            f"pick DDIM, which samples from the same model in as few as 10–{room.max_steps:,} steps."
        )
    return gate_decision(loaded, request.n, [request.config.steps], "Generate", clamp=False).refusal


def per_sample(loaded: Loaded) -> int:
    """How many of this checkpoint's samples count as one against the classroom's max_n."""
    return POINTS_PER_SAMPLE if loaded.points else 1


def gate_decision(loaded: Loaded, n: int, steps: list[int], what: str, clamp: bool = True) -> gate.Decision:
    """The gate's answer to a request of n samples in each of len(steps) cells (explorer.gate.sampling)."""
    return gate.sampling(links.classroom(), gate.Sampling(n, tuple(steps), clamp, what), per_sample(loaded))


def expected_time(loaded: Loaded, request: Request) -> str:
    """The line "Expected time: about 6.9 s (50 network calls × 138 ms …)": the request's network calls times one call
    at its batch size, from a call measured on this machine at 1 and at the default N, with the threads this server
    samples with now."""
    calls = network_calls(request.config, loaded.T)
    batch = request.n * calls.batch_factor
    kind = "points" if loaded.points else "images"
    per_call = _call_time(loaded, DEFAULT_N[kind], share_cpu(), str(loaded.ckpt.path))(batch)
    seconds = expected_seconds(calls, per_call)
    text = (f"Expected time: about **{_duration(seconds)}** ({calls.steps:,} network calls × {per_call * 1000:,.0f} "
            f"ms per call for a batch of {batch:,}, measured on this machine)")  # fmt: skip
    if request.config.sampler == "ddpm" and not loaded.points and loaded.T > 50:
        ddim = expected_seconds(network_calls(replace(request.config, sampler="ddim", steps=50), loaded.T), per_call)
        text += f". DDIM with 50 steps: about {_duration(ddim)}"
    return text


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


@st.cache_data(ttl=300, max_entries=32, show_spinner=False)
def _call_time(_loaded: Loaded, batch: int, threads: int, path: str) -> CallTime:
    """The call time of the checkpoint at path, at the faster of `threads` and one fewer (what the sampling's
    ThreadTuner will pick, unless tuning is off: on a laptop whose browser keeps a core busy, one thread can be
    several times faster), measured again after 5 minutes (the machine's load changes)."""
    shape, timed = tuple(_loaded.ckpt.sample_shape), []
    try:
        for n in sorted({threads, max(1, threads - 1) if tuning_enabled() else threads}, reverse=True):
            set_threads(n)
            timed.append(call_time(_loaded.net, shape, batch))
    finally:
        set_threads(threads)
    return min(timed, key=lambda c: c(batch))


# ----------------------------------------------------------------------------------------------------------------
# One sampling run, kept in session state


@dataclass(frozen=True)
class SampleView:
    checkpoint: str  # the path it was sampled from: a result from another checkpoint is not shown
    request: Request
    result: SampleResult
    gif: bytes
    png: bytes
    lim: float  # half-width of the fixed axes of point plots
    metric: dict | None
    metric_note: str  # why there is no metric, when there is none


def _metric(samples: torch.Tensor, loaded: Loaded) -> tuple[dict | None, str]:
    if len(samples) < 2:
        return None, "The quality metric needs N ≥ 2."
    try:  # real images from the server's data root, the one place the UI reads data sets from
        config = loaded.ckpt.config.replace(data_root=str(links.classroom().data_root))
        return quality_metrics(samples, config), ""
    except (DatasetError, ValueError) as e:
        return None, f"No quality metric: {e}"


def gif_images(shape: tuple[int, ...]) -> int:
    """How many of the samples (N, C, H, W) the trajectory GIF shows: at most GIF_MAX_IMAGES, and a square number
    within GIF_MAX_PIXELS per frame (64 digits of 8×8, 16 of 28×28), at least 4."""
    side = max(2, math.isqrt(GIF_MAX_PIXELS // (shape[-1] * shape[-2])))
    return min(shape[0], GIF_MAX_IMAGES, side * side)


def generate(loaded: Loaded, request: Request) -> SampleView:
    """Sample with a progress bar, then draw the GIF and the PNG and score the samples."""
    bar = st.progress(0.0, text="Sampling…")
    result = sample(loaded.net, loaded.diffusion, request.n, loaded.ckpt.sample_shape, request.config,
                    seed=request.seed, progress=progress_callback(bar))  # fmt: skip
    bar.progress(1.0, text="Drawing the GIF and scoring the samples…")
    if loaded.points:
        lim = axis_limit(result.trajectory)
        gif, final = trajectory_gif(result.trajectory, lim=lim), points_frame(result.samples, lim=lim)
    else:
        lim = 1.0
        k = gif_images(result.samples.shape)
        shown = [StepRecord(r.index, r.x_t[:k], r.x0_pred[:k]) for r in result.trajectory]
        gif, final = trajectory_gif(shown), image_grid(result.samples)
    metric, note = _metric(result.samples, loaded)
    if request.config.class_label is not None and metric is not None:
        note = ("The FD compares with all the classes: samples of one class are far from them by design. The "
                "classifier's histogram shows which class came out.")  # fmt: skip
    bar.empty()
    return SampleView(str(loaded.ckpt.path), request, result, gif, png_bytes(final), lim, metric, note)


# ----------------------------------------------------------------------------------------------------------------
# DDPM vs DDIM


@dataclass(frozen=True)
class CompareView:
    checkpoint: str
    cells: list[CellResult]
    n: int
    seed: int


def compare_picker(loaded: Loaded) -> list[SamplerSetting]:
    """The grid's cells: the standard settings within the classroom's cap on steps."""
    max_steps = caps(loaded)[1]
    options = [s.label for s in standard_settings(loaded.T) if s.steps <= max_steps]
    if st.session_state.get("compare_settings") and not set(st.session_state["compare_settings"]) <= set(options):
        st.session_state["compare_settings"] = [o for o in st.session_state["compare_settings"] if o in options]
    T = loaded.T
    over = "" if max_steps >= T else f"; DDPM-{T} is over this server's cap of {max_steps:,} steps"
    chosen = links.multiselect("Samplers to compare", options, key="compare_settings",
                               default=_compare_defaults(loaded, max_steps),
                               help=f"DDPM-{T} takes all T steps: minutes on a CPU for many samples{over}")  # fmt: skip
    return [SamplerSetting.from_label(label) for label in chosen]


def run_compare(loaded: Loaded, request: Request, chosen: list[SamplerSetting]) -> CompareView | None:
    """Sample every chosen setting from the same x_T, within the gate (None, with its message, when refused). The
    cells share the request's η, σ_t² and clipping, and sample unconditionally (the guidance grid shows classes)."""
    decision = gate_decision(loaded, request.n, [c.steps for c in chosen], "The comparison")
    if not gate.show(decision):
        return None
    shared = replace(request.config, class_label=None, guidance=1.0)
    bar = st.progress(0.0, text="Sampling…")
    cells = compare_samplers(loaded.net, loaded.diffusion, loaded.ckpt.sample_shape, chosen, decision.n, request.seed,
                             metric=(lambda s: _metric(s, loaded)[0]), config=shared,
                             progress=progress_callback(bar))  # fmt: skip
    bar.empty()
    return CompareView(str(loaded.ckpt.path), cells, decision.n, request.seed)
