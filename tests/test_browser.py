"""The real app in a real browser: `streamlit run` + Debian chromium driven by Playwright."""

import time

import pytest

from explorer.ui import PAGES
from tests.conftest import ARTIFACTS

pytestmark = pytest.mark.browser


def wait_for_app(page) -> None:
    """Until the script run has finished: the app is mounted and the status widget no longer says Running."""
    page.wait_for_selector("[data-testid='stApp']", timeout=30_000)
    page.wait_for_function(
        "() => { const w = document.querySelector('[data-testid=\"stStatusWidget\"]');"
        " return !w || !w.innerText.includes('Running'); }",
        timeout=60_000,
    )


# What shows that a page has finished drawing (its last, slowest element)
READY = {"forward.py": "[data-testid='stImage'] img", "schedules.py": ".js-plotly-plot"}


def launch_named(page, name: str) -> None:
    """On the Train page: type the run's name, then press Launch."""
    box = page.get_by_label("Run name")
    box.fill(name)
    box.press("Enter")
    wait_for_app(page)
    page.get_by_role("button", name="Launch").click()


def url_path(file: str) -> str:
    return "" if file == "home.py" else file.removesuffix(".py")


def test_home_page_renders_with_equations_and_device(app_url, page):
    page.goto(app_url)
    page.get_by_role("heading", name="DDPM Explorer").wait_for(timeout=60_000)
    wait_for_app(page)
    page.get_by_text("Device found").wait_for()
    page.locator(".katex").nth(2).wait_for(timeout=30_000)  # the three st.latex equations were typeset
    assert page.locator("[data-testid='stException']").count() == 0


@pytest.mark.parametrize("info", PAGES, ids=[p.file for p in PAGES])
def test_every_page_renders_without_exception(app_url, page, info):
    page.goto(f"{app_url}/{url_path(info.file)}")
    page.get_by_role("heading", name=info.title if info.file != "home.py" else "DDPM Explorer").first.wait_for(
        timeout=60_000
    )
    page.locator(".katex").first.wait_for(timeout=60_000)  # each page shows the equation it visualises
    page.locator(READY.get(info.file, ".katex")).first.wait_for(timeout=60_000)
    wait_for_app(page)
    assert page.locator("[data-testid='stException']").count() == 0
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{info.file.removesuffix('.py')}.png"), full_page=True)


def no_exception(page) -> None:
    assert page.locator("[data-testid='stException']").count() == 0


def test_moving_t_changes_the_noised_image(app_url, page):
    page.goto(f"{app_url}/forward")
    image = page.locator("[data-testid='stImage'] img").first
    image.wait_for(timeout=60_000)
    wait_for_app(page)
    page.get_by_text("1×28×28 values").wait_for()  # the default x_0: a bundled MNIST digit
    page.get_by_text("MNIST test image #8,010").wait_for()
    before = image.get_attribute("src")
    slider = page.locator("input[type='range'][aria-label='t (index)']")
    start = int(slider.get_attribute("value"))
    slider.focus()
    page.keyboard.press("ArrowRight")
    page.wait_for_function(
        "([sel, src]) => { const i = document.querySelector(sel); return i && i.getAttribute('src') !== src; }",
        arg=["[data-testid='stImage'] img", before],
        timeout=30_000,
    )
    assert int(slider.get_attribute("value")) == start + 1
    wait_for_app(page)
    no_exception(page)


def test_adding_a_schedule_adds_traces(app_url, page):
    page.goto(f"{app_url}/schedules")
    traces = page.locator(".js-plotly-plot .scatterlayer .trace")
    traces.first.wait_for(timeout=60_000)
    wait_for_app(page)
    before = traces.count()
    box = page.get_by_label("Schedules to compare")
    box.fill("3")
    box.press("Enter")
    page.wait_for_function(
        f"() => document.querySelectorAll('.js-plotly-plot .scatterlayer .trace').length > {before}", timeout=30_000
    )
    wait_for_app(page)
    no_exception(page)


def test_a_bad_upload_is_rejected_and_a_good_one_is_noised(app_url, page, tmp_path):
    import numpy as np
    from PIL import Image

    good, bad = tmp_path / "photo.png", tmp_path / "broken.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 90, 3), dtype=np.uint8)).save(good)
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 20)
    page.goto(f"{app_url}/forward")
    page.locator("[data-testid='stImage'] img").first.wait_for(timeout=60_000)
    wait_for_app(page)
    page.locator("[data-testid='stSelectbox']").filter(has_text="Image").last.click()
    page.get_by_role("option", name="Upload an image (PNG or JPEG)").click()
    uploader = page.locator("input[type='file']")
    uploader.wait_for(state="attached", timeout=30_000)
    uploader.set_input_files(str(bad))
    page.locator("[data-testid='stAlert']").filter(has_text="broken.png").wait_for(timeout=30_000)
    no_exception(page)
    uploader.set_input_files(str(good))
    page.locator("[data-testid='stAlert']").filter(has_text="broken.png").wait_for(state="detached", timeout=30_000)
    page.locator("[data-testid='stImage'] img").first.wait_for(timeout=30_000)
    wait_for_app(page)
    no_exception(page)


