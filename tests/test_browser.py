"""The real app in a real browser: `streamlit run` + Debian chromium driven by Playwright."""

import pytest

from tests.conftest import ARTIFACTS

pytestmark = pytest.mark.browser


def wait_for_app(page) -> None:
    page.wait_for_selector("[data-testid='stApp']", timeout=30_000)
    # The script has finished once the status widget stops saying it is running.
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
        " || !document.querySelector('[data-testid=\"stStatusWidget\"]').innerText.includes('Running')",
        timeout=60_000,
    )


def test_home_page_renders_with_equations_and_device(app_url, page):
    page.goto(app_url)
    page.get_by_role("heading", name="DDPM Explorer").wait_for(timeout=60_000)
    wait_for_app(page)
    page.get_by_text("Device found").wait_for()
    assert page.locator(".katex").count() >= 3  # the st.latex equations were typeset
    assert page.locator("[data-testid='stException']").count() == 0
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "home.png"), full_page=True)
