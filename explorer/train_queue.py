"""Training as a shared resource on the Train page (pages/train.py): the one job registry, the browser session's
the launch handler, and what a browser sees of the queue — the slots in use and a queued run's place (its Cancel button:
explorer/run_controls.py). explorer/jobs.py keeps the queue and enforces every limit; this module only shows them."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from ddpm_core import run_history as rh
from ddpm_core.config import TrainConfig
from explorer.jobs import OFF, JobRegistry, LaunchError
from explorer.owners import Requester
from explorer.run_folders import root_problem


@st.cache_resource
def registry() -> JobRegistry:
    """One registry for every session: the limits on concurrent runs and the queue hold across browser tabs."""
    return JobRegistry()


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def training_off() -> bool:
    """Whether the teacher has turned training off; says so on the page when they have."""
    if registry().training:
        return False
    st.info(OFF, icon=":material/block:")
    return True


def backend_notice() -> None:
    """Which engine trains the runs (this server, or a Ray cluster with its CPUs and GPUs), and a warning while the
    cluster does not answer."""
    backend = registry().backend
    st.caption(backend.describe())
    if problem := root_problem():
        st.error(problem)
    if getattr(backend, "unreachable", ""):
        st.warning(
            f"{backend.unreachable}. Runs on it are shown as the run folders last said; nothing is marked ended or "
            "deleted until it answers again."
        )


def capacity_notice(root: Path) -> None:
    """A warning while every slot is taken: who trains, and that a new run would wait."""
    reg = registry()
    active, waiting = reg.active(root), reg.queue(root)
    if len(active) < reg.max_runs:
        return
    behind = f" behind the {len(waiting)} already waiting" if waiting else ""
    st.warning(
        f"{len(active)} run(s) training now ({', '.join(p.name for p in active)}), the most allowed at once "
        f"({reg.max_runs}): a new run waits in the queue{behind} and starts when a slot frees up."
    )


def launch(config: TrainConfig, target: Path, who: Requester) -> bool:
    """The Launch button's handler: start the run or queue it (who becomes its owner), and say which; False after an
    st.error."""
    reg = registry()
    try:
        job = reg.submit(config, target, who)
    except LaunchError as e:
        st.error(str(e))
        return False
    st.session_state["run"] = target.name  # watch it below
    if job is not None and reg.backend.queues:
        st.success(f"Submitted {target.name} to the cluster: it trains as soon as a node has room for it.")
    elif job is not None:
        st.success(f"Launched {target.name}: it starts training once torch has loaded (a few seconds).")
    else:
        place = _place(target)
        st.info(f"Queued {target.name}: {ordinal(place)} in the queue. It starts by itself when a slot frees up.")
    return True


def _place(run_dir: Path) -> int:
    """1 for the next run to start; 0 when it no longer waits."""
    queue = registry().queue(run_dir.parent)
    return queue.index(run_dir.resolve()) + 1 if run_dir.resolve() in queue else 0


def queued_panel(run_dir: Path) -> None:
    """A queued run: its place, and why it waits."""
    reg, place = registry(), _place(run_dir)
    if job := rh.read_status(run_dir).get("job"):
        st.info(
            f"Waiting in the Ray cluster's queue (job {job}): it starts when a node has the CPUs and GPUs it asks for.",
            icon=":material/hourglass_top:",
        )
        return
    busy = len(reg.active(run_dir.parent))
    why = (
        "training is turned off by the teacher: it starts once training is back on"
        if not reg.training
        else f"{busy} of {reg.max_runs} slot(s) in use: it starts by itself when one frees up"
    )
    st.info(f"Waiting: {ordinal(place)} in the queue — {why}.", icon=":material/hourglass_top:")
