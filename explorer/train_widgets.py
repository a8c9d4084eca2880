"""Widgets, figures and the live panel of the Train page (pages/train.py).

The form's widget keys are TrainConfig's field names: a recipe fills them through st.session_state, and the config
is built from them, so the page launches exactly what `python -m ddpm_core.train` would with the same flags.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.colors import qualitative

from ddpm_core import run_history as rh
from ddpm_core.config import TrainConfig
from ddpm_core.data import POINT_DATASETS
from ddpm_core.devices import cpu_native_bf16, mps_available
from ddpm_core.images import OnDisk, datasets_on_disk
from ddpm_core.models import PRESETS
from explorer import links, run_controls
from explorer.classroom import ROOT
from explorer.objective_widgets import OBJECTIVE, fine_tune_error, objective_widgets
from explorer.owners import Requester
from explorer.train_queue import queued_panel, registry
from explorer.ui import device_description
from explorer.widgets import schedule_picker

REFRESH_S = 1.5  # the live panel rereads the run folder this often while the run trains
LIVE = ("queued", "starting", "running")  # states whose panel polls the run folder
WATCHED = "_watched_run"  # session key: the folder the panel showed last
COLORS = qualitative.Plotly
FORM = ("dataset", "folder", "classes", "image_size", "model", "base_channels", "steps", "batch_size",
        "lr", "warmup", "ema_decay", "seed", "device", "log_every", "preview_every", "preview_n", "preview_steps",
        "checkpoint_every", "evaluate_n", "cpu_bf16", *OBJECTIVE)  # fmt: skip
TORCHVISION = ("mnist", "fashion_mnist", "cifar10")


@st.cache_data(ttl=10, show_spinner=False)
def on_disk(data_root: str) -> dict[str, OnDisk]:
    root = Path(data_root).expanduser()
    return {d.name: d for d in datasets_on_disk(root if root.is_absolute() else ROOT / root)}  # the trainer's cwd


def data_root() -> Path:
    """The server's data root (the classroom's): the only place the page reads data sets and image folders from."""
    return links.classroom().data_root


def folder_inside(root: Path, text: str) -> str:
    """dataset=folder: the image folder named by text, relative to the data root, as an absolute path ("" for no
    text); ValueError for an absolute path or one that leads out of the data root (`..`, a link)."""
    text = text.strip()
    if not text:
        return ""
    if Path(text).expanduser().is_absolute():
        raise ValueError(f"give the image folder relative to the data root {root}, not as an absolute path")
    folder = (root / text).resolve()
    if not folder.is_relative_to(root.resolve()):
        raise ValueError(f"the image folder {text!r} leads out of the data root {root}: pick a folder inside it")
    return str(folder)


# ----------------------------------------------------------------------------------------------------------------
# The form


def _dataset_widgets(fresh: dict) -> bool:
    """Data set, image folder, class subset; False after an st.info when the data set is not on disk."""
    root = data_root()
    found = on_disk(str(root))
    chosen = st.session_state.get("dataset")
    shown = [n for n in TORCHVISION if found[n].present or n == chosen]  # MNIST & co. only when on disk
    options = ["digits", *POINT_DATASETS, *shown, "folder"]
    if chosen not in options:
        st.session_state["dataset"] = "digits"
    default = fresh["dataset"] if fresh["dataset"] in options else "digits"
    name = links.selectbox("Data set", options, key="dataset", default=default,
                           help=f"Read from the server's data root, {root}")  # fmt: skip
    st.caption(_dataset_label(name, found))
    if name == "folder":
        links.text("Image folder", key="folder", default=fresh["folder"], placeholder="my-images",
                   help=f"Images, or one subfolder of images per class, inside the data root {root}")  # fmt: skip
    if name not in POINT_DATASETS:
        links.text("Classes", key="classes", default=fresh["classes"], placeholder="all",
                   help="Keep a subset: e.g. 3,5 or ship,truck")  # fmt: skip
    if name in found and not found[name].present:
        st.info(found[name].how_to_get())
        return False
    return True


def _dataset_label(name: str, found: dict[str, OnDisk]) -> str:
    if name in found:
        return found[name].title + ("" if found[name].present else " (not on disk)")
    return {"digits": "8×8 digits, embedded", "folder": "a folder of images"}.get(name, name.replace("_", " "))


def _model_widgets(points: bool, fresh: dict) -> None:
    options = ["auto", *(n for n, p in PRESETS.items() if (p.get("kind") == "mlp") == points)]
    if st.session_state.get("model") not in options:
        st.session_state["model"] = "auto"
    auto = "auto (tiny UNet, or MLP for points)"
    default = fresh["model"] if fresh["model"] in options else "auto"
    preset = links.selectbox("Model", options, key="model", default=default,
                             format_func=lambda n: auto if n == "auto" else n)  # fmt: skip
    p = PRESETS[preset if preset != "auto" else ("mlp" if points else "tiny")]
    links.number("Width (base channels)", key="base_channels", default=fresh["base_channels"], step=8,
                 help=f"0: the preset's, {p['base_channels']}. UNet widths are multiples of 8")  # fmt: skip
    devices = ["auto", "cpu", "cuda", *(["mps"] if mps_available() else [])]
    links.selectbox("Device", devices, key="device", default=fresh["device"] if fresh["device"] in devices else "auto")
    native = "this CPU has it" if cpu_native_bf16() else "this CPU lacks it: float32 here"
    links.flag("bf16 on a CPU", key="cpu_bf16", default=fresh["cpu_bf16"],
               help=f"bf16 autocast where the CPU multiplies bf16 natively (AVX-512 BF16, AMX; {native}); a GPU "
               "uses bf16 anyway")  # fmt: skip
    st.caption(f"Found: {device_description()}")


OPTIMISER = (  # key, label, step, format, help
    ("steps", "Steps", 100, None, "Optimiser steps"),
    ("batch_size", "Batch size", 16, None, None),
    ("lr", "Learning rate", 1e-4, "%g", "AdamW, after the warm-up"),
    ("warmup", "Warm-up steps", 50, None, "Linear lr ramp from 0"),
    ("ema_decay", "EMA decay", 0.001, "%g", "θ_ema ← d·θ_ema + (1 − d)·θ"),
    ("seed", "Seed", 1, None, "Initial weights, data order and noise"),
)
MORE = (  # key, label, step, help
    ("image_size", "Image size", 4, "0: the data set's own; 32 pads MNIST"),
    ("log_every", "Log every", 10, "Steps between metrics lines"),
    ("checkpoint_every", "Checkpoint every", 100, "0: only at the end"),
    ("preview_every", "Preview every", 100, "Steps between previews"),
    ("preview_n", "Preview samples", 16, "Images in a grid, or 2D points"),
    ("preview_steps", "Preview DDIM steps", 5, None),
)


def config_form(fresh: dict) -> TrainConfig | None:
    """The settings of a new run; None after an st.error (or st.info) that says what is wrong."""
    data, model, optim = st.columns(3)
    with data:
        ready = _dataset_widgets(fresh)
    with model:
        _model_widgets(st.session_state["dataset"] in POINT_DATASETS, fresh)
    with optim:
        for key, label, step, fmt, help in OPTIMISER:
            links.number(label, key=key, default=fresh[key], step=step, help=help, **({"format": fmt} if fmt else {}))
    with st.container(border=True):
        schedule = schedule_picker(default_T=fresh["T"])
    with st.expander("Objective, classes and fine-tuning: ε, x₀ or v; min-SNR-γ; guidance; a starting checkpoint"):
        fine_tune_error()
        objective_widgets(fresh)
    with st.expander("More settings: image size, logging, previews, checkpoints, evaluation"):
        cells = st.columns(3) + st.columns(3) + st.columns(3)
        for cell, (key, label, step, help) in zip(cells, MORE, strict=False):
            links.number(label, key=key, default=fresh[key], step=step, help=help, where=cell)
        links.number("Evaluate samples", key="evaluate_n", default=fresh["evaluate_n"], step=100, min_value=-1,
                     where=cells[6], help="Samples of the final EMA weights scored for the history's metric column: "
                     "-1: 1000 where that takes seconds (digits, 2D, a GPU), 0: off")  # fmt: skip
    if schedule is None or not ready:
        return None
    values = {k: st.session_state[k] for k in FORM}
    values["classes"] = [c.strip() for c in str(values["classes"]).split(",") if c.strip()]
    values["data_root"] = str(data_root())
    try:
        values["folder"] = folder_inside(data_root(), str(values["folder"])) if values["dataset"] == "folder" else ""
    except ValueError as e:
        st.error(f"Image folder: {e}")
        return None
    sched = {"schedule": schedule.name, "T": schedule.T, "schedule_params": schedule.params,
             "rescale_zero_terminal_snr": schedule.rescale_zero_terminal_snr}  # fmt: skip
    try:
        return TrainConfig(**values, **sched)
    except ValueError as e:
        st.error(f"These settings cannot train: {e}")
        return None


# ----------------------------------------------------------------------------------------------------------------
# Figures


def loss_figure(curves: list[tuple[str, list[int], list[float]]], smoothing: float, title: str) -> go.Figure:
    """Each run's loss per log interval (faint) and its EMA-smoothed curve (bold), on a log axis."""
    fig = go.Figure()
    for i, (name, steps, losses) in enumerate(curves):
        color = COLORS[i % len(COLORS)]
        fig.add_scatter(x=steps, y=losses, mode="lines", name=f"{name} (raw)", legendgroup=name, opacity=0.35,
                        line={"color": color, "width": 1})  # fmt: skip
        fig.add_scatter(x=steps, y=rh.ema_smooth(losses, smoothing), mode="lines", name=f"{name} (smoothed)",
                        legendgroup=name, line={"color": color, "width": 2.5})  # fmt: skip
    fig.update_layout(title=title, height=340, margin={"l": 10, "r": 10, "t": 40, "b": 10}, xaxis_title="step",
                      yaxis={"type": "log", "title": "loss"}, hovermode="x unified",
                      legend={"orientation": "h", "yanchor": "top", "y": -0.25, "x": 0})  # fmt: skip
    return fig


