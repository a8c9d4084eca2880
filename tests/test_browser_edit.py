"""The Edit page in a real browser: `streamlit run` + Debian chromium driven by Playwright (tests/test_browser.py's
fixtures). One method on the bundled 8×8 digits, with few steps."""

import pytest

from tests.conftest import ARTIFACTS
from tests.test_browser import no_exception, wait_for_app

pytestmark = pytest.mark.browser


def test_inpainting_on_the_edit_page_shows_its_result_and_chain(app_url, page):
    page.goto(f"{app_url}/edit?checkpoint=digits&method=Inpainting&steps=5")
    page.locator(".katex").first.wait_for(timeout=60_000)  # the method's equation was typeset
    wait_for_app(page)
    page.get_by_role("button", name="Run").click()
    page.get_by_text("inpainted").first.wait_for(timeout=120_000)
    page.locator("img[src^='data:image/gif']").wait_for(timeout=60_000)
    wait_for_app(page)
    assert page.locator("[data-testid='stImage'] img").count() >= 4  # x_0 twice, the mask, what is kept, the result
    no_exception(page)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "edit-inpaint.png"), full_page=True)


def test_a_mask_painted_with_the_brush_is_the_one_inpainted(app_url, page):
    page.goto(f"{app_url}/edit?checkpoint=digits&method=Inpainting&steps=5&mask=paint+it+%28brush+or+rectangles%29")
    page.get_by_text("Nothing painted yet").wait_for(timeout=60_000)
    wait_for_app(page)
    canvas = page.locator("canvas").last  # Fabric.js's top canvas takes the pointer
    canvas.wait_for(timeout=30_000)
    canvas.scroll_into_view_if_needed()  # the mouse reaches only what is in the viewport
    page.wait_for_timeout(300)
    box = canvas.bounding_box()
    assert box is not None and box["width"] == box["height"] == 224  # 28 canvas pixels per pixel of the 8×8 digit
    y = box["y"] + 14  # along the digit's top row of pixels
    page.mouse.move(box["x"] + 10, y, steps=10)  # like a hand: a pointer that jumps may miss Fabric.js's mousedown
    page.mouse.down()
    for k in range(1, 21):
        page.mouse.move(box["x"] + 10 + k * 10, y, steps=3)
    page.mouse.up()
    page.get_by_text("pixels regenerated").wait_for(timeout=30_000)
    caption = page.get_by_text("pixels regenerated").first.inner_text()
    regenerated = int(caption.split("the mask: ")[1].split(" of")[0])
    assert 6 <= regenerated <= 16, caption  # the top row (8 pixels), and the brush may reach into the second
    page.get_by_role("button", name="Run").click()
    page.get_by_text("inpainted").first.wait_for(timeout=120_000)
    wait_for_app(page)
    assert page.get_by_text("mask painted: red = regenerate").count() == 1
    assert page.get_by_role("button", name="Download inpainted.npy").count() == 1
    no_exception(page)
    page.screenshot(path=str(ARTIFACTS / "edit-paint.png"), full_page=True)
