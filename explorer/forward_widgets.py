"""Widgets, cached calls and plots of the Forward process page (pages/forward.py).

Streamlit cannot hash tensors, so every cached call is keyed on plain values — the schedule's to_dict() as a tuple,
a tuple naming x_0 (`Source.id`), t, the seed — and receives x_0 itself as an `_x0` argument, which st.cache_data
leaves out of the key.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
import streamlit as st
import torch
from torch import Tensor

from ddpm_core import forward as fwd
from ddpm_core import pictures
from ddpm_core.data import DatasetError, load_dataset, make_toy
from ddpm_core.images import (
    RESOLUTIONS,
    SAMPLE_PHOTOS,
    BundledDigits,
    ImageError,
    bundled_mnist,
    datasets_on_disk,
    decode_image,
    sample_photo,
)
from ddpm_core.schedules import Schedule, make_schedule
from explorer import links

MNIST_FIRST = 10  # the digit the page opens on: a clear 3 (the first held-out test digit is a cursive 4)
SOURCES = {  # the first is the default
    "mnist": "MNIST digits (28×28, bundled)",
    "digits": "Digits (8×8, embedded)",
    "photo": "Sample photo (scikit-learn)",
    "dataset": "MNIST / Fashion-MNIST / CIFAR-10 (on disk)",
    "upload": "Upload an image (PNG or JPEG)",
}
CHANNELS = {3: "RGB", 1: "grayscale"}
DATASET_MAX_IMAGES = 1000  # images of a torchvision set kept in memory to pick from
N_POINTS = 2000
DEFAULT_T_FRACTION = 0.25  # t starts a quarter of the way: x_0 still visible through the noise

ScheduleKey = tuple[tuple[str, object], ...]


@dataclass(frozen=True)
class Source:
    id: tuple  # plain values that name x_0: the cache key
    x0: Tensor  # (C, H, W) in [-1, 1], or (N, 2) points


def schedule_key(schedule: Schedule) -> ScheduleKey:
    return tuple(schedule.to_dict().items())


def _schedule(key: ScheduleKey) -> Schedule:
    return make_schedule(**dict(key))


# ----------------------------------------------------------------------------------------------------------------
# x_0: where it comes from


@st.cache_resource(show_spinner=False)
def _digits() -> Tensor:
    return load_dataset("digits").x  # (1797, 1, 8, 8), shared read-only


@st.cache_resource(show_spinner=False)
def _mnist() -> BundledDigits:
    return bundled_mnist()  # (300, 1, 28, 28), shared read-only


@st.cache_resource(max_entries=3, show_spinner="Loading the data set…")
def _dataset(name: str, data_root: str) -> Tensor:
    return load_dataset(name, data_root=data_root, max_images=DATASET_MAX_IMAGES).x


@st.cache_data(max_entries=16, show_spinner=False)
def _photo(name: str, size: int, channels: int) -> Tensor:
    return sample_photo(name, size, channels)


@st.cache_data(max_entries=8, show_spinner=False)
def _upload(file_id: str, size: int, channels: int, _data: bytes) -> Tensor:
    return decode_image(_data, size, channels)


def _size_and_channels() -> tuple[int, int]:
    left, right = st.columns(2)
    size = links.selectbox("Resolution", RESOLUTIONS, "resolution", default=RESOLUTIONS[1], where=left,
                           format_func=lambda s: f"{s}×{s}", help="Centre-cropped to a square, resized")  # fmt: skip
    channels = links.radio("Colour", list(CHANNELS), "channels", format_func=CHANNELS.get, horizontal=True,
                           where=right)  # fmt: skip
    return size, channels


def _pick(n: int, keys: tuple[str, str, str], left, right, hint: str | None = None, default: int = 0) -> int:
    """A digit's index 0 … n-1, typed in (left) or drawn from a seed (right, when its toggle is on).
    keys: the toggle's, the seed's and the index's."""
    toggle, seed_key, index_key = keys
    if links.flag("Random digit", toggle, toggle=True, where=right):
        digit_seed = links.number("Digit seed", seed_key, default=0, min_value=0, max_value=2**31 - 1, where=right)
        index = int(np.random.default_rng(digit_seed).integers(n))
        left.markdown(f"Digit **#{index}**")
        return index
    if st.session_state.get(index_key, 0) > n - 1:  # a smaller pool (another class) keeps the index in range
        st.session_state[index_key] = n - 1
    return links.number(
        "Digit index", index_key, default=min(default, n - 1), min_value=0, max_value=n - 1, where=left, help=hint
    )


def _digit() -> Source:
    left, right = st.columns(2)
    index = _pick(len(_digits()), ("random_digit", "digit_seed", "digit_index"), left, right)
    return Source(("digits", index), _digits()[index])


