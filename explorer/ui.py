"""Pieces every page shares: the page list, the device found, where runs live."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from ddpm_core.devices import describe_device, resolve_device
from explorer.classroom import ROOT


@dataclass(frozen=True)
class PageInfo:
    file: str  # under pages/
    title: str
    icon: str
    summary: str
    default: bool = False

    @property
    def name(self) -> str:
        """ "forward": the file's stem, the page's name in the classroom file and its URL path."""
        return Path(self.file).stem


PAGES: list[PageInfo] = [
    PageInfo("home.py", "Home", ":material/home:", "What DDPM is and how this tool is laid out.", default=True),
    PageInfo("forward.py", "Forward process", ":material/blur_on:", "Slide over t and watch data being noised."),
    PageInfo("schedules.py", "Schedules", ":material/show_chart:", "Compare noise schedules."),
    PageInfo("train.py", "Train", ":material/model_training:", "Train ε_θ and watch the loss live."),
    PageInfo("sample.py", "Sample", ":material/auto_awesome:", "Sample from a model and watch the trajectory."),
    PageInfo(
        "edit.py",
        "Edit",
        ":material/healing:",
        "Edit with a trained model: SDEdit, inpainting, inversion, interpolation.",
    ),
    PageInfo("bound.py", "Bound", ":material/functions:", "The variational bound term by term, in bits/dim."),
]

# The four parts of the tool; a part links to its page once that page is in PAGES.
PARTS: list[tuple[str, str]] = [
    ("Forward process", r"Slide over $t$ and watch an image or a 2D point cloud being noised into $x_t$."),
    ("Schedules", r"Plot and compare $\beta_t$, $\bar\alpha_t$ and the SNR of the linear, cosine, sigmoid… schedules."),
    (
        "Train",
        r"Launch a short training run of $\epsilon_\theta$ (GPU if there is one, CPU otherwise); watch its loss live.",
    ),
    ("Sample", "Run the reverse chain from pure noise with DDPM or DDIM and watch the trajectory as a GIF."),
]


@st.cache_resource
def device_description() -> str:
    return describe_device(resolve_device("auto"))


def visible_pages() -> list[PageInfo]:
    """PAGES less those the classroom file hides."""
    from explorer.links import classroom

    hidden = classroom().hidden_pages
    return [p for p in PAGES if p.name not in hidden]


def page_for(title: str) -> PageInfo | None:
    """The visible page of that title, or None."""
    return next((p for p in visible_pages() if p.title == title), None)


def page_path(page: PageInfo) -> str:
    """The page file's absolute path, as st.Page and st.page_link take it."""
    return str(ROOT / "pages" / page.file)