def test_a_newcomers_first_generate_samples_mnist_with_ddim_50_and_shows_an_animated_gif(app_url, page):
    page.goto(f"{app_url}/sample")
    page.locator(".katex").first.wait_for(timeout=60_000)
    wait_for_app(page)
    page.get_by_text("UNet on 2×2 patches", exact=False).first.wait_for()  # the bundled MNIST model is the default
    assert page.get_by_role("spinbutton", name="Steps").input_value() == "50"  # DDIM-50: no clicks needed
    page.get_by_text("Expected time: about", exact=False).first.wait_for()  # shown before Generate
    page.get_by_role("button", name="Generate").click()
    gif = page.locator("img[src^='data:image/gif']")
    gif.wait_for(timeout=120_000)
    wait_for_app(page)
    no_exception(page)
    assert gif.evaluate("i => i.naturalWidth") <= 1460
    gif.scroll_into_view_if_needed()
    first, deadline = gif.screenshot(), time.monotonic() + 10
    while gif.screenshot() == first:  # each screenshot takes ~50-100 ms: a poll, not a sleep
        assert time.monotonic() < deadline, "the GIF is frozen on its first frame"
    page.get_by_text("Download the GIF").wait_for()
    page.get_by_text("Download the samples (PNG)").wait_for()


LOSS_POINTS = """() => { const p = [...document.querySelectorAll('.js-plotly-plot')]
    .find(p => p.layout && p.layout.title && p.layout.title.text.includes('Training loss'));
    return p ? p.data[0].x.length : 0; }"""


def test_a_training_run_updates_its_loss_live_and_stops(app_url, page):
    page.set_viewport_size({"width": 1400, "height": 3200})  # the app scrolls inside its own container
    page.goto(f"{app_url}/train")
    page.locator(".katex").first.wait_for(timeout=60_000)
    wait_for_app(page)
    for label, value in (("Steps", 3000), ("Width (base channels)", 8)):
        box = page.get_by_label(label, exact=True)
        box.fill(str(value))
        box.press("Enter")
        wait_for_app(page)
    launch_named(page, "browser-run")
    page.get_by_text("Launched browser-run").wait_for(timeout=30_000)
    page.wait_for_function(f"() => ({LOSS_POINTS})() >= 1", timeout=120_000)
    page.wait_for_function(f"() => ({LOSS_POINTS})() >= 3", timeout=120_000)  # the chart updated at least twice
    page.get_by_role("button", name="Stop").click()
    page.get_by_text("browser-run — stopped").first.wait_for(timeout=60_000)
    page.get_by_role("button", name="Resume").wait_for(timeout=60_000)
    no_exception(page)


def test_a_link_restores_the_view_and_follows_the_widgets(app_url, page):
    page.goto(f"{app_url}/forward?t=500&schedule=cosine&seed=7")
    page.get_by_text("x_t at t = 500").wait_for(timeout=60_000)
    wait_for_app(page)
    box = page.get_by_label("t", exact=True)
    box.fill("123")
    box.press("Enter")
    page.get_by_text("x_t at t = 123").wait_for(timeout=30_000)
    wait_for_app(page)
    assert "t=123" in page.url and "schedule=cosine" in page.url  # the address is the link to the view
    page.get_by_text("Copy link to this view").click()
    link = page.locator("[data-testid='stCode']").first.inner_text()
    assert "/forward?" in link and "t=123" in link and "seed=7" in link
    page.goto(f"{app_url}/forward?t=abc")
    page.get_by_text("The link's t=abc is not an integer").wait_for(timeout=60_000)
    no_exception(page)


def test_guidance_and_importance_on_the_sample_page(app_url, page):
    page.set_viewport_size({"width": 1400, "height": 3200})
    page.goto(f"{app_url}/sample?checkpoint=digits_cond&class_label=7&guidance=3.0&sampler=DDIM&steps=10&n=16"
              "&guidance_scales=0&guidance_scales=4")  # fmt: skip
    page.get_by_text("Guidance scale s").wait_for(timeout=60_000)
    wait_for_app(page)
    page.get_by_role("button", name="Generate").click()
    page.locator("img[src^='data:image/gif']").wait_for(timeout=120_000)
    wait_for_app(page)
    page.get_by_text("Guidance scales: one x_T, every class").click()
    page.get_by_role("button", name="Sample the grid").click()
    page.get_by_text("classifier agrees").first.wait_for(timeout=180_000)
    wait_for_app(page)
    captions = page.locator("[data-testid='stImageCaption']").all_inner_texts()
    assert [c for c in captions if c.startswith("s = ")] == ["s = 0", "s = 4"]  # the link's scales, none else
    assert "guidance_scales=0&guidance_scales=4" in page.url
    page.get_by_text("Which noise levels are hard").click()
    page.get_by_role("button", name="Measure").click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('.js-plotly-plot')].some(p => p.data && p.data.some("
        "t => t.name === 'ε-error of this model'))",
        timeout=120_000,
    )
    no_exception(page)
    page.screenshot(path=str(ARTIFACTS / "sample-guidance.png"), full_page=True)


def test_the_train_page_explains_the_prediction_target(app_url, page):
    page.goto(f"{app_url}/train?prediction_type=v%20(Salimans%20%26%20Ho)")
    page.locator(".katex").first.wait_for(timeout=60_000)
    wait_for_app(page)
    page.get_by_text("Objective, classes and fine-tuning").click()
    page.get_by_text("Prediction target").wait_for(timeout=30_000)
    sources = page.locator(".katex annotation").evaluate_all("els => els.map(e => e.textContent)")
    assert any(r"v &= \sqrt{\bar\alpha_t}" in tex for tex in sources)  # the v-target's equation
    no_exception(page)
