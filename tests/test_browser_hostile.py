"""A hostile link in a real browser: `streamlit run` + chromium (the fixtures of tests/conftest.py and
tests/test_browser.py). ?seed=inf used to show the notice and then Streamlit's OverflowError traceback."""

import pytest

from tests.test_browser import no_exception, wait_for_app

pytestmark = pytest.mark.browser


def test_an_infinite_seed_in_a_link_shows_the_notice_and_no_traceback(app_url, page):
    page.goto(f"{app_url}/sample?seed=inf")
    page.get_by_text("The link's seed=inf is not an integer").wait_for(timeout=60_000)
    wait_for_app(page)
    no_exception(page)
    text = page.inner_text("body")
    assert "Traceback" not in text and "OverflowError" not in text
    assert "seed=inf" not in page.url  # the bad value left the address bar: reloading or sharing it is clean
