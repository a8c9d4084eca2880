"""AppTest helpers shared by the page tests: open a page of the real app, rerun and fail on any exception."""

from __future__ import annotations

import json

from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT


def rerun(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def open_page(file: str) -> AppTest:
    """The app started from explorer/app.py (as `streamlit run` does), then switched to pages/<file>; the timeout
    allows for torch's import."""
    at = AppTest.from_file(str(ROOT / "explorer" / "app.py"), default_timeout=60)
    rerun(at)
    at.switch_page(str(ROOT / "pages" / file))
    return rerun(at)


def texts(at: AppTest) -> list[str]:
    """The page's markdown and captions, in order."""
    return [el.value for el in [*at.markdown, *at.caption]]


def image_captions(at: AppTest) -> list[str]:
    return [c for el in at.get("image") for c in el.captions]


def chart(at: AppTest, key: str) -> dict:
    """The spec of the plotly chart whose element id ends with key."""
    (spec,) = [json.loads(c.proto.spec) for c in at.get("plotly_chart") if c.proto.id.endswith(key)]
    return spec
