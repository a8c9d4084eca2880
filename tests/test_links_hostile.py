"""Hostile links never crash a page: whatever a stranger puts in the query string (inf, nan, 1e309, 10**30, text
where a number goes, control characters, repeated keys, unicode), every widget bound through explorer.links either
takes the value or draws its default with a notice, and the bad value leaves the URL — Streamlit's own binding,
which reads the URL after our check, never sees it (?seed=inf used to end in an OverflowError traceback).

First every bound key of the real Sample, Forward, Schedules and Train pages, found by running each page and
reading what explorer.links recorded (a new widget is covered without editing this file); then hypothesis over a
tiny script with one widget of each kind."""

from __future__ import annotations

import functools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from streamlit.testing.v1 import AppTest

from explorer.links import MAX_TEXT, PAGE
from tests.test_classroom_pages import root  # noqa: F401  (fixture: runs in tmp_path, no classroom setting)
from tests.test_links import open_with
from tests.test_page_train import hand_made_run

HOSTILE = ["inf", "-inf", "nan", "1e309", "-1e309", str(10**30), f"-{10**30}", "x", "ü", "🙂", "0x10", "1" * 5000]
NOT_TEXT = ["\x00", "a\nb", "é" * (MAX_TEXT + 1)]  # what a text widget refuses (any other string is a text)


def notices(at: AppTest) -> str:
    return "\n".join(w.value for w in at.warning)


def bound(at: AppTest) -> tuple[list[str], set[str]]:
    """The page's bound keys as explorer.links recorded them, and which of them are text inputs."""
    keys = list(at.session_state[PAGE].values)
    return keys, {w.key for w in at.text_input if w.key in keys}


@pytest.mark.parametrize("file", ["sample.py", "forward.py", "schedules.py", "train.py"])
@pytest.mark.parametrize("bad", ["inf", "1e309", "nan", "x"])
def test_every_bound_key_of_a_page_refuses_a_hostile_value_with_a_notice(root, file, bad):  # noqa: F811
    hand_made_run(root, "only", [1.0])  # the Train page draws its whole form only when there is a run
    keys, texts = bound(open_with(file, {}))
    assert len(keys) >= 5, keys
    query = {k: NOT_TEXT[0] if k in texts else bad for k in keys}  # one link carrying every key at once
    at = open_with(file, query)
    assert not at.exception
    said = notices(at)
    missing = [k for k in keys if f"The link's {k}=" not in said]
    assert not missing, (missing, said)
    assert not set(at.query_params) & set(keys), at.query_params  # the bad values left the address bar
    assert bound(at)[0] == keys  # the page drew with its defaults: the same widgets


def one_of_each_kind():
    """A page with one widget of each kind explorer.links binds (run by AppTest.from_function)."""
    from explorer import links

    links.page_setup("hostile")
    links.selectbox("Pick", ["a", "b", "c"], key="pick")
    links.radio("Way", ["up", "down"], key="way", default="down")
    links.number("Count", key="count", default=3, min_value=0, max_value=10)
    links.number("Seed", key="seed", default=0, min_value=0, max_value=2**31 - 1)
    links.number("Scale", key="scale", default=1.0, min_value=0.0, max_value=5.0)
    links.slider("Step", key="step", default=5, min_value=1, max_value=10)
    links.slider("Beta", key="beta", default=0.5, min_value=0.0, max_value=1.0)
    links.flag("On", key="on")
    links.flag("Toggle", key="tog", default=True, toggle=True)
    links.multiselect("Many", ["p", "q", "r"], key="many", default=["p"])
    links.text("Words", key="words", default="hi")
    links.page_end()


TEXTS, MULTI = {"words"}, {"many"}
KEYS = ["pick", "way", "count", "seed", "scale", "step", "beta", "on", "tog", "many", "words"]


@functools.cache
def widget_defaults() -> dict:
    """Each widget's value as the URL writes it, on a run without a query."""
    at = AppTest.from_function(one_of_each_kind, default_timeout=30)
    at.run()
    return dict(at.session_state[PAGE].values)


def refused(key: str, raw: str) -> bool:
    """Whether raw is known to be wrong for key's widget (a HOSTILE value is wrong for every widget but a text)."""
    return raw in NOT_TEXT if key in TEXTS else raw in HOSTILE


VALUES = st.one_of(st.sampled_from([*HOSTILE, *NOT_TEXT, "", "1", "true", "p", "a"]), st.text())


@settings(max_examples=60, deadline=None)
@given(key=st.sampled_from(KEYS), raws=st.lists(VALUES, min_size=1, max_size=3))
def test_no_link_crashes_a_widget_of_any_kind(key, raws):
    defaults = widget_defaults()
    at = AppTest.from_function(one_of_each_kind, default_timeout=30)
    at.query_params[key] = raws if len(raws) > 1 else raws[0]  # a repeated key, as ?k=a&k=b
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    page = at.session_state[PAGE]
    assert set(page.values) == set(KEYS)  # every widget drew
    last = [raws[-1]] if refused(key, raws[-1]) else []  # a single widget reads the last, as Streamlit does
    hostile = [r for r in raws if refused(key, r)] if key in MULTI else last
    if hostile:
        assert f"The link's {key}=" in notices(at), (key, raws, notices(at))
        if key not in MULTI:
            assert page.values[key] == defaults[key]
            assert key not in at.query_params, at.query_params
        else:
            assert not set(at.query_params.get(key, [])) & set(hostile)
    assert {k: v for k, v in page.values.items() if k != key} == {k: v for k, v in defaults.items() if k != key}
