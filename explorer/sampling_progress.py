"""A long sampling on a page: its progress bar, and a Cancel button that interrupts it cleanly. Used by Generate,
Compare and the guidance grid alike."""

from __future__ import annotations

import contextlib

import streamlit as st

from explorer.cpu_share import share_cpu

RUNNING = "sample.running"  # session state: set while a sampling runs; left behind when a rerun interrupts it


def progress_callback(bar):
    shown = [-1]

    def update(done: int, total: int) -> None:
        percent = 100 * done // total
        if percent != shown[0]:  # ≤ 101 messages to the browser, not one per step
            shown[0] = percent
            share_cpu(busy=True)  # one thread here while a run trains on the CPU, one fewer there
            bar.progress(percent / 100, text=f"Sampling: step {done:,} of {total:,}")

    return update


@contextlib.contextmanager
def cancellable(what: str):
    """Around a long sampling: a Cancel button above its progress bar, and a mark in session state. A click on Cancel
    (or on any widget) makes Streamlit rerun the script, which interrupts this run at its next progress update: the
    code after the yield never runs, the mark stays, and the next run reports it (was_cancelled). A result is only
    stored once its sampling has ended, so an interrupted one leaves nothing half-made behind."""
    st.session_state[RUNNING] = what
    button = st.empty()
    button.button("Cancel", key=f"cancel_{what}", icon=":material/cancel:", help="Stop sampling; nothing is kept")
    yield
    button.empty()
    del st.session_state[RUNNING]


def was_cancelled() -> str:
    """What the last run was sampling when it was interrupted ("generate" or "compare"); "" when it was not. Asks
    once: the mark is cleared."""
    return st.session_state.pop(RUNNING, "")
