"""The Bound page through Streamlit's AppTest: the weights λ_t before anything is measured, the bound of the bundled
8×8 digits model under both σ_t² (every t, and stratified), the 2D moons model against its exact ODE likelihood, the
classroom's caps, and a link that restores the view."""

from __future__ import annotations

import math

import pytest
import torch
from streamlit.testing.v1 import AppTest

from ddpm_core.equations import latex
from ddpm_core.likelihood import loss_weights
from ddpm_core.runs import load_checkpoint
from tests.apptest_helpers import chart, in_classroom, open_link, open_page, rerun, texts
from tests.conftest import ROOT

BUNDLED = ROOT / "assets" / "checkpoints"
DIGITS, MOONS = str(BUNDLED / "digits.safetensors"), str(BUNDLED / "moons.safetensors")


@pytest.fixture
def at(tmp_path, monkeypatch) -> AppTest:
    in_classroom(tmp_path, monkeypatch)
    return open_page("bound.py")


def measure(at: AppTest, checkpoint: str, n: int, **widgets) -> AppTest:
    at.selectbox(key="checkpoint").set_value(checkpoint)
    rerun(at)
    at.number_input(key="n").set_value(n)
    rerun(at)
    for key, value in widgets.items():  # terms (a radio), then strata (a slider that terms = "strata" shows)
        (at.radio(key=key) if key == "terms" else at.slider(key=key)).set_value(value)
        rerun(at)
    at.button(key="measure_bound").click()
    rerun(at)
    assert not at.error, [e.value for e in at.error]
    return at


def view(at: AppTest):
    return at.session_state["bound.result"]


def _equations(at: AppTest) -> str:
    return "\n".join(e.value for e in at.latex)


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_the_page_shows_the_bound_and_the_weights_before_measuring(at):
    assert at.title[0].value == "Variational bound" and not at.error
    assert latex("vlb") in _equations(at) and latex("lambda_t") in _equations(at)
    spec = chart(at, "bound_weights")
    names = [trace["name"] for trace in spec["data"]]
    assert names == ["λ_t, σ_t² = β̃_t", "λ_t, σ_t² = β_t", "L_simple: 1"]
    schedule = load_checkpoint(DIGITS).config.make_schedule()
    lam = loss_weights(schedule, "posterior").bound
    assert spec["data"][0]["y"] == pytest.approx(lam.tolist()) and spec["data"][0]["x"][0] == 2
    assert spec["data"][0]["y"][0] > 10 * spec["data"][0]["y"][-1]  # the bound weighs the small t most
    assert any("Press **Measure**" in i.value for i in at.info) and not at.metric


def test_the_digits_bound_under_both_variances_every_t(at):
    measure(at, DIGITS, 3)
    bounds = view(at).bounds
    assert set(bounds) == {"posterior", "beta"} and all(b.full and len(b.per_sample) == 3 for b in bounds.values())
    metrics = _metrics(at)
    for label, b in (("Bound, σ_t² = β̃_t (bits/dim)", bounds["posterior"]), ("Bound, σ_t² = β_t (bits/dim)",
                                                                             bounds["beta"])):  # fmt: skip
        assert metrics[label] == f"{b.bits_per_dim:.3f} ± {b.stderr:.3f}"
        assert b.bits_per_dim == pytest.approx(b.prior + b.kl + b.decoder)
        assert 0 < b.bits_per_dim < math.log2(17)  # better than a uniform guess over the digits' 17 levels
    spec = chart(at, "bound_terms")
    lines = [d for d in spec["data"] if d["type"] == "scatter"]
    bars = [d for d in spec["data"] if d["type"] == "bar"]
    assert [len(d["x"]) for d in lines] == [999, 999] and lines[0]["x"][0] == 2
    assert lines[0]["y"] == pytest.approx(bounds["posterior"].per_t[1:].tolist())
    assert bars[0]["x"] == ["L_T", "L_0"] and bars[0]["y"] == pytest.approx([bounds["posterior"].prior,
                                                                             bounds["posterior"].decoder])  # fmt: skip
    assert latex("kl_term") in _equations(at) and latex("decoder") in _equations(at)
    assert any("3 of the 1797 images of the 8×8 digits; every t summed" in t for t in texts(at))


def test_a_stratified_estimate_draws_one_t_per_stratum(at):
    measure(at, DIGITS, 4, terms="strata", strata=5)
    b = view(at).bounds["posterior"]
    assert not b.full and b.strata == 5 and b.evaluations == 4 * 6
    assert int(b.draws.sum()) == 4 * 6  # L_0 and one t in each stratum, per sample
    line = next(d for d in chart(at, "bound_terms")["data"] if d["type"] == "scatter")
    assert line["mode"] == "markers" and 1 <= len(line["x"]) <= 4 * 5
    assert any("one t in each of 5 strata" in t for t in texts(at))


def test_a_2d_model_is_compared_with_its_exact_ode_likelihood(at):
    measure(at, MOONS, 40)
    ode = view(at).ode
    assert ode is not None and ode.bits_per_dim.shape == (40,)
    assert _metrics(at)["Exact NLL, probability-flow ODE (bits/dim)"].startswith(f"{ode.mean_bits_per_dim:.3f} ±")
    scatter = chart(at, "bound_ode")["data"][0]
    assert scatter["x"] == pytest.approx(ode.bits_per_dim.tolist())
    assert latex("ode_likelihood") in _equations(at) and latex("decoder_points") in _equations(at)
    assert any("− exact NLL = **" in t for t in texts(at))


def test_the_classroom_caps_the_work_and_a_link_restores_the_view(tmp_path, monkeypatch):
    in_classroom(tmp_path, monkeypatch, "[sampling]\nmax_steps = 100\n")
    at = open_link("bound.py", checkpoint="digits", n="5", seed="3")
    assert at.number_input(key="n").value == 5 and at.number_input(key="seed").value == 3
    assert at.button(key="measure_bound").disabled  # every t of T = 1000 is more than 100 steps a request
    assert any("more than this server allows" in w.value for w in at.warning)
    at.radio(key="terms").set_value("strata")
    rerun(at)
    at.slider(key="strata").set_value(20)
    rerun(at)
    assert not at.button(key="measure_bound").disabled
    at.button(key="measure_bound").click()
    rerun(at)
    assert view(at).bounds["beta"].strata == 20 and torch.isfinite(view(at).bounds["beta"].per_sample).all()
