"""Widgets and cached calls of the Edit page (pages/edit.py): the input x_0 (one of the checkpoint's own training
samples, or an uploaded picture), the sampler's settings within the classroom's caps, and the method picker. The
four methods' panels (their widgets, their Run button and their results) are in explorer/edit_views.py; the methods
themselves in ddpm_core/edit.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st
from torch import Tensor

from ddpm_core.data import POINT_DATASETS, DatasetError, load_dataset, make_toy
from ddpm_core.images import bundled_mnist, decode_image
from ddpm_core.sample import SamplingConfig
from explorer import guidance_widgets, links, sample_widgets
from explorer.checkpoints import Loaded

METHODS = {  # the first is the default
    "sdedit": "SDEdit",
    "inpaint": "Inpainting",
    "invert": "Inversion",
    "interpolate": "Interpolation",
}
EQUATION = {"sdedit": "sdedit", "inpaint": "repaint", "invert": "ddim_inversion", "interpolate": "slerp"}
SOURCES = {"data": "From the model's training data", "upload": "Upload an image (PNG or JPEG)"}
N_POINTS = 500  # points of a 2D toy edited at once (within the classroom's cap on points)
DATA_MAX_IMAGES = 1000  # images of a torchvision set kept in memory to pick from
MNIST_FIRST = 10  # a clear 3 (the Forward page opens on it too)
DEFAULT_STEPS = 20
MAX_INTERPOLATE = 64  # ddpm_core.edit.interpolate's own bound


@dataclass(frozen=True)
class Source:
    id: tuple  # plain values that name x_0: a result made from another input is not shown
    x0: Tensor  # (C, H, W) in [-1, 1], or (N, 2) points
    caption: str


@dataclass(frozen=True)
class Settings:
    """What a Run samples with: the SamplingConfig (class and guidance included) and the seed of its noise."""

    config: SamplingConfig
    seed: int


def method_picker() -> str:
    return links.radio("Method", list(METHODS), key="method", format_func=METHODS.get, horizontal=True)


# ----------------------------------------------------------------------------------------------------------------
# x_0


@st.cache_resource(show_spinner=False)
def _digits() -> Tensor:
    return load_dataset("digits").x  # (1797, 1, 8, 8), shared read-only


@st.cache_resource(show_spinner=False)
def _mnist() -> Tensor:
    return bundled_mnist().x  # (300, 1, 28, 28), shared read-only


@st.cache_resource(max_entries=3, show_spinner="Loading the data set…")
def _dataset(name: str, data_root: str, size: int | None, channels: int | None, mode: str) -> Tensor:
    return load_dataset(name, data_root=data_root, image_size=size, channels=channels, resize_mode=mode,
                        max_images=DATA_MAX_IMAGES).x  # fmt: skip


@st.cache_resource(max_entries=6, show_spinner=False)
def _toy(name: str, n: int) -> Tensor:
    return make_toy(name, n, seed=0)


@st.cache_data(max_entries=8, show_spinner=False)
def _upload(file_id: str, size: int, channels: int, _data: bytes) -> Tensor:
    return decode_image(_data, size, channels)


def training_images(loaded: Loaded) -> tuple[Tensor, str]:
    """The images of the data set the checkpoint trained on, at its sample shape; DatasetError when not at hand."""
    c, shape = loaded.ckpt.config, tuple(loaded.ckpt.sample_shape)
    if c.dataset == "digits" and shape == (1, 8, 8):
        return _digits(), "the 8×8 digits (scikit-learn)"
    if c.dataset == "mnist" and shape == (1, 28, 28):
        return _mnist(), "the bundled MNIST test digits (held out from training)"
    if c.dataset == "folder":
        raise DatasetError("this checkpoint trained on a folder of images: upload one instead")
    root = str(links.classroom().data_root)  # the server's data root, the one place the UI reads data sets from
    x = _dataset(c.dataset, root, c.image_size or None, c.channels or None, c.resize_mode)
    if tuple(x.shape[1:]) != shape:
        raise DatasetError(f"{c.dataset} loads as {tuple(x.shape[1:])}, not the model's {shape}: upload an image")
    return x, f"{c.dataset} from {root}"


def _data_image(loaded: Loaded) -> Source | None:
    try:
        images, where = training_images(loaded)
    except DatasetError as e:
        st.error(f"No training images for this checkpoint: {e}")
        return None
    n = len(images)
    if st.session_state.get("index", 0) > n - 1:  # a smaller data set keeps the index in range
        st.session_state["index"] = n - 1
    default = MNIST_FIRST if loaded.ckpt.config.dataset == "mnist" and n > MNIST_FIRST else 0
    index = int(links.number("Image index", key="index", default=default, min_value=0, max_value=n - 1,
                             help=f"One of {n:,} images of {where}"))  # fmt: skip
    return Source(("data", loaded.ckpt.config.dataset, index), images[index], f"image #{index:,} of {where}")


def _uploaded(loaded: Loaded) -> Source | None:
    channels, size = loaded.ckpt.sample_shape[0], loaded.ckpt.sample_shape[-1]
    file = st.file_uploader(f"PNG or JPEG, resized to the model's {size}×{size}", type=["png", "jpg", "jpeg"],
                            key="upload")  # fmt: skip
    if file is None:
        st.info("Upload a PNG or JPEG image to edit it.")
        return None
    try:
        x = _upload(file.file_id, size, channels, file.getvalue())
    except ValueError as e:  # ImageError is a ValueError
        st.error(f"Cannot use {file.name}: {e}")
        return None
    return Source(("upload", file.file_id, size, channels), x, f"{file.name}, resized to {size}×{size}")


def input_source(loaded: Loaded) -> Source | None:
    """The widgets that choose x_0, and x_0; None after an st.info or st.error that says why there is none. A 2D
    points model edits a cloud of its toy's points."""
    if loaded.points:
        name = loaded.ckpt.config.dataset
        if name not in POINT_DATASETS:
            st.error(f"This checkpoint's data set {name!r} is not one of the 2D toys ({', '.join(POINT_DATASETS)}).")
            return None
        n = min(N_POINTS, sample_widgets.caps(loaded)[0])
        return Source(("toy", name, n), _toy(name, n), f"{n} points of {name} (seed 0)")
    kind = links.selectbox("Input image", list(SOURCES), key="source", format_func=SOURCES.get)
    return _data_image(loaded) if kind == "data" else _uploaded(loaded)


