"""Who this browser is, for the runs it owns and the teacher's override (the rules: explorer/owners.py).

Streamlit reads cookies only when a browser connects and has no way to set one from Python, so a small component
(st.components.v2, which runs in the page itself) writes them: the first visit gets a random owner id, signed by the
server, that comes back with every later connection — a reload, a new tab, the next day, after a server restart.
Until it comes back (the first visit's own session), the id lives in session state.

Clearing cookies, or another browser, makes a new owner: without accounts, "one browser" is as far as the
classroom's per_session limit can reach, and the README says so.
"""

from __future__ import annotations

import time

import streamlit as st

from explorer import jobs, links, owners
from explorer.owners import Requester

OWNER_COOKIE, TEACHER_COOKIE = "ddpm_explorer_owner", "ddpm_explorer_teacher"
MAX_AGE_S = 180 * 24 * 3600  # half a year: a course's length
OWNER, TEACHER, SIGNED_OUT = "identity.owner", "identity.teacher", "identity.signed_out"  # session-state keys
WRONG_TOKEN_DELAY_S = 1.0  # each wrong teacher token waits this long: guessing through the page is hopeless

_cookie_writer = st.components.v2.component(
    "ddpm_explorer_cookie",
    js="""
export default function ({ data }) {
  if (!data || !/^[a-z_]+$/.test(data.name) || !/^[0-9a-f.]*$/.test(data.value)) return;
  document.cookie = `${data.name}=${data.value}; Max-Age=${data.max_age}; Path=/; SameSite=Strict`;
}
""",
)


def _key() -> bytes:
    return owners.secret(jobs.runs_root())


def _cookies() -> dict[str, str]:
    return dict(st.context.cookies)


def _write_cookie(name: str, value: str, max_age: int = MAX_AGE_S) -> None:
    """Have the browser store a cookie (from the sidebar, where the zero-height element takes no room)."""
    with st.sidebar:
        _cookie_writer(key=f"cookie_{name}", data={"name": name, "value": value, "max_age": max_age}, height=0)


def from_this_machine() -> bool:
    """A browser connected over loopback: Streamlit reports no IP address for it. An AppTest has no connection
    (and no headers) at all, so it is never this machine."""
    return bool(dict(st.context.headers)) and st.context.ip_address is None


def owner_id() -> str:
    """This browser's owner id: the one its signed cookie carries, else a new one that the cookie will carry."""
    key = _key()
    if owner := owners.verify(_cookies().get(OWNER_COOKIE), key):
        st.session_state[OWNER] = owner
        return owner
    owner = st.session_state.setdefault(OWNER, owners.new_id())
    _write_cookie(OWNER_COOKIE, owners.sign(owner, key))
    return owner


def is_teacher() -> bool:
    """The teacher: a browser on this machine (unless the classroom says otherwise), or one that gave the token in
    this session or in an earlier one (its cookie). Keeps the teacher cookie in step with the session: written after
    a sign-in, expired after a sign-out."""
    room = links.classroom()
    if room.localhost_is_teacher and from_this_machine():
        return True
    if not room.teacher_token:
        return False
    key, cookie = _key(), _cookies().get(TEACHER_COOKIE)
    if st.session_state.get(SIGNED_OUT):
        if cookie:
            _write_cookie(TEACHER_COOKIE, "", max_age=0)
        return False
    mark = owners.teacher_mark(room.teacher_token, key)
    if st.session_state.get(TEACHER) == mark:
        if cookie != mark:
            _write_cookie(TEACHER_COOKIE, mark)
        return True
    return owners.is_teacher_mark(cookie, room.teacher_token, key)


def requester() -> Requester:
    """Who is asking, for explorer.jobs: this browser's owner id, and whether it is the teacher. Once per run: it may
    write the cookies."""
    return Requester(owner_id(), is_teacher())


def teacher_panel(who: Requester) -> None:
    """The sidebar's word on who may act on which run, with the teacher's sign-in when the classroom has a token."""
    room = links.classroom()
    with st.sidebar:
        if who.teacher:
            by_token = not (room.localhost_is_teacher and from_this_machine())
            if not by_token and not room.source:
                return  # one person on their own machine, no classroom: nothing to say about who may do what
            st.caption(
                "**Teacher**" + (" (signed in)" if by_token else " (a browser on the server's machine)")
                + ": you may stop, resume, cancel and delete every run."
            )  # fmt: skip
            if by_token and st.button("Sign out", key="teacher_sign_out", icon=":material/logout:"):
                st.session_state[SIGNED_OUT] = True
                st.session_state.pop(TEACHER, None)
                st.rerun()
            return
        st.caption("You may stop, resume, cancel and delete the runs this browser launched.")
        if not room.teacher_token:
            return
        with st.expander("Teacher sign-in"), st.form("teacher_form", clear_on_submit=True, border=False):
            given = st.text_input("Teacher token", type="password", max_chars=200)
            if st.form_submit_button("Sign in", key="teacher_sign_in"):
                _sign_in(given, room.teacher_token)


def _sign_in(given: str, token: str) -> None:
    if not owners.token_matches(given, token):
        time.sleep(WRONG_TOKEN_DELAY_S)
        st.error("That is not the teacher token of this server's classroom file.")
        return
    st.session_state[TEACHER] = owners.teacher_mark(token, _key())  # the next run writes the cookie
    st.session_state.pop(SIGNED_OUT, None)
    st.rerun()
