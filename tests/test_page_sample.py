"""The Sample page through Streamlit's AppTest: checkpoints, sampling with a GIF, the scrubber, 2D points, a broken
checkpoint, and the DDPM-vs-DDIM grid. Sampling is real (bundled checkpoints, few steps, small N)."""

from __future__ import annotations

import base64
import io
import re
import shutil

import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

from ddpm_core.gif import MAX_GIF_WIDTH
from ddpm_core.runs import load_checkpoint
from explorer.sample_widgets import gif_images
from tests.apptest_helpers import chart, image_captions, open_page, rerun, texts
from tests.conftest import ROOT

BUNDLED = ROOT / "assets" / "checkpoints"
DIGITS, MOONS = str(BUNDLED / "digits.safetensors"), str(BUNDLED / "moons.safetensors")
MNIST = str(BUNDLED / "mnist.safetensors")
GIF_URI = re.compile(r'src="data:image/gif;base64,([A-Za-z0-9+/=]+)"')


@pytest.fixture
def runs_root(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    root.mkdir()
    monkeypatch.setenv("DDPM_EXPLORER_RUNS", str(root))
    return root


@pytest.fixture
def at(runs_root) -> AppTest:
    return open_page("sample.py")


def generate(at: AppTest, checkpoint: str = DIGITS, n: int = 9, steps: int = 10) -> AppTest:
    """DDIM with few steps: the cheapest real sampling."""
    at.selectbox(key="checkpoint").set_value(checkpoint)
    rerun(at)
    at.radio(key="sampler").set_value("ddim")
    rerun(at)
    at.number_input(key="steps").set_value(steps)
    at.number_input(key="n").set_value(n)
    at.button(key="generate").click()
    return rerun(at)


def captions(at: AppTest) -> list[str]:
    return [c.value for c in at.caption]


def gif(at: AppTest) -> Image.Image:
    """The GIF the page shows, decoded from its data URI."""
    found = [m for el in at.markdown if (m := GIF_URI.search(el.value))]
    assert len(found) == 1
    return Image.open(io.BytesIO(base64.b64decode(found[0][1])))


def test_page_renders_lists_the_bundled_checkpoints_and_shows_the_config(at):
    assert at.title[0].value == "Sample" and not at.error
    labels = at.selectbox(key="checkpoint").options
    assert labels == [
        "mnist",
        "digits",
        "8gaussians",
        "digits_cond",
        "moons",
        "swiss_roll",
    ]  # short: a label is also the link's value
    params = sum(p.numel() for p in load_checkpoint(MNIST).model.parameters())  # the default: MNIST 28×28
    table = next(t for t in texts(at) if t.startswith("| setting | value |"))
    assert f"{params:,} parameters" in table and "| T | 1,000 |" in table and "mnist" in table
    assert "UNet on 2×2 patches" in table
    assert at.number_input(key="n").max == 256 and at.checkbox(key="clip_x0").value  # images: clip by default
    assert any("Press **Generate**" in i.value for i in at.info)


def test_an_image_model_opens_on_ddim_50_with_its_expected_time(at):
    """A newcomer's first Generate: DDIM with 50 steps (seconds on a laptop CPU), its cost shown before the click."""
    assert (at.radio(key="sampler").value, at.number_input(key="steps").value) == ("ddim", 50)
    latex = " ".join(e.value for e in at.latex)
    assert r"\text{predicted } x_0" in latex
    expected = next(c for c in captions(at) if c.startswith("Expected time: about"))
    assert "50 network calls ×" in expected and "for a batch of 64, measured on this machine" in expected
    at.radio(key="sampler").set_value("ddpm")  # all 1,000 steps, one click away
    rerun(at)
    expected = next(c for c in captions(at) if c.startswith("Expected time: about"))
    assert "1,000 network calls ×" in expected and ". DDIM with 50 steps: about" in expected
    seconds = re.search(r"about \*\*([\d.]+) (s|min)\*\*", expected)
    ddim = re.search(r"DDIM with 50 steps: about ([\d.]+) (s|min)", expected)
    to_s = {"s": 1, "min": 60}
    ratio = float(seconds[1]) * to_s[seconds[2]] / (float(ddim[1]) * to_s[ddim[2]])
    assert ratio == pytest.approx(20, rel=0.05)  # the same measured call, 1,000 against 50 of them
    at.selectbox(key="checkpoint").set_value(MOONS)
    rerun(at)  # 2D points: T = 200 steps of a small MLP take a second; the page opens them on DDPM
    assert at.radio(key="sampler").value == "ddpm"
    at.selectbox(key="checkpoint").set_value(MNIST)
    rerun(at)
    assert at.radio(key="sampler").value == "ddim"


def test_the_expected_time_counts_guidance_as_a_double_batch(at):
    at.selectbox(key="checkpoint").set_value(str(BUNDLED / "digits_cond.safetensors"))
    rerun(at)
    at.number_input(key="n").set_value(16)
    rerun(at)
    guided = next(c for c in captions(at) if c.startswith("Expected time: about"))
    assert "50 network calls ×" in guided and "for a batch of 32" in guided  # ε_θ(x, y) and ε_θ(x, ∅) in one pass
    at.slider(key="guidance").set_value(1.0)
    rerun(at)
    assert any("for a batch of 16" in c for c in captions(at))


def test_equation_follows_the_sampler_and_variance(at):
    at.radio(key="sampler").set_value("ddpm")
    rerun(at)
    latex = " ".join(e.value for e in at.latex)
    assert r"\frac{1}{\sqrt{\alpha_t}}" in latex and r"\tilde\beta_t" in latex  # σ_t² = β̃_t, as in the CLI
    at.radio(key="variance").set_value("beta")
    rerun(at)
    latex = " ".join(e.value for e in at.latex)
    assert r"\sigma_t^2 = \beta_t" in latex and r"\tilde\beta_t" not in latex
    at.radio(key="sampler").set_value("ddim")
    rerun(at)
    at.slider(key="eta").set_value(0.5)
    rerun(at)
    latex = " ".join(e.value for e in at.latex)
    assert r"\text{predicted } x_0" in latex and r"\eta = 0.5" in latex and r"\frac{1}{\sqrt{\alpha_t}}" not in latex


def test_generate_shows_samples_an_animated_gif_downloads_and_the_metric(at):
    generate(at, n=9, steps=10)
    picture = gif(at)
    assert picture.n_frames == 11 and picture.width <= MAX_GIF_WIDTH  # x_T, 10 steps… the last is x_0
    result = at.session_state["sample.result"]
    assert result.result.samples.shape == (9, 1, 8, 8) and len(result.result.timesteps) == 10
    buttons = {b.proto.id.rsplit("-", 1)[-1]: b.proto.label for b in at.get("download_button")}
    assert set(buttons) == {"download_gif", "download_png"}
    assert any(f"in **{result.result.wall_time:.2f} s**" in t for t in texts(at))
    metrics = {m.label: m.value for m in at.metric}
    assert float(metrics["Pixel-FD"]) == pytest.approx(result.metric["pixel_fd"], abs=1e-3)
    assert 0 < float(metrics["Classifier confidence"]) <= 1
    assert any("noisy for small N" in t for t in texts(at))
    assert sum(chart(at, "class_histogram")["data"][0]["y"]) == 9


def test_the_scrubber_shows_any_recorded_step_without_resampling(at):
    generate(at, n=4, steps=10)
    result = at.session_state["sample.result"]
    assert at.select_slider(key="frame").value == 10  # starts on the samples, t = 0
    assert any(t.startswith("**t = 0**") for t in texts(at))
    at.select_slider(key="frame").set_value(2)
    rerun(at)
    assert any(t.startswith("**t = 800**") for t in texts(at))
    assert {"x_t at t = 800", "x̂₀ at t = 800"} <= set(image_captions(at))
    assert at.session_state["sample.result"] is result  # the same run, not a new one


def test_a_2d_checkpoint_animates_its_point_cloud(at):
    at.selectbox(key="checkpoint").set_value(MOONS)
    rerun(at)
    assert not at.checkbox(key="clip_x0").value and at.number_input(key="n").max == 2000  # points: no clipping
    generate(at, MOONS, n=50, steps=10)
    assert gif(at).n_frames == 11
    spec = chart(at, "animation")
    assert len(spec["frames"]) == 11 and [f["name"] for f in spec["frames"]][:2] == ["1000", "900"]
    lim = spec["layout"]["xaxis"]["range"][1]
    assert spec["layout"]["xaxis"]["range"] == spec["layout"]["yaxis"]["range"] == [-lim, lim]
    assert spec["layout"]["updatemenus"][0]["buttons"][0]["method"] == "animate"
    assert {"MMD²", "Sliced Wasserstein-1"} <= {m.label for m in at.metric}
    assert at.session_state["sample.result"].result.samples.shape == (50, 2)


@pytest.mark.parametrize("damage", ["truncated", "pickle"])
def test_a_broken_checkpoint_shows_an_error_and_the_page_still_works(runs_root, damage):
    good, broken = runs_root / "good", runs_root / "broken"
    good.mkdir()
    broken.mkdir()
    shutil.copy(MOONS, good / "model.safetensors")
    if damage == "truncated":
        (broken / "ema.safetensors").write_bytes((BUNDLED / "digits.safetensors").read_bytes()[:5000])
    else:
        torch.save({"weights": torch.zeros(3)}, broken / "ema.safetensors")
    at = open_page("sample.py")
    options = at.selectbox(key="checkpoint").options
    assert "broken" in options and "good (raw weights)" in options
    at.selectbox(key="checkpoint").set_value(str(broken / "ema.safetensors"))
    rerun(at)
    assert len(at.error) == 1 and "not a readable safetensors checkpoint" in at.error[0].value
    assert "broken" in at.error[0].value
    at.selectbox(key="checkpoint").set_value(str(good / "model.safetensors"))
    rerun(at)
    assert not at.error
    generate(at, str(good / "model.safetensors"), n=20, steps=5)
    assert gif(at).n_frames == 6


def test_ddpm_vs_ddim_fills_a_grid_from_one_seed(at):
    at.selectbox(key="checkpoint").set_value(DIGITS)  # the digits have a classifier's metric under each cell
    rerun(at)
    assert at.multiselect(key="compare_settings").value == ["DDIM-50", "DDIM-20", "DDIM-10"]
    at.number_input(key="n").set_value(4)
    at.multiselect(key="compare_settings").set_value(["DDIM-20", "DDIM-10"])
    at.button(key="compare").click()
    rerun(at)
    cells = at.session_state["sample.compare"].cells
    assert [c.steps for c in cells] == [20, 10] and all(c.samples.shape == (4, 1, 8, 8) for c in cells)
    shown = [t for t in texts(at) if " steps in **" in t]
    assert [t.split(" — ")[0] for t in shown] == ["**DDIM-20**", "**DDIM-10**"]
    assert {"DDIM-20", "DDIM-10"} <= set(image_captions(at))
    assert sum("confidence" in t for t in texts(at)) == 2  # a metric under each cell


def test_the_default_mnist_model_samples_and_its_gif_shows_a_few_digits(at):
    assert at.selectbox(key="checkpoint").value == MNIST
    generate(at, MNIST, n=64, steps=5)
    assert at.session_state["sample.result"].result.samples.shape == (64, 1, 28, 28)
    picture = gif(at)
    assert picture.n_frames == 6
    sizes = {gif_images((64, 1, 8, 8)), gif_images((64, 1, 28, 28)), gif_images((3, 1, 28, 28))}
    assert sizes == {64, 16, 3}  # 64 digits of 8×8, 16 of MNIST's 28×28, never more than drawn
    digits = generate(open_page("sample.py"), DIGITS, n=64, steps=5)
    assert picture.width < gif(digits).width  # a 4 × 4 grid of MNIST digits, narrower than 8 × 8 digits
