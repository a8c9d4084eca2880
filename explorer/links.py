"""Shareable views: widgets whose values live in the URL, the teacher's defaults and locks, and a "Copy link to this
view" control.

A page calls `page_setup("forward")` first, builds its widgets through this module's functions (same arguments as
Streamlit's, plus the code's `default`), and calls `page_end()` last. Each widget is bound to the query parameter of
its key (`?t=250&schedule=cosine`; a multiselect repeats it, `?scales=1&scales=2`; Streamlit's `bind="query-params"`):
the browser's address is always a link to the view, and opening it restores the view. Before a widget is drawn its
URL value is checked here, so that a bad or tampered value falls back to the default *with a notice* (Streamlit alone
would drop it silently). A widget's default comes from the classroom file's [defaults.<page>] when it fits, else from
the code; a [locked.<page>] value is shown greyed out and no link can change it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

import streamlit as st
from streamlit.runtime.state.session_state_proxy import get_session_state

from explorer.classroom import Classroom, current

PAGE = "_links.page"  # session state: the _Page of the run in progress
# A link's text is a folder or a list of classes: anything longer, or with control characters (a NUL byte breaks
# every path function), is tampering, and is refused before a page's own checks see it
MAX_TEXT = 1_000


@dataclass
class _Page:
    name: str
    url_path: str  # "" for the home page
    notices: st.delta_generator.DeltaGenerator
    link: st.delta_generator.DeltaGenerator
    query: dict[str, list[str]]  # the URL's parameters as the run began (a key may repeat: a multiselect's)
    values: dict[str, str | list[str]] = field(default_factory=dict)  # bound key → its value as the URL writes it
    defaults: dict[str, str | list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def classroom() -> Classroom:
    """The server's classroom settings (explorer.classroom.current)."""
    return current()


def page_setup(name: str) -> None:
    """Start a page run: where notices and the link control go (top of the page), and the URL as it came."""
    top = st.container()
    notices, link = top.container(), top.container()
    query = {key: st.query_params.get_all(key) for key in st.query_params}
    st.session_state[PAGE] = _Page(name, "" if name == "home" else name, notices, link, query)


def page_end() -> None:
    """Show what was wrong with the link or the classroom file, and the link to the view as it is now."""
    page = _current()
    with page.notices:
        for problem in page.problems:
            st.warning(problem, icon=":material/link_off:")
    with page.link.popover("Copy link to this view", icon=":material/link:"):
        st.caption("Anyone who opens this link on this server sees this page with these settings.")
        st.code(view_link(page), language=None, wrap_lines=True)


def view_link(page: _Page | None = None) -> str:
    page = page or _current()
    url = urlsplit(st.context.url or "http://localhost:8501")
    base = st.get_option("server.baseUrlPath").strip("/")
    path = "/".join(p for p in (base, page.url_path) if p)
    changed = {k: v for k, v in page.values.items() if v != page.defaults.get(k)}
    return f"{url.scheme}://{url.netloc}/{path}" + (f"?{urlencode(changed, doseq=True)}" if changed else "")


def _current() -> _Page:
    page = st.session_state.get(PAGE)
    if page is None:
        raise RuntimeError("explorer.links: call page_setup(name) at the top of the page")
    return page


# ----------------------------------------------------------------------------------------------------------------
# Bound widgets


