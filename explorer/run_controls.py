"""The buttons that act on a run (Stop, Resume, Cancel, Delete), offered only to those who may press them: the
run's owner and the teacher (explorer/owners.py). Everyone else sees who may, and explorer/jobs.py refuses them
anyway, so a stale page cannot get round it."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from ddpm_core import run_history as rh
from ddpm_core import runs
from explorer import owners
from explorer.jobs import LaunchError
from explorer.owners import Requester
from explorer.train_queue import registry

CONFIRM = "delete_confirm"  # session key: the run whose deletion waits for a second press
ENDED = ("done", "stopped", "failed", "interrupted")


def _not_yours(run_dir: Path, action: str) -> None:
    st.caption(owners.refusal(run_dir, action) + ".")


def _act(call, *args) -> bool:
    """Run one of the registry's actions; its refusal is shown, not raised. True when it went through."""
    try:
        call(*args)
    except LaunchError as e:
        st.error(str(e))
        return False
    return True


def stop_control(run_dir: Path, who: Requester) -> None:
    stopping = (run_dir / runs.STOP).exists()
    if not stopping and not owners.may_act(who, run_dir):
        _not_yours(run_dir, "stop")
        return
    if not stopping and st.button("Stop", key="stop", icon=":material/stop:", help="Checkpoint and stop cleanly"):
        stopping = _act(registry().stop, run_dir, who)
    if stopping:
        st.info("Stop requested: the trainer saves a checkpoint after its current step, then stops.")


def cancel_control(run_dir: Path, who: Requester) -> None:
    if not owners.may_act(who, run_dir):
        _not_yours(run_dir, "cancel")
    elif st.button("Cancel", key="cancel_run", icon=":material/cancel:", help="Take it out of the queue") and _act(
        registry().cancel, run_dir, who
    ):  # refused when it has just started: stop it instead
        st.rerun()


def ended_controls(row: rh.RunRow, who: Requester, training: bool) -> None:
    """Resume (while training is on) and Delete, for a run that has ended."""
    if not owners.may_act(who, row.path):
        _not_yours(row.path, "resume or delete")
        return
    left, mid, right = st.columns([1, 1, 2], vertical_alignment="bottom")
    if training and (row.path / runs.STATE).is_file():
        steps = left.number_input("Resume until step", value=row.step + 1000, step=100, key="resume_steps")
        if mid.button("Resume", key="resume", icon=":material/play_arrow:") and _act(
            registry().resume, row.path, int(steps), who
        ):
            st.rerun()
    _delete(row, who, right)


def _delete(row: rh.RunRow, who: Requester, where) -> None:
    """Two presses: Delete, then Delete for good (or Keep it)."""
    if st.session_state.get(CONFIRM) != str(row.path):
        if where.button("Delete run", key="delete_run", icon=":material/delete:", help="Remove its folder"):
            st.session_state[CONFIRM] = str(row.path)
            st.rerun()
        return
    where.warning(f"Delete {row.name} and everything in its folder (checkpoints, logs, previews)? There is no undo.")
    yes, no = where.columns(2)
    if yes.button("Delete for good", key="delete_confirmed", type="primary", icon=":material/delete_forever:"):
        st.session_state.pop(CONFIRM, None)
        if _act(registry().delete, row.path, who):
            st.rerun()  # the panel says the folder was deleted, and shows the next run
    if no.button("Keep it", key="delete_kept"):
        st.session_state.pop(CONFIRM, None)
        st.rerun()