def bucket_figure(buckets: list[float | None], T: int) -> go.Figure:
    fig = go.Figure(go.Bar(x=rh.bucket_labels(T, len(buckets)), y=buckets, marker_color=COLORS[1]))
    fig.update_layout(title="Loss per range of t (the last log intervals)", height=340, xaxis_title="t",
                      yaxis_title="loss", margin={"l": 10, "r": 10, "t": 40, "b": 10})  # fmt: skip
    return fig


def previews(run_dir: Path, kinds: tuple[str, ...] = ("raw", "ema")) -> None:
    found = rh.latest_previews(run_dir)
    if found is None:
        st.caption("No preview grid yet: the trainer samples one every “preview every” steps and at the end.")
        return
    label = {"raw": "raw weights", "ema": "EMA weights"}
    for col, kind in zip(st.columns(len(kinds)), kinds, strict=True):
        if (path := getattr(found, kind)) is None:
            continue
        try:  # the bytes, not the path: a grid deleted since the listing is an OSError here, not Streamlit's error
            col.image(path.read_bytes(), caption=f"{run_dir.name}: {label[kind]}, step {found.step:,}", width=320)
        except OSError as e:  # not an image (PIL's UnidentifiedImageError), or gone
            col.caption(f"{path.name} cannot be shown: {e}")


