"""The app through Streamlit's AppTest: every page loads with no exception and shows what it promises."""

from streamlit.testing.v1 import AppTest

from explorer.ui import PAGES, PARTS, page_for
from tests.conftest import ROOT

APP = str(ROOT / "explorer" / "app.py")


def run_app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_home_explains_ddpm_and_the_four_parts():
    at = run_app()
    assert at.title[0].value == "DDPM Explorer"
    text = " ".join(m.value for m in at.markdown)
    links = {link.proto.page: link.proto.label for link in at.get("page_link")}
    for title, _ in PARTS:
        page = page_for(title)
        if page is None:
            assert title in text and "not in this build yet" in text
        else:  # a part whose page exists links to it
            assert title in links[page.file.removesuffix(".py")]
    assert "Device found" in text and ("CPU" in text or "GPU" in text)
    assert "metrics.jsonl" in text and "status.json" in text
    latex = " ".join(e.value for e in at.latex)
    assert r"\sqrt{\bar\alpha_t}\,x_0" in latex and r"\epsilon_\theta" in latex


def test_every_page_loads_without_exception():
    at = run_app()
    for page in PAGES:
        at.switch_page(f"../pages/{page.file}").run()
        assert not at.exception, (page.file, [e.value for e in at.exception])
