"""Which noise levels a model finds hard (ddpm_core.importance), next to where its schedule spends the t's."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st
import torch
from plotly.subplots import make_subplots

from ddpm_core import equations, runs
from ddpm_core.diffusion import Diffusion
from ddpm_core.importance import LossProfile, log_snr_density, loss_profile
from ddpm_core.schedules import make_schedule
from explorer import gate, links

N_T, BATCH = 50, 256


@st.cache_data(max_entries=16, show_spinner="Measuring the loss at 50 values of t…")
def _profile(path: str, mtime: float, _ckpt: runs.Checkpoint, _diffusion: Diffusion) -> LossProfile:
    """Keyed on the file's version; the page's loaded model and diffusion are used, not loaded again."""
    data = _ckpt.config.load_data().x
    x0 = data[torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:BATCH]]
    return loss_profile(_ckpt.model, _diffusion, x0, N_T)


def _reference(name: str, T: int) -> tuple[list[float], list[float]]:
    s = make_schedule(name, T)
    keep = torch.isfinite(s.log_snr)
    return s.log_snr[keep].tolist(), log_snr_density(s)[keep].tolist()


def figure(profile: LossProfile, schedule: str, T: int) -> go.Figure:
    """The ε-error per t against λ_t (left axis, log), and the density of λ under uniform t (right axis) for the
    model's schedule, with linear and cosine for reference."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_scatter(x=profile.log_snr, y=profile.loss, mode="lines+markers", name="ε-error of this model",
                    line={"width": 3}, secondary_y=False)  # fmt: skip
    for name in dict.fromkeys([schedule, "linear", "cosine"]):
        lam, density = _reference(name, T)
        own = name == schedule
        fig.add_scatter(x=lam, y=density, mode="lines", name=f"density of λ: {name}" + (" (this model's)" * own),
                        line={"dash": "solid" if own else "dot"}, secondary_y=True)  # fmt: skip
    fig.update_layout(height=380, margin={"l": 10, "r": 10, "t": 30, "b": 10}, hovermode="x unified",
                      legend={"orientation": "h", "y": -0.25}, xaxis_title="log-SNR λ_t (noisier: left)")  # fmt: skip
    fig.update_yaxes(title_text="mean ‖ε − ε̂‖²", type="log", secondary_y=False)
    fig.update_yaxes(title_text="density of λ under uniform t", secondary_y=True)
    return fig


def importance_panel(loaded) -> None:
    """An expander that measures the loaded checkpoint's error across t on request and plots it (loaded: the Sample
    page's explorer.checkpoints.Loaded)."""
    ckpt, path = loaded.ckpt, str(loaded.ckpt.path)
    with st.expander("Which noise levels are hard, and where the schedule spends its steps", key="importance_panel",
                     on_change="rerun"):  # fmt: skip
        st.markdown(
            "Training draws t uniformly, so the schedule decides how the training steps spread over the log-SNR "
            "λ. The linear schedule piles them up at very negative λ (x_t nearly pure noise, ε easy to guess); "
            "the cosine spreads them evenly. The model's error is largest where x_t is nearly clean."
        )
        st.latex(equations.latex("log_snr_density"))
        request = gate.Sampling(BATCH, (1,) * N_T, clamp=False, what="Measuring the error at each t")
        if st.button("Measure", key="measure_importance", help=f"{N_T} values of t on {BATCH} real samples") and (
            gate.show(gate.sampling(links.classroom(), request))
        ):
            st.session_state["importance.path"] = path
        if st.session_state.get("importance.path") != path:
            return
        try:
            profile = _profile(path, ckpt.path.stat().st_mtime, ckpt, loaded.diffusion)
        except (ValueError, OSError) as e:  # DatasetError is a ValueError
            st.error(f"Cannot measure it: {e}")
            return
        st.plotly_chart(figure(profile, ckpt.config.schedule, loaded.T), key="importance_chart")