# ----------------------------------------------------------------------------------------------------------------
# The history table and the live panel of one run


def history_table(root: Path, live: bool) -> None:
    """One row per run folder; refreshed every 2 × REFRESH_S seconds while a run trains."""
    st.fragment(run_every=2 * REFRESH_S if live else None)(_history_table)(root)


def _history_table(root: Path) -> None:
    table = pd.DataFrame([{**r.table_row(), "status": state_of(r)} for r in rh.history(root)])
    st.dataframe(table, hide_index=True, column_config={"final loss": st.column_config.NumberColumn(format="%.4f")})


def _job(run_dir: Path):
    """The registry's job for the run, or None. Asking also records the end of a process of ours that died without
    a status, which writes into the run folder: once that folder is deleted, there is no job left to show."""
    try:
        return registry().job(run_dir)
    except OSError:
        return None


def _our_process_alive(run_dir: Path) -> bool:
    job = _job(run_dir)
    return job is not None and job.alive


def state_of(row: rh.RunRow) -> str:
    """The row's state, or "starting" while a process of ours runs for it but has not begun training (loading torch
    and the data, or resuming): its status.json is missing, still says queued, or is still the previous process's."""
    job = _job(row.path)
    if job is None or not job.alive:
        return row.state
    status = rh.read_status(row.path)
    if status.get("state") == "queued" and status.get("job"):
        return "queued"  # waiting in the cluster's queue
    return row.state if job.backend.owns(job.process, status) and status.get("state") != "queued" else "starting"