def _bind(key: str, default, fits: Callable[[object], bool], to_url: Callable[[object], str | list[str]], what: str,
          *, many: bool = False):  # fmt: skip
    """(widget keyword arguments, default) for key: the default is the teacher's if it fits, else the code's; the
    widget is disabled when locked, bound to the URL otherwise. Notes a URL or classroom value that does not fit.
    `fits.parse(raw)` is the value a URL string (many: the list of a repeated parameter's strings) stands for, or
    None."""
    page, room = _current(), classroom()
    chosen = room.default(page.name, key)
    if chosen is not None and not fits(chosen) and (parsed := fits.parse(_as_raw(chosen, many))) is not None:
        chosen = parsed  # written as a link writes it: a label ("scaled linear", "digits")
    if chosen is not None and not fits(chosen):
        section = "locked" if room.is_locked(page.name, key) else "defaults"
        page.problems.append(f"The classroom file's [{section}.{page.name}] {key} = {chosen!r} is not {what}; ignored.")
        chosen = None
    default = default if chosen is None else chosen
    locked = chosen is not None and room.is_locked(page.name, key)
    raws = page.query.get(key)
    raw = None if raws is None else raws if many else raws[-1]
    shown = None if raw is None else "&".join(f"{key}={r}" for r in raws)
    if raw is not None and locked:
        fixed = ", ".join(to_url(default)) if many else to_url(default)
        page.problems.append(f"The link's {shown} was ignored: the teacher has fixed {key} to {fixed}.")
    elif raw is not None and raw != to_url(default) and fits.parse(raw) is None:
        good = [r for r in raws if fits.parse([r]) is not None] if many else []
        if many:
            shown = "&".join(f"{key}={r}" for r in raws if fits.parse([r]) is None)
        fallback = "ignored, the others are kept" if many else f"the default {to_url(default)} is used instead"
        page.problems.append(f"The link's {shown} is not {what}; {fallback}.")
        _replace_in_url(key, good)
    elif raw is not None and (note := getattr(fits, "note", lambda r: None)(raw)):
        page.problems.append(f"The link's {shown} {note}.")
    page.defaults[key] = to_url(default)
    kwargs = {"key": key, "disabled": locked}
    if locked:
        st.session_state[key] = default  # the greyed-out widget shows the fixed value, whatever was there before
    else:
        kwargs["bind"] = "query-params"
    return kwargs, default


def in_range(key: str, low: int, high: int, fallback: int | None = None) -> None:
    """A value left in session state by another page's widget of the same key, brought within this one's range (or
    replaced by fallback, where the other page's value means something else)."""
    value = st.session_state.get(key)
    if isinstance(value, int | float) and not low <= value <= high:
        st.session_state[key] = min(max(int(value), low), high) if fallback is None else fallback


def _replace_in_url(key: str, kept: list[str]) -> None:
    """Leave only `kept` of key's URL values (none: remove the parameter), for Streamlit as well as the address bar.

    Streamlit's binding seeds a widget from its own snapshot of the URL as the run began, not from st.query_params,
    and some values crash it rather than being dropped (?seed=inf: int(inf) raises OverflowError inside
    st.number_input). Public st.query_params refuses to touch a bound key, so this edits Streamlit's QueryParams
    (1.67: remove_param and _initial_query_params); the page then draws with the default, and says why."""
    with get_session_state().query_params() as qp:
        initial = getattr(qp, "_initial_query_params", None)
        if kept:
            qp.set_corrected_value(key, kept, "string_array_value")
        else:
            qp.remove_param(key)
        if isinstance(initial, dict):
            if kept:
                initial[key] = list(kept)
            else:
                initial.pop(key, None)


def _as_raw(value, many: bool):
    """A classroom file's value as a link would write it (many: a list of strings)."""
    if many:
        return [str(v) for v in value] if isinstance(value, list) else None
    return str(value)


def _record(key: str, value, to_url) -> None:
    _current().values[key] = to_url(value)


def selectbox(label: str, options: Sequence, key: str, *, default=None, format_func=str, link_name=None,
              aliases=None, where=st, radio=False, **kwargs):  # fmt: skip
    """st.selectbox (or st.radio) over options, bound to ?key=<format_func(option)>.

    link_name(option): a stable name (a recipe's slug) that "Copy link" writes, and that a link or the classroom file
    may give instead of the label; aliases: {former name: option}, still accepted from older links. Streamlit binds
    the address bar to the label, and drops any other value on opening: a link's name is put into session state here,
    before the widget reads it."""
    options = list(options)
    default = options[0] if default is None else default
    labels = {str(format_func(o)): o for o in options}
    names = {str(link_name(o)): o for o in options} if link_name else {}
    accepted = {**(aliases or {}), **names}
    to_url = (lambda v: str(link_name(v))) if link_name else (lambda v: str(format_func(v)))

    def fits(v):
        return v in options

    fits.parse = lambda raw: accepted.get(raw, labels.get(raw))  # type: ignore[attr-defined]
    extra, default = _bind(key, default, fits, to_url, f"one of {', '.join(names or labels)}")
    raw = (_current().query.get(key) or [None])[-1]
    if "bind" in extra and raw in accepted and raw not in labels and key not in st.session_state:
        st.session_state[key] = accepted[raw]
    widget = where.radio if radio else where.selectbox
    value = widget(label, options, index=options.index(default), format_func=format_func, **extra, **kwargs)
    _record(key, value, to_url)
    return value


