"""Schedules: overlay several noise schedules — β_t, ᾱ_t, signal and noise weights, log-SNR, β̃_t — and compare
their ends in a table, with warnings where x_T is not pure noise or x̂₀ blows up."""

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.colors import qualitative

from ddpm_core import equations
from ddpm_core.schedule_report import (
    MAX_POINTS,
    SUMMARY_FIELDS,
    plottable,
    schedule_curves,
    schedule_summary,
    schedule_warnings,
    summary_csv,
)
from ddpm_core.schedules import SCHEDULES, make_schedule
from explorer import links
from explorer.widgets import schedule_picker

DEFAULTS = ["linear", "cosine", "scaled_linear", "sigmoid"]  # schedule i's family before the user picks one
FLOAT_COLUMNS = [
    SUMMARY_FIELDS[k] for k in ("alpha_bar_T", "terminal_snr", "prior_kl_bits_per_dim", "max_beta", "x0_error_gain_T")
]
COLORS = qualitative.Plotly  # schedule i keeps its colour on every chart

# (title, curves drawn with line styles, whether the log-y toggle applies)
CHARTS = [
    ("β_t — variance added by each forward step", [("beta", "solid")], True),
    ("ᾱ_t — share of x₀'s variance left in x_t", [("alpha_bar", "solid")], True),
    (
        "Signal √ᾱ_t (solid) and noise √(1−ᾱ_t) (dashed)",
        [("sqrt_alpha_bar", "solid"), ("sqrt_one_minus_alpha_bar", "dash")],
        True,
    ),
    ("log-SNR_t = ln ᾱ_t / (1−ᾱ_t)", [("log_snr", "solid")], False),
    ("Forward β_t (solid) and posterior β̃_t (dashed)", [("beta", "solid"), ("posterior_variance", "dash")], True),
]


@st.cache_data(max_entries=64, show_spinner=False)
def report(params: tuple) -> tuple[dict, dict, list[str]]:
    """Curves, summary row and warnings of the schedule Schedule.to_dict() describes (tensors are not hashable)."""
    s = make_schedule(**dict(params))
    return schedule_curves(s, MAX_POINTS), schedule_summary(s), schedule_warnings(s)


def chart(title: str, styles: list, reports: list, x_key: str, log_y: bool) -> tuple[go.Figure, list[str]]:
    """One figure, a trace per schedule and curve; also the numbers of the schedules with points left out."""
    fig, dropped = go.Figure(), []
    for i, (name, curves) in reports:
        x = curves["t"] / (curves["t"][-1] if x_key == "t/T" else 1)
        for j, (key, dash) in enumerate(styles):
            xs, ys, n = plottable(x, curves[key], log_y)
            fig.add_scatter(x=xs, y=ys, mode="lines", name=name, legendgroup=name, showlegend=j == 0,
                            line={"color": COLORS[i % len(COLORS)], "dash": dash, "width": 2})  # fmt: skip
            if n:
                dropped.append(str(i + 1))
    fig.update_layout(
        title=title, height=380, margin={"l": 10, "r": 10, "t": 40, "b": 10}, hovermode="x unified",
        legend={"orientation": "h", "yanchor": "top", "y": -0.3, "xanchor": "left", "x": 0},
        xaxis_title="t" if x_key == "t" else "t / T", yaxis_type="log" if log_y else "linear",
    )  # fmt: skip
    fig.update_yaxes(exponentformat="power")  # 10⁻⁴, not plotly's SI "100µ"
    return fig, sorted(set(dropped))


st.title("Schedules")
st.markdown(
    "A schedule β_1 … β_T decides how fast the forward process destroys x₀. Everything else follows from it; "
    "compare several schedules side by side below."
)
st.latex(equations.latex("schedule"))

top = st.columns([1, 1, 1, 2])
n = links.number("Schedules to compare", "n_schedules", default=2, min_value=1, max_value=4, step=1, where=top[0])
x_key = links.radio("x axis", ["t", "t/T"], "x_axis", horizontal=True, where=top[1],
                    help="t/T puts schedules of any T side by side")  # fmt: skip
log_y = links.flag("Log-scale y", "log_y", toggle=True, where=top[2],
                   help="Not applied to log-SNR, which is already a log")  # fmt: skip

reports = []  # (index, (legend, curves)) of the valid schedules
rows = []
families = {}  # the families shown, in order (a dict keeps it)
rescaled = False
pickers = st.columns(2)
for i in range(int(n)):
    with pickers[i % 2].container(border=True):
        s = schedule_picker(key=f"s{i}.", default=DEFAULTS[i], label=f"Schedule {i + 1}")
        if s is None:
            continue
        curves, summary, warnings = report(tuple(s.to_dict().items()))
        name = f"{i + 1}: {summary['schedule']}"
        for w in warnings:
            st.warning(w)
    reports.append((i, (name, curves)))
    rows.append({**summary, "schedule": name})
    families[s.name] = None
    rescaled |= s.rescale_zero_terminal_snr

if not reports:
    st.info("No valid schedule to plot: fix the values marked in red.")
    st.stop()

grid = st.columns(2)
for k, (title, styles, log_applies) in enumerate(CHARTS):
    fig, dropped = chart(title, styles, reports, x_key, log_y and log_applies)
    with grid[k % 2]:
        st.plotly_chart(fig, key=f"chart.{styles[-1][0]}")
        if dropped:
            st.caption(f"Points not drawn (−∞, or ≤ 0 on a log axis) for schedule {', '.join(dropped)}.")
with grid[len(CHARTS) % 2]:
    st.markdown(
        "**Reading the charts.** The zero-terminal-SNR rescale pins ᾱ_T = 0: x_T is then pure noise, SNR_T = 0 and "
        "log-SNR_T = −∞, so that curve plunges off the bottom at t = T and its last point is not drawn. "
        "The cosine's last β is clipped at β_max = 0.999 and dwarfs the rest: switch on log-scale y to compare "
        "small β (β̃_1 = 0 then has no place). β̃_t ≤ β_t always, and the two meet once ᾱ_t is small: "
        "Ho et al. found either works as the reverse variance σ_t²."
    )

st.subheader("The end of each schedule")
table = pd.DataFrame(rows, columns=list(SUMMARY_FIELDS))
table["snr_crosses_1_at_t"] = table["snr_crosses_1_at_t"].astype("Int64")
number = st.column_config.NumberColumn(format="%.3g")
st.dataframe(table.rename(columns=SUMMARY_FIELDS), hide_index=True, column_config=dict.fromkeys(FLOAT_COLUMNS, number))
st.caption(
    "t is the paper's t = index + 1 (t = 1 is the first noising step). “SNR < 1 from t”: the first t with "
    "SNR_t < 1, i.e. ᾱ_t < ½ — empty if it never gets there. L_T = KL(q(x_T | x₀) ‖ N(0, I)) for data uniform on "
    "[-1, 1]. The x̂₀ error gain is the factor on an error in ε_θ at t = T (∞ when ᾱ_T = 0)."
)
st.download_button("Download the table as CSV", summary_csv(rows), "schedules.csv", "text/csv", key="download_csv")

st.subheader("Equations")
for family in families:
    st.caption(f"{family.replace('_', ' ')} — {SCHEDULES[family].summary}")
    st.latex(SCHEDULES[family].latex)
if rescaled:
    st.caption("Zero terminal SNR (Lin et al. 2024), applied to the β above, then β_t recomputed from ᾱ_t")
    st.latex(equations.latex("zero_terminal_snr"))