def run_panel(run_dir: Path, smoothing: float, who: Requester) -> None:
    """The run's state, progress, loss curves and previews; while its process runs, a fragment rereads its folder
    every REFRESH_S seconds."""
    before = st.session_state.get(WATCHED)  # the run watched last time: the picker drops a deleted one silently
    if before and before != str(run_dir) and not Path(before).is_dir():
        st.info(f"{Path(before).name}: this run's folder was deleted; showing {run_dir.name} instead.")
    st.session_state[WATCHED] = str(run_dir)
    state = state_of(rh.history_row(run_dir))
    live = state in LIVE or _our_process_alive(run_dir)
    st.fragment(run_every=REFRESH_S if live else None)(_panel)(run_dir, smoothing, who, state if live else None)


def _panel(run_dir: Path, smoothing: float, who: Requester, watched: str | None) -> None:
    """watched: the state the last full run saw while the run was live; None when it was not."""
    if not run_dir.is_dir():
        st.info(f"{run_dir.name}: this run's folder was deleted.")
        if watched is not None:
            st.rerun()  # redraw the picker and the history without it, and stop polling
        return
    row, status, records = rh.history_row(run_dir), rh.read_status(run_dir), rh.read_records(run_dir)
    state, busy = state_of(row), _our_process_alive(run_dir)
    if watched is not None and (state != watched or not (busy or state in ("running", "queued"))):
        st.rerun()  # started, ended or failed: redraw the whole page (picker, history, resume); stop polling at the end
    about = " · ".join(str(status[k]) for k in ("model", "device") if isinstance(status.get(k), str))
    st.markdown(f"**{row.name}** — {state}" + (f" · {about}" if about and state != "starting" else ""))
    if state == "queued":
        queued_panel(run_dir)
        run_controls.cancel_control(run_dir, who)
    elif state == "starting":
        st.info("Starting: the trainer is loading torch and the data; it starts logging in a few seconds.")
    elif state == "running":
        _progress(status, records, run_dir, who)
    if metric := rh.headline_metric(run_dir):
        nll = rh.bound_summary(run_dir)
        bound = f" Variational bound: {nll} (σ_t² = β_t; the Bound page breaks it down)." if nll else ""
        st.success(f"Quality of the final EMA weights: {metric} ({rh.evaluation_summary(run_dir)}).{bound}")
    elif state in ("failed", "interrupted", "unknown"):
        _failure(row)
    elif isinstance(skipped := status.get("evaluation"), str) and skipped.startswith("skipped"):
        st.info(f"No quality metric: its evaluation was {skipped} (a stop is a checkpoint and an exit). Resume it to "
                f"the end, or score it with `python -m ddpm_core.evaluate --checkpoint {run_dir}`.")  # fmt: skip
    if state in run_controls.ENDED and not busy:  # once exited
        run_controls.ended_controls(row, who, registry().training)
    if records:
        left, right = st.columns(2)
        curve = [(row.name, *rh.loss_curve(records))]
        left.plotly_chart(loss_figure(curve, smoothing, "Training loss"), key="live_loss")
        if (buckets := rh.bucket_losses(records)) is not None:
            T = rh.read_config(run_dir).get("T")
            right.plotly_chart(bucket_figure(buckets, T if isinstance(T, int) else 1000), key="live_buckets")
            right.caption("ε is hardest to predict at small t, where x_t is nearly clean and the noise is faint.")
    previews(run_dir)


def _progress(status: dict, records: list[dict], run_dir: Path, who: Requester) -> None:
    p = rh.progress(status, records)
    threads = [r["cpu_threads"] for r in records if isinstance(r.get("cpu_threads"), int)]
    shared = threads and threads[-1] < max(threads)  # a core left to the app or to a busy program (ddpm_core.sharing)
    note = f" ({threads[-1]} of {max(threads)} CPU threads: a core is busy elsewhere)" if shared else ""
    speed = f" · {p.images_per_s:,.0f} images/s{note}" if p.images_per_s else ""
    st.progress(p.fraction, text=f"step {p.step:,} / {p.total:,} · ETA {rh.format_duration(p.eta_s)}{speed}")
    if status.get("phase") == "evaluating":
        st.info("Training is over: scoring samples of the EMA weights for the history's metric column (Stop skips "
                "it; the weights are saved)…")  # fmt: skip
    run_controls.stop_control(run_dir, who)


def _failure(row: rh.RunRow) -> None:
    if row.state == "unknown" and rh.status_being_written(row.path):
        st.info(f"{row.name}: its status.json is being rewritten right now; the next refresh shows its state.")
        return
    st.error(f"{row.name} {row.state}: {row.error or 'no status.json that says why'}")
    if tail := rh.log_tail(row.path):
        with st.expander(f"The end of {rh.LOG}"):
            st.code(tail, language=None)
