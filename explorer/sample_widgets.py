"""Widgets and cached calls of the Sample page (pages/sample.py): the checkpoint picker, the sampler settings within
the classroom's caps, one sampling run kept in session state (and cancellable), and the DDPM-vs-DDIM grid. Results
are drawn by explorer/sample_views.py.

A model is loaded once per checkpoint file (keyed on its path, mtime and size, so a run that writes a new checkpoint
is reloaded) and shared read-only by every session: sampling runs under torch.inference_mode and never changes it.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path

import streamlit as st
import torch

from ddpm_core import runs
from ddpm_core.compare import CellResult, SamplerSetting, cheap_settings, compare_samplers, standard_settings
from ddpm_core.data import DatasetError
from ddpm_core.devices import BF16Network, for_sampling, resolve_device
from ddpm_core.diffusion import Diffusion
from ddpm_core.evaluate import quality_metrics
from ddpm_core.forward import png_bytes
from ddpm_core.gif import StepRecord, axis_limit, image_grid, points_frame, trajectory_gif
from ddpm_core.models import describe_model
from ddpm_core.sample import SampleResult, sample
from explorer import gate, links
from explorer.cpu_share import share_cpu
from explorer.guidance_widgets import sample_arguments
from explorer.ui import ROOT

BUNDLED = ROOT / "assets" / "checkpoints"
FIRST_BUNDLED = ("mnist", "digits")  # the default checkpoint, then the 8×8 digits; the others by name
MAX_N = {"images": 256, "points": 2000}  # per request, before the classroom's cap
DEFAULT_N = {"images": 64, "points": 1000}
POINTS_PER_SAMPLE = 8  # the classroom's max_n counts images; a 2D point is this much cheaper
GIF_MAX_IMAGES = 64  # a GIF of 256 noisy 8×8 grids is ~15 MB; the first 64 show the same story
GIF_MAX_PIXELS = 16 * 28 * 28  # image pixels per frame: 16 MNIST digits (64 of them made a 12 MB GIF for DDIM-50)
STEP_LABEL = {"ddpm": "DDPM (ancestral, Ho et al. 2020)", "ddim": "DDIM (Song et al. 2021)"}
VARIANCE_LABEL = {"beta": "β_t (the course's)", "posterior": "β̃_t (the posterior's)"}  # also the link's value
RUNNING = "sample.running"  # session state: set while a sampling runs; left behind when a rerun interrupts it


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

    @property
    def net(self) -> torch.nn.Module:
        """The network to sample with: bf16 where the checkpoint trained so and this CPU has it (for_sampling)."""
        return for_sampling(self.ckpt.model, self.ckpt.config)


# ----------------------------------------------------------------------------------------------------------------
# Choosing a checkpoint


def checkpoint_files(runs_root: Path) -> dict[str, str]:
    """{path: label} of the bundled checkpoints ("mnist", the default, and "digits" first), then of each run's EMA
    weights (the run's name) and raw weights ("<name> (raw weights)"). A label is also the page link's ?checkpoint=
    value: short, and unique ("runs/<label>" for a run named like a bundled checkpoint)."""
    first = {name: i for i, name in enumerate(FIRST_BUNDLED)}
    bundled = sorted(BUNDLED.glob("*.safetensors"), key=lambda p: (first.get(p.stem, len(first)), p.stem))
    found = {str(p): p.stem for p in bundled}
    if runs_root.is_dir():
        for run in sorted(p for p in runs_root.iterdir() if p.is_dir()):
            for name, suffix in ((runs.EMA, ""), (runs.MODEL, " (raw weights)")):
                if (run / name).is_file():
                    label = run.name + suffix
                    found[str(run / name)] = f"runs/{label}" if label in found.values() else label
    return found


@st.cache_resource(max_entries=8, show_spinner="Loading the checkpoint…")
def _load(path: str, mtime_ns: int, size: int) -> Loaded:
    """One model per file version (mtime and size are only the cache key); raises CheckpointError."""
    ckpt = runs.load_checkpoint(path)
    device = resolve_device("auto")
    ckpt.model.to(device)
    return Loaded(ckpt, Diffusion(ckpt.config.make_schedule()).to(device), str(device))


def checkpoint_picker() -> Loaded | None:
    """A selectbox (key "checkpoint", bound to the link) over checkpoint_files, and the loaded checkpoint; None after
    an st.error that gives the CheckpointError's message."""
    root = runs.default_runs_root()
    files = checkpoint_files(root)
    if st.session_state.get("checkpoint") not in files:  # a run folder removed since the last run
        st.session_state.pop("checkpoint", None)
    path = links.selectbox("Checkpoint", list(files), key="checkpoint", format_func=files.get,
                           help=f"The bundled ones, then each run in {root}/: its EMA weights (the run's name) "
                           "and its raw weights")  # fmt: skip
    try:
        stat = Path(path).stat()
        return _load(path, stat.st_mtime_ns, stat.st_size)
    except (runs.CheckpointError, OSError) as e:
        st.error(f"Cannot use this checkpoint: {e}")
        return None


def config_table(loaded: Loaded) -> str:
    """The checkpoint's settings as a markdown table."""
    c, ckpt = loaded.ckpt.config, loaded.ckpt
    schedule = c.schedule + "".join(f", {k}={v:g}" for k, v in c.schedule_params.items())
    schedule += " + zero terminal SNR" if c.rescale_zero_terminal_snr else ""
    rows = {
        "data set": f"{c.dataset} — samples of shape {'×'.join(map(str, ckpt.sample_shape))}",
        "model": describe_model(ckpt.model_config, ckpt.model),
        "schedule": schedule,
        "T": f"{c.T:,}",
        "trained for": f"{ckpt.step:,} steps",
        "file": f"`{ckpt.path}`",
        "sampling on": loaded.device,
        "precision": "bf16 autocast (as it trained)" if isinstance(loaded.net, BF16Network) else "float32",
    }
    return "| setting | value |\n| --- | --- |\n" + "".join(f"| {k} | {v} |\n" for k, v in rows.items())


# ----------------------------------------------------------------------------------------------------------------
# Sampler settings: widget keys are sample()'s argument names


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
    defaults = {"n": min(DEFAULT_N[kind], max_n), "clip_x0": not loaded.points, "steps": min(50, max_steps)}
    before, state["sample.for"] = state.get("sample.for"), (kind, loaded.T, max_n, max_steps)
    if before is not None and before != state["sample.for"]:  # not on a first run: a link's values stay
        steps = state.get("steps", defaults["steps"])
        state.update(n=defaults["n"], clip_x0=defaults["clip_x0"], steps=min(int(steps), max_steps),
                     compare_settings=_compare_defaults(loaded, max_steps))  # fmt: skip
    state.setdefault("compare_settings", _compare_defaults(loaded, max_steps))
    return defaults


def sampler_settings(loaded: Loaded) -> dict:
    """The sampler's widgets, bound to the page's link → the keyword arguments of ddpm_core.sample (sampler, steps,
    eta, variance, clip_x0, seed) and n."""
    max_n, max_steps = caps(loaded)
    defaults = _init_state(loaded, max_n, max_steps)
    cols = st.columns(4)
    sampler = links.radio("Sampler", ["ddpm", "ddim"], key="sampler", format_func=str.upper, horizontal=True,
                          where=cols[0])  # fmt: skip
    settings = {"sampler": sampler, "steps": loaded.T, "eta": 0.0, "variance": "beta"}
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
    settings["n"] = int(links.number(f"N samples (≤ {max_n:,})", key="n", default=defaults["n"], min_value=1,
                                     max_value=max_n, step=1, where=left))  # fmt: skip
    settings["seed"] = int(links.number("Seed", key="seed", default=0, min_value=0, max_value=2**31 - 1, step=1,
                                        where=right, help="Draws x_T and z"))  # fmt: skip
    return settings


def refusal(loaded: Loaded, settings: dict) -> str:
    """Why the server will not run this request ("" when it will): the gate's answer (explorer.gate), over the
    classroom's caps. The widgets keep within the caps; this also holds for a request that did not come through
    them."""
    room, T = links.classroom(), loaded.T
    if settings["sampler"] == "ddpm" and room.max_steps < T:
        return (
            f"DDPM takes all T = {T:,} steps, more than this server allows per request ({room.max_steps:,}): "
            f"pick DDIM, which samples from the same model in as few as 10–{room.max_steps:,} steps."
        )
    return gate_decision(loaded, settings["n"], [settings["steps"]], "Generate", clamp=False).refusal


def per_sample(loaded: Loaded) -> int:
    """How many of this checkpoint's samples count as one against the classroom's max_n."""
    return POINTS_PER_SAMPLE if loaded.points else 1


def gate_decision(loaded: Loaded, n: int, steps: list[int], what: str, clamp: bool = True) -> gate.Decision:
    """The gate's answer to a request of n samples in each of len(steps) cells (explorer.gate.sampling)."""
    return gate.sampling(links.classroom(), gate.Sampling(n, tuple(steps), clamp, what), per_sample(loaded))


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


def progress_callback(bar):
    shown = [-1]

    def update(done: int, total: int) -> None:
        percent = 100 * done // total
        if percent != shown[0]:  # ≤ 101 messages to the browser, not one per step
            shown[0] = percent
            share_cpu(busy=True)  # one thread here while a run trains on the CPU, one fewer there
            bar.progress(percent / 100, text=f"Sampling: step {done:,} of {total:,}")

    return update


def _metric(samples: torch.Tensor, loaded: Loaded) -> tuple[dict | None, str]:
    if len(samples) < 2:
        return None, "The quality metric needs N ≥ 2."
    try:  # real images from the server's data root, the one place the UI reads data sets from
        config = loaded.ckpt.config.replace(data_root=str(links.classroom().data_root))
        return quality_metrics(samples, config), ""
    except (DatasetError, ValueError) as e:
        return None, f"No quality metric: {e}"


@contextlib.contextmanager
def cancellable(what: str):
    """Around a long sampling: a Cancel button above its progress bar, and a mark in session state. A click on Cancel
    (or on any widget) makes Streamlit rerun the script, which interrupts this run at its next progress update: the
    code after the yield never runs, the mark stays, and the next run reports it (was_cancelled). A result is only
    stored once its sampling has ended, so an interrupted one leaves nothing half-made behind."""
    st.session_state[RUNNING] = what
    button = st.empty()
    button.button("Cancel", key=f"cancel_{what}", icon=":material/cancel:", help="Stop sampling; nothing is kept")
    yield
    button.empty()
    del st.session_state[RUNNING]


def was_cancelled() -> str:
    """What the last run was sampling when it was interrupted ("generate" or "compare"); "" when it was not. Asks
    once: the mark is cleared."""
    return st.session_state.pop(RUNNING, "")


def gif_images(shape: tuple[int, ...]) -> int:
    """How many of the samples (N, C, H, W) the trajectory GIF shows: at most GIF_MAX_IMAGES, and a square number
    within GIF_MAX_PIXELS per frame (64 digits of 8×8, 16 of 28×28), at least 4."""
    side = max(2, math.isqrt(GIF_MAX_PIXELS // (shape[-1] * shape[-2])))
    return min(shape[0], GIF_MAX_IMAGES, side * side)


def generate(loaded: Loaded, settings: dict) -> SampleView:
    """Sample with a progress bar, then draw the GIF and the PNG and score the samples."""
    bar = st.progress(0.0, text="Sampling…")
    args = sample_arguments(settings)  # class_label → y: one label per sample
    result = sample(loaded.net, loaded.diffusion, settings["n"], loaded.ckpt.sample_shape,
                    progress=progress_callback(bar), **args)  # fmt: skip
    bar.progress(1.0, text="Drawing the GIF and scoring the samples…")
    if loaded.points:
        lim = axis_limit(result.trajectory)
        gif, final = trajectory_gif(result.trajectory, lim=lim), points_frame(result.samples, lim=lim)
    else:
        lim = 1.0
        k = gif_images(result.samples.shape)
        shown = [StepRecord(r.t, r.x_t[:k], r.x0_pred[:k]) for r in result.trajectory]
        gif, final = trajectory_gif(shown), image_grid(result.samples)
    metric, note = _metric(result.samples, loaded)
    if settings.get("class_label") is not None and metric is not None:
        note = ("The FD compares with all the classes: samples of one class are far from them by design. The "
                "classifier's histogram shows which class came out.")  # fmt: skip
    bar.empty()
    return SampleView(str(loaded.ckpt.path), settings, result, gif, png_bytes(final), lim, metric, note)


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


def run_compare(loaded: Loaded, settings: dict, chosen: list[SamplerSetting]) -> CompareView | None:
    """Sample every chosen setting from the same x_T, within the gate (None, with its message, when refused)."""
    decision = gate_decision(loaded, settings["n"], [c.steps for c in chosen], "The comparison")
    if not gate.show(decision):
        return None
    settings = {**settings, "n": decision.n}
    bar = st.progress(0.0, text="Sampling…")
    cells = compare_samplers(
        loaded.net, loaded.diffusion, loaded.ckpt.sample_shape, chosen, settings["n"], settings["seed"],
        metric=(lambda s: _metric(s, loaded)[0]), eta=settings["eta"], variance=settings["variance"],
        clip_x0=settings["clip_x0"], progress=progress_callback(bar),
    )  # fmt: skip
    bar.empty()
    return CompareView(str(loaded.ckpt.path), cells, settings["n"], settings["seed"])