def _mnist_digit() -> Source | None:
    try:
        digits = _mnist()
    except DatasetError as e:
        st.error(str(e))
        return None
    left, right = st.columns(2)
    wanted = links.selectbox("Class", [None, *range(10)], "mnist_class", where=left,
                             format_func=lambda c: "any" if c is None else str(c))  # fmt: skip
    pool = torch.arange(len(digits.y)) if wanted is None else (digits.y == wanted).nonzero().flatten()
    if len(pool) == 0:  # only a rebuilt bundle can lack a class
        st.error(f"The bundled MNIST digits hold no {wanted}.")
        return None
    among = f"among all {len(pool)} digits" if wanted is None else f"among the {len(pool)} {wanted}s"
    keys = ("random_mnist", "mnist_seed", "mnist_index")
    k = int(pool[_pick(len(pool), keys, left, right, among, default=MNIST_FIRST)])
    index, label = int(digits.test_index[k]), int(digits.y[k])
    st.caption(f"MNIST test image #{index:,}, a {label} (MNIST: LeCun, Cortes & Burges; CC BY-SA 3.0)")
    return Source(("mnist", index), digits.x[k])


def _dataset_image() -> Source | None:
    root = str(links.classroom().data_root)  # the server's, not typed in: the UI reads no other folder
    found = {d.name: d for d in datasets_on_disk(root)}
    name = links.selectbox(
        "Data set", list(found), "dataset",
        format_func=lambda n: found[n].title + ("" if found[n].present else " (not on disk)"),
        help=f"torchvision's files under the server's data root, {root}",
    )  # fmt: skip
    if not found[name].present:
        st.info(found[name].how_to_get())
        return None
    try:
        x = _dataset(name, root)
    except DatasetError as e:
        st.error(str(e))
        return None
    index = links.number("Image index", "image_index", default=0, min_value=0, max_value=len(x) - 1)
    return Source(("dataset", name, root, index), x[index])


def _uploaded() -> Source | None:
    file = st.file_uploader("PNG or JPEG, up to 10 MB", type=["png", "jpg", "jpeg"], key="upload")
    size, channels = _size_and_channels()
    if file is None:
        st.info("Upload a PNG or JPEG image to noise it.")
        return None
    try:
        return Source(("upload", file.file_id, size, channels), _upload(file.file_id, size, channels, file.getvalue()))
    except ImageError as e:
        st.error(f"Cannot use {file.name}: {e}")
        return None


def _default_source() -> str:
    """MNIST; but the 8×8 digits for a link or classroom file that names their widgets and no source (written when
    the 8×8 digits were the default, which a link leaves out)."""
    keys = ("digit_index", "digit_seed", "random_digit")
    room = links.classroom()
    if "source" in st.query_params or room.default("forward", "source") is not None:
        return next(iter(SOURCES))
    named = any(k in st.query_params for k in keys) or any(room.default("forward", k) is not None for k in keys)
    return "digits" if named else next(iter(SOURCES))


def image_source() -> Source | None:
    """The widgets that choose x_0, and x_0; None after an st.info or st.error that says why there is none."""
    kind = links.selectbox("Image", list(SOURCES), "source", format_func=SOURCES.get, default=_default_source())
    if kind == "mnist":
        return _mnist_digit()
    if kind == "digits":
        return _digit()
    if kind == "photo":
        name = links.selectbox("Photo", SAMPLE_PHOTOS, "photo")
        size, channels = _size_and_channels()
        return Source(("photo", name, size, channels), _photo(name, size, channels))
    if kind == "dataset":
        return _dataset_image()
    return _uploaded()


def toy_source(name: str) -> Source:
    return Source(("toy", name, N_POINTS), make_toy(name, N_POINTS, seed=0))


# ----------------------------------------------------------------------------------------------------------------
# t: a slider and a number input kept in sync


def _copy(src: str, dst: str) -> None:
    st.session_state[dst] = st.session_state[src]


def t_picker(T: int) -> int:
    """A slider over t = 0 … T-1 (key "t") and a number input (key "t_number") that follow each other."""
    state = st.session_state
    # A run that stops before these widgets (a bad schedule, no upload yet) may drop their state, or leave it while
    # the browser redraws them at their minimum: remember t, and write it back every run so both always show it.
    # The slider is the one bound to the URL (?t=…); on a first visit it starts from the link, else a quarter in.
    if (t := state.get("t", state.get("forward.last_t"))) is not None:
        state["t"] = min(int(t), T - 1)  # a shorter schedule keeps t in range
    left, right = st.columns([4, 1])
    t = links.slider("t (index)", "t", default=round(DEFAULT_T_FRACTION * (T - 1)), min_value=0, max_value=T - 1,
                     where=left, on_change=_copy, args=("t", "t_number"))  # fmt: skip
    state["t_number"] = int(t)  # the number input follows the slider (it is not drawn yet in this run)
    right.number_input("t", 0, T - 1, step=1, key="t_number", on_change=_copy, args=("t_number", "t"))
    state["forward.last_t"] = int(t)
    return int(t)


