"""The Train page's objective, classes and fine-tuning settings, and the before/after view of a fine-tuned run.

Widget keys are TrainConfig's field names (and the page link's parameters): prediction_type, loss_weighting,
min_snr_gamma, class_conditional, label_dropout, init_from.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from ddpm_core import equations, runs
from ddpm_core.diffusion import Diffusion
from ddpm_core.pictures import image_grid, png_bytes, points_frame
from ddpm_core.sample import SamplingConfig, sample
from explorer import links
from explorer.checkpoints import checkpoint_files

OBJECTIVE = ("prediction_type", "loss_weighting", "min_snr_gamma", "class_conditional", "label_dropout", "init_from")
TARGETS = {"eps": "ε (Ho et al.'s)", "x0": "x₀", "v": "v (Salimans & Ho)"}
COPIED = ("dataset", "classes", "image_size", "model", "base_channels", "prediction_type", "class_conditional")


def objective_widgets(fresh: dict) -> None:
    """What the network predicts, how t's are weighted, classes for guidance, and a checkpoint to fine-tune."""
    left, right = st.columns(2)
    with left:
        target = links.radio("Prediction target", list(TARGETS), key="prediction_type", horizontal=True,
                             default=fresh["prediction_type"], format_func=TARGETS.get,
                             help="What the network outputs; the samplers convert it to ε")  # fmt: skip
        st.latex(equations.latex(f"target_{target}"))
        weighting = links.radio("Loss weighting", ["none", "min_snr"], key="loss_weighting", horizontal=True,
                                default=fresh["loss_weighting"], format_func={"none": "uniform",
                                "min_snr": "min-SNR-γ (Hang et al. 2023)"}.get)  # fmt: skip
        if weighting == "min_snr":
            links.number("γ", key="min_snr_gamma", default=float(fresh["min_snr_gamma"]), min_value=0.1, step=0.5,
                         format="%g", help="Steps with SNR above γ count as if their SNR were γ")  # fmt: skip
            st.latex(equations.latex("min_snr"))
    with right:
        if links.flag("Class-conditional, for classifier-free guidance (Ho & Salimans 2022)", key="class_conditional",
                      default=fresh["class_conditional"], help="Needs a data set with classes"):  # fmt: skip
            links.number("Label dropout p_drop", key="label_dropout", default=float(fresh["label_dropout"]),
                         min_value=0.0, max_value=0.95, step=0.05, format="%g",
                         help="Share of labels replaced by the null label ∅, so one network learns both")  # fmt: skip
            st.latex(equations.latex("guidance"))
            st.latex(equations.latex("label_dropout"))
        files = {"": "none: train from scratch", **checkpoint_files(runs.default_runs_root())}
        if st.session_state.get("init_from") not in files:
            st.session_state.pop("init_from", None)
        links.selectbox("Fine-tune from", list(files), key="init_from", format_func=files.get, default="",
                        on_change=_copy_checkpoint_settings,
                        help="Start from this checkpoint's weights: picking it copies its data set, model, "
                        "schedule and target into the form; then e.g. keep one class (Classes above)")  # fmt: skip


def _copy_checkpoint_settings() -> None:
    """init_from changed: the form takes the checkpoint's settings, which the network must share with it."""
    path = st.session_state.get("init_from")
    if not path:
        return
    try:
        config = runs.load_checkpoint(path).config
    except runs.CheckpointError as e:
        st.session_state["fine_tune_error"] = str(e)
        return
    state = st.session_state
    for key in COPIED:
        value = getattr(config, key)
        state[key] = ",".join(value) if key == "classes" else value
    state.update({"schedule": config.schedule, "T": config.T,
                  "rescale_zero_terminal_snr": config.rescale_zero_terminal_snr})  # fmt: skip
    for param, value in config.schedule_params.items():
        state[f"{config.schedule}.{param}"] = float(value)


def fine_tune_error() -> None:
    if message := st.session_state.pop("fine_tune_error", ""):
        st.error(f"Cannot fine-tune from that checkpoint: {message}")


# ----------------------------------------------------------------------------------------------------------------
# Before and after fine-tuning


@st.cache_data(max_entries=8, show_spinner="Sampling before and after…")
def _before_after(start: str, run_ema: str, mtime: float, n: int, seed: int) -> tuple[bytes, bytes]:
    pictures = []
    for path in (start, run_ema):
        ckpt = runs.load_checkpoint(path)
        config = SamplingConfig(sampler="ddim", steps=50, clip_x0=not ckpt.config.is_points)
        x = sample(ckpt.model, Diffusion(ckpt.config.make_schedule()), n, ckpt.sample_shape, config, seed=seed,
                   record_every=10**9).samples  # fmt: skip
        pictures.append(png_bytes(points_frame(x) if ckpt.config.is_points else image_grid(x)))
    return pictures[0], pictures[1]


def before_after(run_dir: Path) -> None:
    """For a finished fine-tuning run: samples of the starting checkpoint and of the run, from the same x_T."""
    config = runs.read_json(run_dir / runs.CONFIG) or {}
    start, ema = config.get("init_from"), run_dir / runs.EMA
    if not isinstance(start, str) or not start or not ema.is_file():
        return
    with st.expander("Before and after fine-tuning: the same x_T, DDIM-50", expanded=True):
        classes = ",".join(config.get("classes") or []) or "all classes"
        st.caption(f"Left: {start}. Right: this run's EMA weights, fine-tuned on {classes}.")
        try:
            before, after = _before_after(start, str(ema), ema.stat().st_mtime, 36, 0)
        except (runs.CheckpointError, OSError) as e:
            st.error(f"Cannot sample both: {e}")
            return
        left, right = st.columns(2)
        left.image(before, caption="before: the starting checkpoint")
        right.image(after, caption="after: fine-tuned")
