"""Widgets that several pages share. Pages stay thin: widgets → one cached core call → plot."""

from __future__ import annotations

import streamlit as st

from ddpm_core.schedules import SCHEDULES, Schedule, make_schedule
from explorer import links

PARAM_LABELS = {
    "beta_start": "β_start",
    "beta_end": "β_end",
    "start": "sigmoid start",
    "end": "sigmoid end",
    "tau": "τ (temperature)",
    "s": "s (offset)",
    "max_beta": "β_max (clip)",
}


@st.cache_resource(max_entries=64, show_spinner=False)
def cached_schedule(name: str, T: int, rescale: bool, params: tuple[tuple[str, float], ...]) -> Schedule:
    """One Schedule per parameter set, shared read-only by every session (tensors are not hashable: key on the
    parameters)."""
    return make_schedule(name, T, rescale_zero_terminal_snr=rescale, **dict(params))


def schedule_picker(
    key: str = "", default: str = "linear", default_T: int = 1000, label: str = "Noise schedule", columns: bool = True
) -> Schedule | None:
    """The widgets for one schedule — family, T, the family's parameters (the literature's defaults) and the
    zero-terminal-SNR rescale — and the Schedule they describe, or None after an st.error that says which value is
    wrong. Widget keys are the config field names, prefixed by `key` (e.g. "s1.T") when a page has several."""
    names = list(SCHEDULES)
    name = links.selectbox(label, names, key=f"{key}schedule", default=default,
                           format_func=lambda n: n.replace("_", " "), help="The family of β_1 … β_T")  # fmt: skip
    family = SCHEDULES[name]
    cells = _grid(1 + len(family.defaults), per_row=3 if columns else 1)
    T = links.number("T (steps)", key=f"{key}T", default=default_T, step=1, where=cells[0],
                     help="Number of diffusion steps")  # fmt: skip
    params = {}
    for cell, (param, value) in zip(cells[1:], family.defaults.items(), strict=True):
        # keyed per family: linear's β_end must not leak into scaled_linear's, whose default differs
        params[param] = links.number(
            PARAM_LABELS.get(param, param), key=f"{key}{name}.{param}", default=float(value), format="%g",
            step=_step(value), where=cell,
        )  # fmt: skip
    rescale = links.flag(
        "Rescale to zero terminal SNR (Lin et al. 2024)",
        key=f"{key}rescale_zero_terminal_snr",
        help="Shift and scale √ᾱ so that ᾱ_T = 0 exactly: x_T is then pure noise, as sampling assumes.",
    )
    try:
        return cached_schedule(name, int(T), bool(rescale), tuple(sorted(params.items())))
    except ValueError as e:
        st.error(f"{label}: {e}")
        return None


def _grid(n: int, per_row: int) -> list:
    """n containers laid out in rows of at most per_row columns (six parameters do not fit in one narrow row)."""
    cells = []
    while len(cells) < n:
        cells.extend(st.columns(per_row))
    return cells[:n]


def _step(value: float) -> float:
    """A spinner step about a tenth of the default's order of magnitude."""
    if value == 0:
        return 0.1
    from math import floor, log10

    return 10.0 ** (floor(log10(abs(value))) - 1)
