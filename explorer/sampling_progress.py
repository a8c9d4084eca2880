"""A long sampling on a page: its progress bar, and a Cancel button that interrupts it cleanly. Used by Generate,
Compare and the guidance grid alike."""

from __future__ import annotations

import contextlib
import time

import streamlit as st

from ddpm_core.threads import ThreadTuner, set_threads, tuning_enabled
from explorer.cpu_share import server_threads, share_cpu

RUNNING = "sample.running"  # session state: set while a sampling runs; left behind when a rerun interrupts it


def progress_callback(bar):
    """progress(done, total) for a sampling: the bar, the CPU's share with a run (one thread here while a run trains
    on the CPU, one fewer there), and the thread count measured fastest for the next steps (ddpm_core.threads)."""
    tuner = ThreadTuner(share_cpu(busy=True)) if tuning_enabled() else None
    if tuner is not None:
        set_threads(tuner.threads)
    shown, last = [-1], [time.perf_counter()]

    def update(done: int, total: int) -> None:
        step_s = time.perf_counter() - last[0]
        percent = 100 * done // total
        most = server_threads(busy=percent != shown[0])
        set_threads(most if tuner is None else tuner.observe(step_s, most))
        if percent != shown[0]:  # ≤ 101 messages to the browser, not one per step
            shown[0] = percent
            bar.progress(percent / 100, text=f"Sampling: step {done:,} of {total:,}")
        last[0] = time.perf_counter()  # the bar's message is not the step's time

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
