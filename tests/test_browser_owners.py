"""Runs belong to a browser, in Chromium (issue 15 §4): the owner cookie survives a reload and a server restart, a
stranger's browser is offered none of the run's buttons, and the teacher's token opens them. The server here runs
with localhost_is_teacher = false, so that browsers on this machine are strangers to each other."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ddpm_core import run_history as rh
from ddpm_core import runs
from explorer import identity
from tests.conftest import start_app, stop_app
from tests.test_browser import launch_named, no_exception, wait_for_app
from tests.test_page_train import hand_made_run

pytestmark = pytest.mark.browser
TOKEN = "correct-horse-battery-staple"


def open_train(page, url: str, run: str | None = None) -> None:
    page.goto(f"{url}/train" + (f"?run={run}" if run else ""))
    page.get_by_role("heading", name="Watch a run").wait_for(timeout=60_000)
    wait_for_app(page)


def test_a_queued_run_stays_its_browsers_across_a_reload_and_a_restart(browser, tmp_path):
    root = tmp_path / "runs"
    root.mkdir()
    room = tmp_path / "room.toml"
    room.write_text(f'[server]\nteacher_token = "{TOKEN}"\nlocalhost_is_teacher = false\n\n'
                    "[training]\nmax_concurrent = 1\nper_session = 1\n")  # fmt: skip
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # a CLI run holds the slot
    busy = hand_made_run(root, "busy", [1.0], state="running")
    runs.write_status(busy, "running", pid=holder.pid, step=10, total_steps=1000)
    app, url = start_app(root, tmp_path / "server.log", ("--config", str(room)))
    owner, stranger = browser.new_context(), browser.new_context()
    try:
        mine = owner.new_page()
        open_train(mine, url)
        launch_named(mine, "mine")
        mine.get_by_text("Queued mine: 1st in the queue").wait_for(timeout=30_000)
        assert any(c["name"] == identity.OWNER_COOKIE for c in owner.cookies())

        mine.reload()  # a new session of the same browser: its cookie says who it is
        open_train(mine, url, "mine")
        mine.get_by_role("button", name="Cancel").wait_for(timeout=30_000)
        launch_named(mine, "another")
        mine.get_by_text("This browser already has 1 run(s) training or waiting (mine)").wait_for(timeout=30_000)
        assert not (root / "another").exists()  # a reload no longer gets round per_session

        theirs = stranger.new_page()
        open_train(theirs, url, "mine")
        theirs.get_by_text("mine belongs to another browser").wait_for(timeout=30_000)
        assert theirs.get_by_role("button", name="Cancel").count() == 0
        open_train(theirs, url, "busy")
        theirs.get_by_text("only the teacher can stop it").wait_for(timeout=30_000)
        assert theirs.get_by_role("button", name="Stop").count() == 0

        stop_app(app)  # the server restarts; the queue and the secret that signs cookies stay in the runs folder
        app, url = start_app(root, tmp_path / "server2.log", ("--config", str(room)), port=int(url.rsplit(":", 1)[1]))
        open_train(mine, url, "mine")
        mine.get_by_role("button", name="Cancel").click()
        mine.get_by_text("this run's folder was deleted").wait_for(timeout=30_000)
        assert not (root / "mine").exists()
        no_exception(mine)

        open_train(theirs, url, "busy")  # the teacher signs in from the stranger's browser, and may stop anything
        theirs.get_by_text("Teacher sign-in").click()
        theirs.get_by_label("Teacher token").fill(TOKEN)
        theirs.get_by_role("button", name="Sign in").click()
        theirs.get_by_text("Teacher (signed in)").wait_for(timeout=30_000)
        wait_for_app(theirs)
        theirs.wait_for_function(f"() => document.cookie.includes('{identity.TEACHER_COOKIE}=')", timeout=30_000)
        theirs.reload()  # the teacher cookie keeps the sign-in
        open_train(theirs, url, "busy")
        theirs.get_by_role("button", name="Stop").click()
        theirs.get_by_text("Stop requested").wait_for(timeout=30_000)
        assert (busy / runs.STOP).exists() and rh.run_state(rh.read_status(busy)) == "running"
        no_exception(theirs)
    finally:
        owner.close()
        stranger.close()
        stop_app(app)
        holder.kill()
        holder.wait()
