"""The Edit page through Streamlit's AppTest: SDEdit, inpainting, inversion and interpolation on the bundled 8×8
digits and the 2D moons, with few DDIM steps; an upload that is not an image; the classroom's cap on steps; a link
that restores the view."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from ddpm_core.equations import latex
from explorer.classroom import ENVIRONMENT
from tests.apptest_helpers import chart, image_captions, in_classroom, open_link, open_page, rerun, texts
from tests.conftest import ROOT

BUNDLED = ROOT / "assets" / "checkpoints"
DIGITS, MOONS = str(BUNDLED / "digits.safetensors"), str(BUNDLED / "moons.safetensors")
GIF_URI = re.compile(r'src="data:image/gif;base64,([A-Za-z0-9+/=]+)"')


@pytest.fixture
def at(tmp_path, monkeypatch) -> AppTest:
    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "runs").mkdir()
    monkeypatch.setenv("DDPM_EXPLORER_RUNS", str(tmp_path / "runs"))
    return open_page("edit.py")


def choose(at: AppTest, method: str, checkpoint: str = DIGITS, steps: int = 5) -> AppTest:
    at.selectbox(key="checkpoint").set_value(checkpoint)
    rerun(at)
    at.radio(key="method").set_value(method)
    rerun(at)
    at.slider(key="steps").set_value(steps)
    return rerun(at)


def run(at: AppTest, method: str) -> AppTest:
    at.button(key=f"run_{method}").click()
    rerun(at)
    assert not at.error, [e.value for e in at.error]
    return at


def result(at: AppTest) -> dict:
    return at.session_state["edit.result"].out


def test_the_page_opens_on_sdedit_with_its_equation_and_runs_nothing_yet(at):
    assert at.title[0].value == "Edit" and not at.error
    assert at.radio(key="method").options == ["SDEdit", "Inpainting", "Inversion", "Interpolation"]
    (shown,) = [e.value for e in at.latex]
    assert latex("sdedit") in shown
    assert any("Press **Run**" in i.value for i in at.info)
    assert "edit.result" not in at.session_state
    for method, equation in (("inpaint", "repaint"), ("invert", "ddim_inversion"), ("interpolate", "slerp")):
        at.radio(key="method").set_value(method)
        rerun(at)
        assert any(latex(equation) in e.value for e in at.latex)


def test_sdedit_shows_the_result_and_a_strip_over_t_start(at):
    choose(at, "sdedit")
    at.slider(key="t_start").set_value(300)
    run(at, "sdedit")
    out = result(at)
    assert out["t_start"] == 300 and out["steps"] == 5
    assert "edited from t₀ = 300" in image_captions(at)
    strip = Image.open(io.BytesIO(out["strip"]))
    assert strip.width > 6 * strip.height / 2  # six pictures side by side: t₀ = 0, 200 … 1000
    assert any("how much survives" in c for c in image_captions(at))


def test_sdedit_from_t_start_0_returns_the_input(at):
    choose(at, "sdedit")
    at.slider(key="t_start").set_value(0)
    run(at, "sdedit")
    shown = {c: el for el in at.get("image") for c in el.captions}
    assert result(at)["steps"] == 0 and "edited from t₀ = 0" in shown


def test_inpainting_shows_input_mask_result_and_a_gif(at):
    choose(at, "inpaint")
    presets = ["left", "right", "top", "bottom", "center", "random"]
    assert at.selectbox(key="mask").options == [*presets, "paint it (brush or rectangles)"]
    at.selectbox(key="mask").set_value("left")
    at.number_input(key="resample").set_value(2)
    run(at, "inpaint")
    assert {"x_0: the input", "mask left: red = regenerate", "what is kept", "inpainted"} <= set(image_captions(at))
    (found,) = [m for el in at.markdown if (m := GIF_URI.search(el.value))]
    gif = Image.open(io.BytesIO(base64.b64decode(found[1])))
    assert gif.n_frames >= 2
    assert result(at)["evaluations"] == 9  # 5 steps, one jump back at each of the 4 inner ones
    files = result(at)["files"]
    buttons = {b.proto.id.rsplit("-", 1)[-1] for b in at.get("download_button")}
    assert buttons == {f"download_edit_{name}" for name in files} == {
        "download_edit_inpainted.npy", "download_edit_inpainted.png", "download_edit_inpainted.gif"}  # fmt: skip
    served = np.load(io.BytesIO(files["inpainted.npy"]))  # the bytes the .npy button serves
    assert served.shape == (1, 1, 8, 8) and served.dtype == np.float32
    assert np.asarray(Image.open(io.BytesIO(files["inpainted.png"]))).ndim == 3
    assert Image.open(io.BytesIO(files["inpainted.gif"])).n_frames == gif.n_frames


def test_inpainting_jumps_back_j_steps_at_a_time(at):
    choose(at, "inpaint", steps=6)
    at.number_input(key="resample").set_value(3)
    at.number_input(key="jump").set_value(2)
    run(at, "inpaint")
    # 6 steps; at positions 2 and 4 the walk goes back 2 steps, twice each: 6 + 2 × 2 × 2 network calls
    assert result(at)["evaluations"] == 14 and result(at)["jump"] == 2
    assert any("U = 3, j = 2: 14 network calls" in t for t in texts(at))
    at.number_input(key="jump").set_value(7)  # more than the steps: refused by the widget, not the core
    rerun(at)
    assert at.number_input(key="jump").value <= 6


def test_a_painted_mask_waits_for_paint_before_running(at):
    choose(at, "inpaint")
    at.selectbox(key="mask").set_value("paint it (brush or rectangles)")
    rerun(at)
    assert not at.error and at.radio(key="paint_tool").options == ["Brush", "Rectangles"]
    assert any("Nothing painted yet" in i.value for i in at.info)
    assert at.button(key="run_inpaint").disabled and any("Paint a mask first." in w.value for w in at.warning)


def test_inversion_shows_the_round_trip_and_its_error_curve(at):
    choose(at, "invert")
    run(at, "invert")
    out = result(at)
    metric = {m.label: m.value for m in at.metric}["RMS round-trip error"]
    assert float(metric) == pytest.approx(out["error"], abs=1e-4) and out["error"] >= 0
    spec = chart(at, "round_trip")
    assert spec["data"][0]["x"] == [5, 10, 20, 50] and len(spec["data"][0]["y"]) == 4
    assert any(c.startswith("x_0 → x_T → x̂_0") for c in image_captions(at))
    x_T, back = (np.load(io.BytesIO(out["files"][name])) for name in ("x_T.npy", "reconstruction.npy"))
    assert x_T.shape == back.shape == (1, 1, 8, 8) and x_T.std() > 0.5  # a latent: noise-like, not the digit
    assert np.sqrt(np.mean((back - x_T) ** 2)) > 0.3  # x̂_0 is no copy of x_T
    labels = {b.proto.label for b in at.get("download_button")}
    assert labels == {"Download x_T.npy", "Download reconstruction.npy", "Download inversion.png"}


def test_interpolation_decodes_n_samples_between_two_seeds(at):
    choose(at, "interpolate")
    assert "Input" not in [s.value for s in at.subheader]  # no x_0 to pick
    at.number_input(key="seed_b").set_value(3)
    at.number_input(key="n").set_value(4)
    run(at, "interpolate")
    assert result(at)["samples"].shape == (4, 1, 8, 8)
    assert "seed 0 (λ = 0) → seed 3 (λ = 1)" in image_captions(at)


def test_a_2d_checkpoint_inpaints_a_coordinate_and_interpolates_points(at):
    choose(at, "inpaint", MOONS)
    assert at.selectbox(key="mask").options == ["x", "y"] and at.selectbox(key="mask").value == "x"
    run(at, "inpaint")
    assert any("the x coordinate of every point" in t for t in texts(at))
    at.radio(key="method").set_value("interpolate")
    rerun(at)
    at.number_input(key="n").set_value(5)
    run(at, "interpolate")
    assert result(at)["samples"].shape == (5, 2)
    assert len(chart(at, "interpolation_points")["data"][0]["x"]) == 5


def test_an_upload_that_is_not_an_image_is_an_error_and_a_good_one_is_used(at):
    choose(at, "sdedit")
    at.selectbox(key="source").set_value("upload")
    rerun(at)
    assert any("Upload a PNG or JPEG" in i.value for i in at.info)
    at.file_uploader(key="upload").set_value(("broken.png", b"\x89PNG\r\n\x1a\n not really", "image/png"))
    rerun(at)
    assert len(at.error) == 1 and "broken.png" in at.error[0].value
    picture = np.random.default_rng(0).integers(0, 255, (40, 30, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    at.file_uploader(key="upload").upload("photo.png", buffer.getvalue(), "image/png")
    rerun(at)
    assert not at.error and any("photo.png, resized to 8×8" in c for c in texts(at))
    run(at, "sdedit")
    assert at.session_state["edit.result"].key[2][0] == "upload"


def test_the_classroom_caps_the_steps_and_a_link_restores_the_view(tmp_path, monkeypatch):
    in_classroom(tmp_path, monkeypatch, "[sampling]\nmax_steps = 30\n")
    at = open_link("edit.py", checkpoint="digits", method="Inversion", steps="7")
    assert at.radio(key="method").value == "invert" and at.slider(key="steps").value == 7
    assert at.slider(key="steps").max == 30
    run(at, "invert")
    assert chart(at, "round_trip")["data"][0]["x"] == [5, 10, 20]  # 50 steps are over the cap


def test_work_over_the_classroom_budget_is_refused_with_a_reason(tmp_path, monkeypatch):
    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "runs").mkdir()
    monkeypatch.setenv("DDPM_EXPLORER_RUNS", str(tmp_path / "runs"))
    (tmp_path / "classroom.toml").write_text("[sampling]\nmax_n = 4\nmax_steps = 20\n", encoding="utf-8")
    monkeypatch.setenv("DDPM_EXPLORER_CONFIG", str(tmp_path / "classroom.toml"))
    at = choose(open_page("edit.py"), "inpaint", steps=20)
    at.number_input(key="resample").set_value(5)  # 5 chains of 20 steps: over 4 samples × 20 steps
    rerun(at)
    assert at.button(key="run_inpaint").disabled
    assert any("more than this server allows per request" in w.value for w in at.warning)
    at.radio(key="method").set_value("interpolate")
    rerun(at)
    assert at.number_input(key="n").max == 4 and not at.button(key="run_interpolate").disabled
