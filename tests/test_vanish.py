"""Files that vanish under the Train page: a watched run folder deleted between page runs (or between the history's
listing and the panel's reads), a status.json caught mid-rename, truncated or replaced by a folder, a preview grid
gone since it was listed. Each gives a message, and the page carries on."""

from __future__ import annotations

import shutil
from pathlib import Path

from streamlit.testing.v1 import AppTest

from ddpm_core import run_history as rh
from ddpm_core import runs
from tests.apptest_helpers import open_page, rerun
from tests.test_page_train import hand_made_run, root  # noqa: F401 (root: a fixture)


def train_page() -> AppTest:
    return open_page("train.py")


def infos(at: AppTest) -> list[str]:
    return [i.value for i in at.info]


def test_deleting_the_watched_run_says_so_and_shows_another(root):  # noqa: F811
    gone, kept = hand_made_run(root, "gone", [1.0, 0.5]), hand_made_run(root, "kept", [1.0, 0.4])
    at = train_page()
    at.selectbox(key="run").set_value("gone")
    rerun(at)
    shutil.rmtree(gone)
    rerun(at)
    assert "gone: this run's folder was deleted; showing kept instead." in infos(at)
    assert at.selectbox(key="run").value == "kept" and list(rh.history(root)) == [rh.history_row(kept)]
    assert not any("deleted" in i for i in infos(rerun(at)))  # said once, not on every run after


def _panel_of(folder: str, watched: str | None) -> None:
    """The live panel alone, as its fragment reruns it every REFRESH_S seconds, for a folder that may be gone."""
    from pathlib import Path

    import streamlit as st

    from explorer import train_widgets as tw
    from explorer.owners import Requester

    st.session_state["runs"] = st.session_state.get("runs", 0) + 1
    tw._panel(Path(folder), 0.8, Requester("a-student"), watched if st.session_state["runs"] == 1 else None)


def test_the_polling_panel_of_a_deleted_run_says_so_and_redraws_the_page(root):  # noqa: F811
    gone = hand_made_run(root, "gone", [1.0])
    shutil.rmtree(gone)
    at = AppTest.from_function(_panel_of, args=(str(gone), "running"), default_timeout=60)
    rerun(at)
    assert infos(at) == ["gone: this run's folder was deleted."] and not at.error
    assert at.session_state["runs"] == 2  # the live panel asked for a full rerun, which stops the polling


def test_a_status_caught_mid_rename_is_a_moment_of_unknown_not_an_error(root):  # noqa: F811
    run = hand_made_run(root, "r", [1.0, 0.5])
    (run / runs.STATUS).rename(run / f".{runs.STATUS}.x1y2.tmp")  # the atomic write's temp, before its os.replace
    at = train_page()
    assert rh.history_row(run).state == "unknown" and not at.error
    assert "r: its status.json is being rewritten right now; the next refresh shows its state." in infos(at)
    (run / f".{runs.STATUS}.x1y2.tmp").rename(run / runs.STATUS)  # the rename lands
    rerun(at)
    assert rh.history_row(run).state == "done" and not any("rewritten" in i for i in infos(at))


def test_a_truncated_or_unreadable_status_reads_as_unknown(root):  # noqa: F811
    run = hand_made_run(root, "r", [1.0, 0.5])
    (run / runs.STATUS).write_text('{"state": "do')
    at = train_page()
    assert at.error[0].value == "r unknown: no status.json that says why"
    (run / runs.STATUS).unlink()
    (run / runs.STATUS).mkdir()  # was an IsADirectoryError traceback
    rerun(at)
    assert at.error[0].value == "r unknown: no status.json that says why"
    assert runs.read_status(run) == {} and runs.read_json(run / runs.STATUS, "default") == "default"


def test_the_readers_of_a_vanished_folder_return_nothing(tmp_path):
    gone = tmp_path / "gone"
    assert runs.read_status(gone) == {} and runs.read_metrics(gone) == [] and rh.read_config(gone) == {}
    assert rh.latest_previews(gone) is None and rh.log_tail(gone) == "" and not rh.status_being_written(gone)
    row = rh.history_row(gone)
    assert (row.state, row.step, row.final_loss, row.updated) == ("unknown", 0, None, 0.0)


def test_a_garbled_byte_in_the_metrics_costs_its_line_only(tmp_path):
    (tmp_path / runs.METRICS).write_bytes(
        b'{"step": 1, "loss": 0.5}\n{"step": 2, "loss": \xff}\n{"step": 3, "loss": 0.25}\n'
    )
    assert [r["step"] for r in rh.read_records(tmp_path)] == [1, 3]


def _previews_of(folder: str) -> None:
    from pathlib import Path

    from explorer import train_widgets as tw

    tw.previews(Path(folder))


def test_a_preview_grid_deleted_since_the_listing_is_a_caption(tmp_path):
    (tmp_path / runs.PREVIEWS).mkdir()
    # a dangling link: listed by the directory scan, gone when read, as a grid deleted in between is
    (tmp_path / runs.PREVIEWS / "step_000010_ema.png").symlink_to(tmp_path / "deleted.png")
    at = AppTest.from_function(_previews_of, args=(str(tmp_path),), default_timeout=60)
    rerun(at)
    assert any("step_000010_ema.png cannot be shown" in c.value for c in at.caption)
    assert Path(tmp_path / runs.PREVIEWS).is_dir()  # nothing of the run was removed


def test_a_run_whose_folder_is_deleted_while_it_trains_ends_without_a_trace(tmp_path):
    """The registry records a dead trainer's end in its folder; a folder deleted under a live trainer is skipped."""
    import subprocess
    import sys

    from explorer.jobs import Job, JobRegistry

    run = tmp_path / "runs" / "live"
    run.mkdir(parents=True)
    reg = JobRegistry(max_runs=1)
    process = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"])
    reg._jobs[run.resolve()] = Job(run.resolve(), process, resume=False)
    shutil.rmtree(run)
    process.wait()
    assert reg.active(tmp_path / "runs") == [] and not run.exists()  # no FileNotFoundError, nothing recreated
    reg.close()