def batch_size(source: Source) -> int:
    """How many samples x_0 holds: one image, or the cloud's points."""
    return len(source.x0) if source.x0.dim() == 2 else 1


# ----------------------------------------------------------------------------------------------------------------
# The sampler


def max_steps(loaded: Loaded) -> int:
    return sample_widgets.caps(loaded)[1]


def settings(loaded: Loaded, method: str) -> Settings:
    """The sampler's widgets, bound to the link: the sampler (SDEdit and inpainting; inversion and interpolation are
    deterministic DDIM), the steps within the classroom's cap, the seed of the noise, and the class and guidance of
    a class-conditional checkpoint."""
    most = max_steps(loaded)
    links.in_range("steps", 1, most)
    cols = st.columns(3)
    sampler = "ddim"
    if method in ("sdedit", "inpaint"):
        sampler = links.radio("Sampler", ["ddim", "ddpm"], key="sampler", format_func=str.upper, horizontal=True,
                              where=cols[0], help="DDIM: deterministic (η = 0); DDPM: noise at every step")  # fmt: skip
    else:
        cols[0].markdown("Sampler: **DDIM, η = 0** (deterministic)")
    steps = int(links.slider("Steps", key="steps", default=min(DEFAULT_STEPS, most), min_value=1, max_value=most,
                             where=cols[1], help=f"Strided steps; at most {most:,} on this server"))  # fmt: skip
    seed = 0
    if method in ("sdedit", "inpaint"):
        seed = int(links.number("Seed", key="seed", default=0, min_value=0, max_value=2**31 - 1, step=1,
                                where=cols[2], help="Draws the noise"))  # fmt: skip
    config = SamplingConfig(sampler, steps, clip_x0=not loaded.points)
    request = guidance_widgets.with_class(loaded, sample_widgets.Request(config, 1, seed))
    return Settings(request.config, seed)


def refusal(loaded: Loaded, n: int, steps: list[int], what: str) -> str:
    """Why the server will not run this ("" when it will): the classroom's gate, all or nothing."""
    return sample_widgets.gate_decision(loaded, n, steps, what, clamp=False).refusal


def max_interpolate(loaded: Loaded) -> int:
    return max(2, min(MAX_INTERPOLATE, links.classroom().max_n * sample_widgets.per_sample(loaded)))
