"""One gate for every button that samples, trains or computes at scale: a function of the classroom's caps and the
request, which clamps the request to the caps where a smaller one still answers it, and refuses it otherwise.

Sampling work is counted in network evaluations. A request is one or more cells (a guidance grid's scales × classes,
a comparison's sampler settings), each of n samples drawn in `steps` evaluations. The classroom's [sampling] caps
allow, per request, at most max_n samples in a cell, at most max_steps steps in a cell, and at most
max_n × max_steps sample-steps in all (what one Generate at both caps costs). Training is allowed when the teacher
has not switched it off, up to [training] max_steps optimiser steps per run where the file sets it.

BUTTONS lists every button of the app: the gated ones by the kind of work they start, the rest with the reason they
need no gate. tests/test_gate.py scans pages/ and explorer/ for buttons and fails on one that is in neither list.
The decisions are pure; only `show` touches Streamlit.
"""

from __future__ import annotations

from dataclasses import dataclass

from explorer.classroom import Classroom

SAMPLING, TRAINING = "sampling", "training"
BUTTONS = {  # key → the kind of work it starts (gated) or why it needs no gate
    "generate": SAMPLING,
    "compare": SAMPLING,
    "guidance_grid": SAMPLING,
    "measure_importance": SAMPLING,
    "run_": SAMPLING,  # the Edit page's Run (run_sdedit, run_inpaint, run_invert, run_interpolate)
    "measure_bound": SAMPLING,  # the Bound page's Measure: n samples through the bound's terms (and the ODE)
    "launch": TRAINING,
    "resume": TRAINING,
    "stop": "ends a run: frees the CPU",
    "cancel_run": "takes a run out of the queue",
    "delete_run": "asks to delete a run (nothing happens until delete_confirmed)",
    "delete_confirmed": "removes an ended run's folder: frees disk",
    "delete_kept": "withdraws a delete",
    "teacher_sign_in": "checks the teacher token (each wrong one waits a second)",
    "teacher_sign_out": "forgets the teacher token",
    "cancel_": "cancels the sampling in progress (keys cancel_generate, cancel_compare, …)",
    "download_csv": "serves a table already computed",
    "download_edit_": "serves an edit already computed (keys download_edit_<file name>)",
    "download_gif": "serves a GIF already computed",
    "download_png": "serves samples already computed",
    "download_strip": "serves a picture already computed",
}
GATED = tuple(k for k, v in BUTTONS.items() if v in (SAMPLING, TRAINING))


@dataclass(frozen=True)
class Sampling:
    """What a sampling button asks for: n samples in each cell, cell i taking steps[i] network evaluations.
    clamp: a smaller n still answers the request (False: the work is fixed, so it is all or nothing)."""

    n: int
    steps: tuple[int, ...]
    clamp: bool = True
    what: str = "this request"

    @property
    def cost(self) -> int:
        return self.n * sum(self.steps)


@dataclass(frozen=True)
class Decision:
    n: int = 0  # samples per cell to draw (sampling); 0 when refused
    refusal: str = ""  # why nothing runs ("" when it does)
    note: str = ""  # what was cut back, when the request was clamped

    @property
    def allowed(self) -> bool:
        return not self.refusal


def sampling(room: Classroom, request: Sampling, per_sample: int = 1) -> Decision:
    """The gate for sampling work. per_sample: how many of a request's samples count as one against max_n (2D points
    are cheaper: explorer.sample_widgets.POINTS_PER_SAMPLE)."""
    max_n, max_steps = room.max_n * per_sample, room.max_steps
    budget = max_n * max_steps
    if not request.steps or request.n < 1:
        return Decision(refusal=f"{request.what} asks for no samples")
    if (steps := max(request.steps)) > max_steps:
        return Decision(refusal=f"{request.what} takes {steps:,} steps, more than this server allows per request "
                                f"({max_steps:,}): pick fewer steps (DDIM).")  # fmt: skip
    n = min(request.n, max_n, budget // sum(request.steps))
    if n == request.n:
        return Decision(n)
    if not request.clamp and request.n > max_n:
        return Decision(refusal=f"{request.n:,} samples are more than this server allows per request ({max_n:,}).")
    cells = len(request.steps)
    if not request.clamp or n < 1:
        return Decision(refusal=f"{request.what} needs {request.cost:,} sample-steps ({request.n:,} samples × "
                                f"{sum(request.steps):,} steps over {cells} cell(s)), more than this server allows per "
                                f"request ({budget:,} = {max_n:,} samples × {max_steps:,} steps).")  # fmt: skip
    return Decision(n, note=f"{request.what}: {n:,} samples per cell instead of {request.n:,}, to keep within this "
                            f"server's {budget:,} sample-steps per request ({max_n:,} samples × {max_steps:,} "
                            "steps).")  # fmt: skip


def training(room: Classroom, steps: int, off_message: str) -> Decision:
    """The gate for launching or resuming a run that trains until optimiser step `steps`."""
    if not room.training:
        return Decision(refusal=off_message)
    if room.max_train_steps is not None and steps > room.max_train_steps:
        return Decision(refusal=f"{steps:,} training steps are more than this server allows per run "
                                f"({room.max_train_steps:,}, the classroom's [training] max_steps).")  # fmt: skip
    return Decision(1)


def show(decision: Decision) -> bool:
    """Say what the gate decided on the page; True when the work may run."""
    import streamlit as st

    if decision.refusal:
        st.error(decision.refusal)
    elif decision.note:
        st.warning(decision.note)
    return decision.allowed
