"""The Bound page in a real browser: `streamlit run` + Debian chromium driven by Playwright (tests/test_browser.py's
fixtures). The bundled 2D moons model, whose bound is measured next to its exact ODE likelihood."""

import pytest

from tests.conftest import ARTIFACTS
from tests.test_browser import no_exception, wait_for_app

pytestmark = pytest.mark.browser


def test_the_bound_page_measures_moons_against_its_ode_likelihood(app_url, page):
    page.goto(f"{app_url}/bound?checkpoint=moons&n=100")
    page.locator(".katex").first.wait_for(timeout=60_000)
    wait_for_app(page)
    page.get_by_role("button", name="Measure").click()
    page.get_by_text("The bound against the exact likelihood").wait_for(timeout=180_000)
    wait_for_app(page)
    page.get_by_text("− exact NLL =").wait_for(timeout=30_000)
    for label in ("Bound, σ_t² = β̃_t (bits/dim)", "Bound, σ_t² = β_t (bits/dim)", "Exact NLL, probability-flow ODE"):
        page.get_by_text(label).first.wait_for(timeout=30_000)  # the metrics may be drawn after the caption
        assert page.get_by_text(label).count() == 1, label
    assert page.locator("[data-testid='stPlotlyChart']").count() == 3  # the weights, the terms, bound against NLL
    assert page.locator(".katex-error").count() == 0  # every equation typeset
    no_exception(page)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "bound.png"), full_page=True)