# ----------------------------------------------------------------------------------------------------------------
# Cached computations: plain keys, x_0 passed unhashed


# Pictures leave the cache as PNG bytes: st.image passes bytes through, but encodes an array anew on every rerun


@st.cache_data(max_entries=64, show_spinner=False)
def frame(sched: ScheduleKey, source: tuple, t: int, seed: int, _x0: Tensor) -> tuple[bytes, fwd.Frame]:
    return fwd.shown_frame(_schedule(sched), _x0, t, seed)


@st.cache_data(max_entries=16, show_spinner=False)
def strip_row(sched: ScheduleKey, source: tuple, seed: int, _x0: Tensor) -> tuple[bytes, list[int]]:
    schedule = _schedule(sched)
    ts = fwd.strip_timesteps(schedule.T)
    return pictures.png_bytes(pictures.strip_picture(fwd.strip(schedule, _x0, ts, seed), ts)), ts


@st.cache_data(max_entries=32, show_spinner="Running the chain…")
def chain(sched: ScheduleKey, source: tuple, t: int, seed: int, _x0: Tensor) -> tuple[fwd.ChainStats, bytes, bytes]:
    c = fwd.chain_vs_closed(_schedule(sched), _x0, t, seed)
    return (
        c,
        pictures.png_bytes(pictures.to_picture(c.x_chain, 160)),
        pictures.png_bytes(pictures.to_picture(c.x_closed, 160)),
    )


def show_chain(c: fwd.ChainStats, chain_png: bytes, closed_png: bytes, n_points: int | None) -> None:
    """One draw of the chain and of the closed form side by side, and their moments over all draws against the
    theory. n_points: the cloud's size for points, None for an image."""
    chain_col, closed_col, table_col = st.columns([1, 1, 2])
    chain_col.image(chain_png, caption=f"chain: q_step × {c.t + 1}")
    closed_col.image(closed_png, caption="closed form: q_sample")
    table_col.markdown(
        f"Over {c.draws} draws of each, per {'pixel' if n_points is None else 'point'}:\n\n"
        "| | mean − √ᾱ_t x₀ (RMS) | std (RMS) |\n| --- | --- | --- |\n"
        f"| chain | {c.chain.mean_error:.4f} | {c.chain.std:.4f} |\n"
        f"| closed form | {c.closed.mean_error:.4f} | {c.closed.std:.4f} |\n"
        f"| theory | ≈ {c.expected_mean_error:.4f} (sampling error) | {c.expected_std:.4f} = √(1 − ᾱ_t) |"
    )
    if c.downscaled:
        copy = "×".join(map(str, c.shape))
        what = f"a {copy} copy" if n_points is None else f"the first {c.shape[0]} of the {n_points} points"
        table_col.caption(f"Computed on {what}, so that {c.draws} chains of {c.t + 1} steps take under a second.")


# ----------------------------------------------------------------------------------------------------------------
# Plots


def histogram_figure(h: fwd.Histogram) -> go.Figure:
    """x_t's density as bars over N(0, 1)'s, on fixed axes so that moving t shows the change."""
    fig = go.Figure(go.Bar(x=h.centres, y=h.density, width=h.edges[1] - h.edges[0], name="x_t", opacity=0.7))
    fig.add_scatter(x=h.centres, y=h.normal, mode="lines", name="N(0, 1)", line={"color": "black"})
    fig.update_layout(height=260, margin={"l": 10, "r": 10, "t": 30, "b": 10}, bargap=0, title="values of x_t",
                      xaxis={"range": [-fwd.HIST_LIM, fwd.HIST_LIM]}, yaxis={"range": [0, 1.0], "title": "density"},
                      legend={"x": 0.99, "xanchor": "right", "y": 0.99})  # fmt: skip
    return fig


def cloud_figure(x0: Tensor, x_t: Tensor) -> go.Figure:
    """x_t (N, 2) over a faint x_0, on the fixed square [-4, 4]²."""
    lim = pictures.POINTS_LIM
    fig = go.Figure()
    fig.add_scatter(x=x0[:, 0].numpy(), y=x0[:, 1].numpy(), mode="markers", name="x_0",
                    marker={"size": 4, "color": "lightgray", "opacity": 0.5})  # fmt: skip
    fig.add_scatter(x=x_t[:, 0].numpy(), y=x_t[:, 1].numpy(), mode="markers", name="x_t", marker={"size": 4})
    fig.update_layout(height=480, margin={"l": 10, "r": 10, "t": 10, "b": 10},
                      xaxis={"range": [-lim, lim], "constrain": "domain"},
                      yaxis={"range": [-lim, lim], "scaleanchor": "x", "scaleratio": 1})  # fmt: skip
    return fig
