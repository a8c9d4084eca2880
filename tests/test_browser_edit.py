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