def radio(label: str, options: Sequence, key: str, **kwargs):
    return selectbox(label, options, key, radio=True, **kwargs)


def _number_url(v) -> str:
    return str(int(v)) if isinstance(v, int) and not isinstance(v, bool) else repr(float(v))


def number(label: str, key: str, *, default, min_value=None, max_value=None, where=st, slider=False, **kwargs):
    """st.number_input (or st.slider) bound to ?key=<number>. Integers when default is an int."""
    integer = isinstance(default, int) and not isinstance(default, bool)

    def fits(v):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            return False
        if integer and v != int(v):
            return False
        return (min_value is None or v >= min_value) and (max_value is None or v <= max_value)

    def parse(raw: str):
        """What Streamlit makes of raw: float(raw), truncated for an integer widget; None when it drops raw."""
        try:
            v = float(raw)
        except ValueError:
            return None
        v = int(v) if integer and math.isfinite(v) else v
        return v if fits(v) else None

    def note(raw: str) -> str | None:
        v = parse(raw)
        return f"is not an integer; {v} is used" if integer and v is not None and float(raw) != v else None

    fits.parse, fits.note = parse, note  # type: ignore[attr-defined]
    what = "an integer" if integer else "a number"
    bounds = f" in [{min_value}, {max_value}]" if min_value is not None and max_value is not None else ""
    extra, default = _bind(key, default, fits, _number_url, what + bounds)
    widget = where.slider if slider else where.number_input
    start = int(default) if integer else float(default)
    value = widget(label, min_value=min_value, max_value=max_value, value=start, **extra, **kwargs)
    _record(key, value, _number_url)
    return value


def slider(label: str, key: str, **kwargs):
    return number(label, key, slider=True, **kwargs)


def flag(label: str, key: str, *, default: bool = False, where=st, toggle=False, **kwargs) -> bool:
    """st.checkbox (or st.toggle) bound to ?key=true|false."""

    def fits(v):
        return isinstance(v, bool)

    fits.parse = {"true": True, "false": False}.get  # type: ignore[attr-defined]
    extra, default = _bind(key, default, fits, lambda v: str(bool(v)).lower(), "true or false")
    value = (where.toggle if toggle else where.checkbox)(label, value=bool(default), **extra, **kwargs)
    _record(key, value, lambda v: str(bool(v)).lower())
    return bool(value)


def multiselect(label: str, options: Sequence, key: str, *, default: Sequence = (), format_func=str, where=st,
                **kwargs) -> list:  # fmt: skip
    """st.multiselect over options, bound to ?key=a&key=b (a parameter per chosen option, as format_func writes it;
    ?key= for none). A link's unknown option is dropped with a notice; the others are kept."""
    options = list(options)
    labels = {str(format_func(o)): o for o in options}

    def fits(v):
        return isinstance(v, list | tuple) and all(o in options for o in v)

    def parse(raw):
        if not isinstance(raw, list) or not all(r in labels or r == "" for r in raw):
            return None
        return [labels[r] for r in raw if r]

    def to_url(v) -> str | list[str]:
        return [str(format_func(o)) for o in v] or ""  # ?key= (Streamlit's "none chosen"): a bare ?key would vanish

    fits.parse = parse  # type: ignore[attr-defined]
    extra, default = _bind(key, list(default), fits, to_url, f"among {', '.join(labels)}", many=True)
    value = where.multiselect(label, options, default=list(default), format_func=format_func, **extra, **kwargs)
    _record(key, value, to_url)
    return value


def text(label: str, key: str, *, default: str = "", where=st, **kwargs) -> str:
    """st.text_input bound to ?key=<text>. What the text means is the page's to check (any printable line up to MAX_TEXT
    characters fits here)."""

    def fits(v):
        return isinstance(v, str) and len(v) <= MAX_TEXT and v.isprintable()

    fits.parse = lambda raw: raw if fits(raw) else None  # type: ignore[attr-defined]
    extra, default = _bind(key, default, fits, str, f"a line of text of at most {MAX_TEXT} characters")
    value = where.text_input(label, value=default, **extra, **kwargs)
    _record(key, value, str)
    return value
