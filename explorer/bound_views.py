"""The Bound page (pages/bound.py): its widgets, its measurement (ddpm_core/likelihood.py) and its charts. One press
of Measure scores n samples of the checkpoint's own data under both choices of σ_t² (β_t and β̃_t, on the same noise
and the same t draws) and, for a 2D model, by the probability-flow ODE too. The weights λ_t need no model and are
drawn before anything is measured."""

from __future__ import annotations

import math
from dataclasses import dataclass

import plotly.graph_objects as go
import streamlit as st
import torch
from plotly.subplots import make_subplots
from torch import Tensor

from ddpm_core.data import DatasetError
from ddpm_core.likelihood import (
    DEFAULT_STRATA,
    Bound,
    OdeLikelihood,
    bound,
    data_levels,
    loss_weights,
    ode_log_likelihood,
)
from ddpm_core.likelihood_cli import evaluation_data
from ddpm_core.likelihood_ode import DATA_END_STEPS, ODE_STEPS
from explorer import edit_widgets, links, sample_widgets, sampling_progress
from explorer.checkpoints import Loaded

RESULT = "bound.result"  # session state: the last measurement's BoundView
VARIANCES = {"posterior": "σ_t² = β̃_t", "beta": "σ_t² = β_t"}  # the page's order: the sampler's default first
COLOURS = {"posterior": "#1f77b4", "beta": "#d62728"}
STRATA_HELP = (
    "K + 1 network evaluations a sample. The strata are single t at small t, where L_{t−1} is largest, "
    "and widen geometrically towards T (ddpm_core.likelihood.geometric_strata)"
)
TERMS = {"every": "every t (the exact sum)", "strata": "stratified: one t in each of K strata"}
DEFAULT_N = {"images": 32, "points": 100}
MAX_N = {"images": 256, "points": 2000}


@dataclass(frozen=True)
class Settings:
    n: int
    seed: int
    full: bool
    strata: int

    def evaluations(self, T: int) -> int:
        """Network evaluations per sample, for one σ_t²."""
        return T if self.full else self.strata + 1


@dataclass(frozen=True)
class BoundView:
    key: tuple  # (checkpoint, settings): a result measured otherwise is not shown
    where: str  # what was scored
    bounds: dict[str, Bound]  # by variance
    ode: OdeLikelihood | None


def settings(loaded: Loaded) -> Settings:
    kind = "points" if loaded.points else "images"
    most = min(MAX_N[kind], sample_widgets.caps(loaded)[0])
    cols = st.columns(3)
    links.in_range("n", 1, most)
    n = int(links.number(f"Samples n (≤ {most:,})", key="n", default=min(DEFAULT_N[kind], most), min_value=1,
                         max_value=most, step=1, where=cols[0], help="Of the checkpoint's own data"))  # fmt: skip
    seed = int(links.number("Seed", key="seed", default=0, min_value=0, max_value=2**31 - 1, step=1, where=cols[1],
                            help="Picks the samples, the noise of each x_t and the t draws"))  # fmt: skip
    terms = links.radio("Terms", list(TERMS), key="terms", default="every" if loaded.T <= 1000 else "strata",
                        format_func=TERMS.get, where=cols[2])  # fmt: skip
    strata = DEFAULT_STRATA
    if terms == "strata":
        strata = int(links.slider("K strata", key="strata", default=min(DEFAULT_STRATA, loaded.T - 1), min_value=1,
                                  max_value=loaded.T - 1, help=STRATA_HELP))  # fmt: skip
    return Settings(n, seed, terms == "every", strata)


def _cells(loaded: Loaded, s: Settings) -> list[int]:
    """The work as the gate counts it: n samples through one chain of evaluations per σ_t² (and the ODE's)."""
    cells = [s.evaluations(loaded.T)] * len(VARIANCES)
    return [*cells, 4 * (ODE_STEPS + DATA_END_STEPS)] if loaded.points else cells  # RK4: 4 evaluations a step


def _data(loaded: Loaded, s: Settings) -> tuple[Tensor, Tensor | None, str]:
    """The samples scored: fresh points of a 2D toy, or images of the checkpoint's data set (labels too for the
    digits, so a class-conditional model is scored on each digit's own class)."""
    if loaded.points or loaded.ckpt.config.dataset == "digits":
        return evaluation_data(loaded.ckpt, s.n, s.seed)  # as the CLI scores them
    images, where = edit_widgets.training_images(loaded)  # the server's data root, never the run's own
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(s.seed))[: s.n]
    return images[pick], None, f"{len(pick)} of the {len(images):,} images of {where}"


def measure(loaded: Loaded, s: Settings) -> None:
    """The Measure button, gated, and its run under a progress bar and Cancel; the result kept in session state."""
    key = (str(loaded.ckpt.path), s)
    refused = sample_widgets.gate_decision(loaded, s.n, _cells(loaded, s), "This measurement", clamp=False).refusal
    if refused:
        st.warning(refused)
    if not st.button("Measure", key="measure_bound", type="primary", disabled=bool(refused)) or refused:
        return
    st.session_state.pop(RESULT, None)
    try:
        x0, y, where = _data(loaded, s)
    except DatasetError as e:
        st.error(f"No data to score for this checkpoint: {e}")
        return
    model, levels = loaded.ckpt.model, data_levels(loaded.ckpt.config.dataset)
    with sampling_progress.cancellable("bound"):
        bar = st.progress(0.0, text="Measuring…")
        progress = sampling_progress.progress_callback(bar)
        bounds = {v: bound(model, loaded.diffusion, x0, variance=v, y=y, levels=levels, full=s.full,
                           strata=s.strata, seed=s.seed, progress=progress) for v in VARIANCES}  # fmt: skip
        ode = ode_log_likelihood(model, loaded.diffusion, x0, y=y) if loaded.points else None
        bar.empty()
    st.session_state[RESULT] = BoundView(key, where, bounds, ode)


