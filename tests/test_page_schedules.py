"""The Schedules page through Streamlit's AppTest: charts, table, warnings and errors, widgets found by key."""

import base64
import json

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from ddpm_core.equations import latex
from ddpm_core.schedules import SCHEDULES
from tests.apptest_helpers import open_page, rerun

# Chart title prefix → curves per schedule (√ᾱ with √(1−ᾱ), β with β̃ draw two each).
CURVES_PER_SCHEDULE = {"β_t": 1, "ᾱ_t": 1, "Signal": 2, "log-SNR_t": 1, "Forward": 2}


ZERO_TERMINAL_SNR_LATEX = latex("zero_terminal_snr")


def open_schedules() -> AppTest:
    return open_page("schedules.py")


def decoded(value):
    """Plotly ships numpy arrays as {"dtype", "bdata": base64}: back to numpy; anything else as is."""
    if isinstance(value, dict) and "bdata" in value:
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
    return value


def charts(at: AppTest) -> dict[str, dict]:
    """Each plotly chart's spec, keyed by the first word of its title, with its traces' x and y decoded."""
    specs = [json.loads(el.proto.spec) for el in at.get("plotly_chart")]
    for spec in specs:
        for trace in spec["data"]:
            trace["x"], trace["y"] = decoded(trace["x"]), decoded(trace["y"])
    return {spec["layout"]["title"]["text"].split()[0]: spec for spec in specs}


def trace_counts(at: AppTest) -> dict[str, int]:
    return {title: len(spec["data"]) for title, spec in charts(at).items()}


def equations(at: AppTest) -> list[str]:
    return [e.value.strip("$\n") for e in at.latex]  # st.latex wraps its body in $$ … $$


def table(at: AppTest):
    return at.dataframe[0].value


@pytest.fixture
def at() -> AppTest:
    return open_schedules()


def test_page_renders_charts_table_download_and_equations(at):
    assert at.title[0].value == "Schedules"
    assert trace_counts(at) == {title: 2 * k for title, k in CURVES_PER_SCHEDULE.items()}  # linear and cosine
    legends = {t["name"] for t in charts(at)["β_t"]["data"]}
    assert legends == {"1: linear T=1000 (β 1e-4→0.02)", "2: cosine T=1000 (s=0.008, β_max=0.999)"}
    assert list(table(at)["schedule"]) == sorted(legends)
    assert [b.proto.label for b in at.get("download_button")] == ["Download the table as CSV"]
    assert at.get("download_button")[0].proto.id.endswith("download_csv")
    latex = equations(at)
    assert SCHEDULES["linear"].latex in latex and SCHEDULES["cosine"].latex in latex
    assert ZERO_TERMINAL_SNR_LATEX not in latex
    assert r"\tilde\beta_t" in latex[0] and r"\mathrm{SNR}_t" in latex[0]  # definitions once, at the top


def test_more_schedules_add_traces_and_rows(at):
    at.number_input(key="n_schedules").set_value(4)
    rerun(at)
    assert trace_counts(at) == {title: 4 * k for title, k in CURVES_PER_SCHEDULE.items()}
    assert len(table(at)) == 4
    assert SCHEDULES["sigmoid"].latex in equations(at)


def test_changing_family_or_parameter_changes_the_traces(at):
    before = charts(at)["β_t"]["data"][0]
    at.number_input(key="s0.linear.beta_end").set_value(0.03)
    rerun(at)
    changed = charts(at)["β_t"]["data"][0]
    assert changed["name"] == "1: linear T=1000 (β 1e-4→0.03)"
    assert changed["y"][-1] == pytest.approx(0.03) and before["y"][-1] == pytest.approx(0.02)
    at.selectbox(key="s0.schedule").set_value("quadratic")
    rerun(at)
    quadratic = charts(at)["β_t"]["data"][0]
    assert quadratic["name"].startswith("1: quadratic T=1000")
    assert quadratic["y"][500] < changed["y"][500]  # β ∝ (t/T)² is below the line at mid-range


@pytest.mark.parametrize(("key", "value"), [("s0.linear.beta_start", -1.0), ("s0.T", 1)])
def test_a_bad_parameter_shows_an_error_and_the_other_schedule_still_plots(at, key, value):
    at.number_input(key=key).set_value(value)
    rerun(at)
    assert len(at.error) == 1 and at.error[0].value.startswith("Schedule 1:")
    assert trace_counts(at) == {title: k for title, k in CURVES_PER_SCHEDULE.items()}
    assert all(t["name"].startswith("2: cosine") for t in charts(at)["β_t"]["data"])
    assert list(table(at)["schedule"]) == ["2: cosine T=1000 (s=0.008, β_max=0.999)"]


def test_small_T_warns_that_x_T_is_not_pure_noise(at):
    at.number_input(key="n_schedules").set_value(1)
    rerun(at)
    assert len(at.warning) == 0  # the paper's linear T = 1000 is fine
    at.number_input(key="s0.T").set_value(50)
    rerun(at)
    assert len(at.warning) == 1 and "not pure noise" in at.warning[0].value
    assert table(at)["ᾱ_T"][0] > 0.5


def test_zero_terminal_snr_toggle_is_visible(at):
    at.checkbox(key="s0.rescale_zero_terminal_snr").check()
    rerun(at)
    row = table(at).iloc[0]
    assert row["ᾱ_T"] == 0 and row["SNR_T"] == 0 and row["schedule"].endswith("+ zero SNR")
    assert ZERO_TERMINAL_SNR_LATEX in equations(at)
    log_snr = charts(at)["log-SNR_t"]["data"][0]
    assert log_snr["x"][-1] == 999 and np.isfinite(log_snr["y"]).all()  # the −∞ at t = T is left out, not NaN
    assert any(c.value.startswith("Points not drawn") and c.value.endswith("schedule 1.") for c in at.caption)
    assert any("undefined at t = T" in w.value for w in at.warning)


def test_x_axis_and_log_scale_toggles(at):
    assert charts(at)["ᾱ_t"]["data"][0]["x"][-1] == 1000
    at.radio(key="x_axis").set_value("t/T")
    at.toggle(key="log_y").set_value(True)
    rerun(at)
    specs = charts(at)
    assert specs["ᾱ_t"]["data"][0]["x"][-1] == 1 and specs["ᾱ_t"]["layout"]["xaxis"]["title"]["text"] == "t / T"
    assert specs["ᾱ_t"]["layout"]["yaxis"]["type"] == "log"
    assert specs["log-SNR_t"]["layout"]["yaxis"]["type"] == "linear"  # already a log
    forward = specs["Forward"]["data"]
    assert len(forward[1]["x"]) == len(forward[0]["x"]) - 1  # β̃_1 = 0 has no place on a log axis
