"""AppTest helpers shared by the page tests: open a page of the real app, rerun and fail on any exception."""

from __future__ import annotations

import json

from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT


def in_classroom(tmp_path, monkeypatch, classroom: str | None = None) -> None:
    """A clean environment for the app: no DDPM_EXPLORER_* variable of the machine's, an empty runs folder under
    tmp_path, and the classroom file's text when given."""
    from explorer.classroom import ENVIRONMENT

    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "runs").mkdir()
    monkeypatch.setenv("DDPM_EXPLORER_RUNS", str(tmp_path / "runs"))
    if classroom is not None:
        (tmp_path / "classroom.toml").write_text(classroom, encoding="utf-8")
        monkeypatch.setenv("DDPM_EXPLORER_CONFIG", str(tmp_path / "classroom.toml"))


def open_link(file: str, **query: str) -> AppTest:
    """The app opened on a link: pages/<file> with the query parameters given."""
    at = AppTest.from_file(str(ROOT / "explorer" / "app.py"), default_timeout=60)
    at.query_params.update(query)
    rerun(at)
    at.switch_page(str(ROOT / "pages" / file))
    return rerun(at)


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