def shown(loaded: Loaded, s: Settings) -> BoundView | None:
    view = st.session_state.get(RESULT)
    if view is None or view.key != (str(loaded.ckpt.path), s):
        st.info("Press **Measure** to score this checkpoint's data.")
        return None
    return view


# ----------------------------------------------------------------------------------------------------------------
# The views


def _pm(value: float, se: float) -> str:
    return f"{value:.3f}" if math.isnan(se) else f"{value:.3f} ± {se:.3f}"


def totals(loaded: Loaded, view: BoundView) -> None:
    """The bits/dim under each σ_t², with its standard error, and the three parts of each."""
    cols = st.columns(len(VARIANCES) + (view.ode is not None))
    for col, (v, b) in zip(cols, view.bounds.items(), strict=False):
        col.metric(f"Bound, {VARIANCES[v]} (bits/dim)", _pm(b.bits_per_dim, b.stderr),
                   help="Mean over the samples, ± its standard error")  # fmt: skip
    if view.ode is not None:
        cols[-1].metric("Exact NLL, probability-flow ODE (bits/dim)", _pm(view.ode.mean_bits_per_dim, view.ode.stderr))
    first = next(iter(view.bounds.values()))
    how = "every t summed" if first.full else f"one t in each of {first.strata} strata, per sample"
    if first.levels:
        unit = f"L_0 is a probability over {first.levels} levels a pixel: a uniform guess costs "
        unit += f"{math.log2(first.levels):.2f} bits/dim"
    else:
        unit = "2D points are continuous: these bits/dim are a density's, and can be negative"
    st.caption(f"{view.where}; {how}. {unit}.")
    rows = {"L_T": "prior", "Σ L_t−1": "kl", "L_0": "decoder", "total": "bits_per_dim"}
    table = {VARIANCES[v]: {name: getattr(b, field) for name, field in rows.items()} for v, b in view.bounds.items()}
    for v, b in view.bounds.items():
        table[VARIANCES[v]]["seconds"] = b.wall_time
    st.dataframe(table, width="content")


def terms_chart(loaded: Loaded, view: BoundView) -> go.Figure:
    """L_{t−1} over t for each σ_t² on a log axis, and L_T and L_0 as bars of their own."""
    fig = make_subplots(rows=1, cols=2, column_widths=[0.78, 0.22], subplot_titles=("L_t−1 over t", "L_T and L_0"))
    for v, b in view.bounds.items():
        t = torch.arange(2, loaded.T + 1)
        kl = b.per_t[1:]
        seen = ~torch.isnan(kl)
        fig.add_trace(go.Scatter(x=t[seen].tolist(), y=kl[seen].tolist(), mode="lines" if b.full else "markers",
                                 name=VARIANCES[v], line={"color": COLOURS[v]}, marker={"color": COLOURS[v]},
                                 legendgroup=v), row=1, col=1)  # fmt: skip
        fig.add_trace(go.Bar(x=["L_T", "L_0"], y=[b.prior, b.decoder], name=VARIANCES[v], showlegend=False,
                             marker={"color": COLOURS[v]}, legendgroup=v), row=1, col=2)  # fmt: skip
    fig.update_yaxes(type="log", title="bits/dim", row=1, col=1)
    fig.update_xaxes(title="t (log scale: the two σ_t² part at small t)", type="log", row=1, col=1)
    fig.update_layout(height=380, margin={"l": 10, "r": 10, "t": 40, "b": 10}, barmode="group")
    return fig


def weights_chart(loaded: Loaded) -> go.Figure:
    """λ_t of each σ_t² against L_simple's weight 1, over t (log axis): what dropping the weights changes."""
    fig = go.Figure()
    for v in VARIANCES:
        w = loss_weights(loaded.diffusion.schedule, v)
        fig.add_trace(go.Scatter(x=w.t.tolist(), y=w.bound.tolist(), mode="lines", name=f"λ_t, {VARIANCES[v]}",
                                 line={"color": COLOURS[v]}))  # fmt: skip
    t = list(range(2, loaded.T + 1))
    fig.add_trace(go.Scatter(x=t, y=[1.0] * len(t), mode="lines", name="L_simple: 1", line={"color": "#444",
                             "dash": "dash"}))  # fmt: skip
    fig.update_layout(height=320, margin={"l": 10, "r": 10, "t": 30, "b": 10}, xaxis={"title": "t"},
                      yaxis={"title": "weight on ‖ε − ε_θ‖²", "type": "log"})  # fmt: skip
    return fig


def ode_chart(view: BoundView) -> go.Figure:
    """Each point's bound (σ_t² = β̃_t) against its exact NLL: the bound lies above the diagonal on average."""
    b, ode = view.bounds["posterior"], view.ode
    x, y = ode.bits_per_dim.tolist(), b.per_sample.tolist()
    low, high = min(x + y), max(x + y)
    fig = go.Figure([go.Scatter(x=x, y=y, mode="markers", name="a point", marker={"size": 5, "opacity": 0.6}),
                     go.Scatter(x=[low, high], y=[low, high], mode="lines", name="bound = NLL",
                                line={"color": "#444", "dash": "dash"})])  # fmt: skip
    axes = {"xaxis": {"title": "exact NLL (ODE), bits/dim"}, "yaxis": {"title": "bound (σ_t² = β̃_t), bits/dim"}}
    fig.update_layout(height=380, margin={"l": 10, "r": 10, "t": 30, "b": 10}, **axes)
    return fig
