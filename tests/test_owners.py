"""Runs belong to someone (issue 15 §4): the signed owner cookie, the registry's refusals for strangers, and the Train
page offering Stop, Cancel, Resume and Delete to the run's browser and the teacher only. The browser half (a reload
and a server restart keep ownership): tests/test_browser_owners.py."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from ddpm_core import run_history as rh
from ddpm_core import runs
from ddpm_core.config import TrainConfig
from ddpm_core.run_lock import LOCK
from explorer import identity, owners
from explorer.classroom import load_classroom
from explorer.jobs import JobRegistry, LaunchError
from explorer.owners import Requester
from tests.apptest_helpers import rerun
from tests.test_classroom_pages import BRIEF, classroom, find, open_page, root, texts  # noqa: F401
from tests.test_page_train import hand_made_run

TOKEN = "correct-horse-battery-staple"
ALICE, BOB = Requester("a" * 32), Requester("b" * 32)
TEACHER = Requester("c" * 32, teacher=True)


@pytest.fixture
def sleeper():
    """A live process to stand for a trainer (a "running" status, a held lock)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    yield proc
    proc.kill()
    proc.wait()


def owned(run, who: Requester):
    owners.record_owner(run, who.owner)
    return run


# ----------------------------------------------------------------------------------------------------------------
# The cookie and the secret


def test_a_signed_owner_id_verifies_and_nothing_else_does(tmp_path):
    key = owners.secret(tmp_path)
    owner = owners.new_id()
    cookie = owners.sign(owner, key)
    assert owners.verify(cookie, key) == owner
    other = owners.new_id()
    forged = f"{other}.{cookie.split('.')[1]}"  # someone else's id under a valid-looking mac
    for bad in (forged, owners.sign(owner, b"k" * 32), owner, f"{owner}.", "", None, f"{owner}.{'0' * 64}",
                cookie + ".x", "Z" * 32 + "." + cookie.split(".")[1]):  # fmt: skip
        assert owners.verify(bad, key) is None, bad


def test_the_secret_is_made_once_private_and_kept(tmp_path):
    key = owners.secret(tmp_path)
    path = tmp_path / owners.SECRET
    assert len(key) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert owners.secret(tmp_path) == key  # a restarted server signs with the same key: old cookies still verify
    path.write_bytes(b"short")  # cut short: replaced, not used
    assert owners.secret(tmp_path) not in (key, b"short") and len(path.read_bytes()) == 32
    assert rh.run_dirs(tmp_path) == []  # the runs root's secret is not a run


def test_the_teacher_mark_changes_with_the_token(tmp_path):
    key = owners.secret(tmp_path)
    mark = owners.teacher_mark(TOKEN, key)
    assert owners.is_teacher_mark(mark, TOKEN, key)
    assert not owners.is_teacher_mark(mark, TOKEN + "-new", key)  # a new token signs earlier teachers out
    assert not owners.is_teacher_mark(mark, None, key) and not owners.is_teacher_mark(None, TOKEN, key)
    assert owners.token_matches(f" {TOKEN} ", TOKEN) and not owners.token_matches(TOKEN[:-1], TOKEN)
    assert not owners.token_matches("", None)


def test_the_classroom_file_takes_a_token_and_refuses_a_weak_one(tmp_path):
    path = tmp_path / "room.toml"
    path.write_text(f'[server]\nteacher_token = "{TOKEN}"\nlocalhost_is_teacher = false\n')
    room = load_classroom(path, {})
    assert (room.teacher_token, room.localhost_is_teacher, room.problems) == (TOKEN, False, ())
    path.write_text('[server]\nteacher_token = "secret"\nlocalhost_is_teacher = "yes"\n')
    room = load_classroom(path, {})
    assert room.teacher_token is None and room.localhost_is_teacher is True
    problems = " ".join(room.problems)
    assert "teacher_token must be a string of 12 to 200 printable characters" in problems and "secret" not in problems
    assert "localhost_is_teacher must be true or false" in problems


# ----------------------------------------------------------------------------------------------------------------
# The registry refuses strangers, whatever page or stale button asks


def test_stop_resume_and_delete_are_for_the_owner_and_the_teacher(tmp_path, sleeper):
    reg = JobRegistry(max_runs=2)
    live = owned(hand_made_run(tmp_path, "live", [1.0], state="running"), ALICE)
    runs.write_status(live, "running", pid=sleeper.pid)
    with pytest.raises(LaunchError, match="live belongs to another browser, the one that launched it: only it or "
                                          "the teacher can stop it"):  # fmt: skip
        reg.stop(live, BOB)
    assert not (live / runs.STOP).exists()
    reg.stop(live, ALICE)
    assert (live / runs.STOP).exists()

    ended = owned(hand_made_run(tmp_path, "ended", [1.0, 0.5], state="stopped"), ALICE)
    for action, call in (("resume", lambda: reg.resume(ended, 100, BOB)), ("delete", lambda: reg.delete(ended, BOB))):
        with pytest.raises(LaunchError, match=f"only it or the teacher can {action} it"):
            call()
    assert ended.is_dir()
    cli = hand_made_run(tmp_path, "from-the-cli", [1.0], state="stopped")  # no owner.json: the teacher's alone
    with pytest.raises(LaunchError, match=r"was not launched from this app's Train page .*only the teacher can delete"):
        reg.delete(cli, ALICE)
    reg.delete(cli, TEACHER)
    reg.delete(ended, ALICE)
    assert rh.run_dirs(tmp_path) == [live.resolve()]  # nothing of the two left, not even a hidden rename
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".deleted")] == []


def test_delete_refuses_a_run_that_trains_waits_or_is_locked(tmp_path, sleeper):
    reg = JobRegistry(max_runs=1)
    live = owned(hand_made_run(tmp_path, "live", [1.0], state="running"), ALICE)
    runs.write_status(live, "running", pid=sleeper.pid)
    with pytest.raises(LaunchError, match="live is training or waiting to: stop or cancel it before deleting it"):
        reg.delete(live, ALICE)
    assert reg.submit(TrainConfig(**BRIEF, device="cpu"), tmp_path / "waiting", BOB) is None  # the slot is taken
    try:
        with pytest.raises(LaunchError, match="waiting is training or waiting to"):
            reg.delete(tmp_path / "waiting", BOB)
    finally:
        reg.cancel(tmp_path / "waiting", BOB)
        reg.close()
    locked = owned(hand_made_run(tmp_path, "locked", [1.0], state="stopped"), ALICE)
    (locked / LOCK).write_text(f'{{"pid": {sleeper.pid}, "host": "{os.uname().nodename}"}}')  # a CLI --resume
    with pytest.raises(LaunchError, match=f"being trained by process {sleeper.pid}"):
        reg.delete(locked, ALICE)
    assert (locked / runs.CONFIG).is_file()


def test_ownership_and_the_per_browser_limit_hold_across_a_server_restart(tmp_path, sleeper):
    busy = hand_made_run(tmp_path, "busy", [1.0], state="running")  # the one slot, taken from the CLI
    runs.write_status(busy, "running", pid=sleeper.pid)
    before = JobRegistry(max_runs=1)
    assert before.submit(TrainConfig(**BRIEF, device="cpu"), tmp_path / "mine", ALICE) is None
    before.close()  # the server goes away; the browser keeps its cookie, so its owner id
    after = JobRegistry(max_runs=1)
    try:
        with pytest.raises(LaunchError, match=r"This browser already has 1 run\(s\) training or waiting \(mine\)"):
            after.submit(TrainConfig(**BRIEF, device="cpu"), tmp_path / "more", ALICE)
        assert after.submit(TrainConfig(**BRIEF, device="cpu"), tmp_path / "theirs", BOB) is None  # Bob's own
        assert after.submit(TrainConfig(**BRIEF, device="cpu"), tmp_path / "extra", TEACHER) is None  # no limit
        with pytest.raises(LaunchError, match="can cancel it"):
            after.cancel(tmp_path / "mine", BOB)
        after.cancel(tmp_path / "mine", ALICE)  # the restarted server knows whose it is
        with pytest.raises(LaunchError, match="extra belongs to another browser"):
            after.cancel(tmp_path / "extra", ALICE)
        after.cancel(tmp_path / "extra", TEACHER)
    finally:
        for run in after.queue(tmp_path):
            after.cancel(run)
        after.close()
    assert not (tmp_path / "mine").exists() and not (tmp_path / "extra").exists()


# ----------------------------------------------------------------------------------------------------------------
# The Train page offers the buttons to those who may press them


def as_browser(at, who: Requester):
    """Make this AppTest session the browser `who` (a real one gets its id from its signed cookie)."""
    at.session_state[identity.OWNER] = who.owner
    return rerun(at)


def test_a_stranger_sees_whose_run_it_is_and_no_buttons(root, classroom, sleeper):  # noqa: F811
    classroom(f'[server]\nteacher_token = "{TOKEN}"\n')
    live = owned(hand_made_run(root, "live", [1.0], state="running"), ALICE)
    runs.write_status(live, "running", pid=sleeper.pid)
    ended = owned(hand_made_run(root, "ended", [1.0, 0.5], state="stopped"), ALICE)
    (ended / runs.STATE).write_bytes(b"")  # a checkpoint to resume from (the page only looks for the file)
    for name, gone in (("live", ("stop",)), ("ended", ("resume", "delete_run"))):
        at = as_browser(open_page("train.py", run=name), BOB)
        assert not any(find(at, "button", key) for key in gone), name
        assert "belongs to another browser" in " ".join(texts(at, "caption"))
        at = as_browser(open_page("train.py", run=name), ALICE)
        assert all(find(at, "button", key) for key in gone), name
    assert "You may stop, resume, cancel and delete the runs this browser launched." in texts(at, "caption")


def test_the_teacher_signs_in_with_the_token_and_may_act_on_every_run(root, classroom):  # noqa: F811
    classroom(f'[server]\nteacher_token = "{TOKEN}"\n')
    hand_made_run(root, "from-the-cli", [1.0, 0.5], state="stopped")
    at = as_browser(open_page("train.py", run="from-the-cli"), BOB)
    assert not find(at, "button", "delete_run") and "only the teacher can" in " ".join(texts(at, "caption"))
    box = next(w for w in at.text_input if w.label == "Teacher token")
    box.set_value("a-guess-of-a-student")
    at.button(key="teacher_sign_in").click()
    rerun(at)
    assert "That is not the teacher token of this server's classroom file." in texts(at, "error")
    assert not find(at, "button", "delete_run")
    next(w for w in at.text_input if w.label == "Teacher token").set_value(TOKEN)
    at.button(key="teacher_sign_in").click()
    rerun(at)
    assert any(c.startswith("**Teacher** (signed in)") for c in texts(at, "caption"))
    at.button(key="delete_run").click()  # the teacher deletes a run from the CLI: two presses
    rerun(at)
    assert (root / "from-the-cli").is_dir() and any("There is no undo" in w for w in texts(at, "warning"))
    at.button(key="delete_confirmed").click()
    rerun(at)
    assert not (root / "from-the-cli").exists()
    assert rerun(at).info and "No runs in" in " ".join(texts(at, "info"))
    at.button(key="teacher_sign_out").click()
    rerun(at)
    assert not find(at, "button", "teacher_sign_out") and find(at, "button", "teacher_sign_in")


def test_the_owner_deletes_its_run_or_keeps_it(root, classroom):  # noqa: F811
    classroom("[training]\nper_session = 1\n")
    owned(hand_made_run(root, "first", [1.0], state="done"), ALICE)
    owned(hand_made_run(root, "second", [1.0, 0.5], state="failed", error="out of memory"), ALICE)
    at = as_browser(open_page("train.py", run="second"), ALICE)
    at.button(key="delete_run").click()
    rerun(at)
    at.button(key="delete_kept").click()
    rerun(at)
    assert (root / "second").is_dir() and find(at, "button", "delete_run")
    at.button(key="delete_run").click()
    rerun(at)
    at.button(key="delete_confirmed").click()
    rerun(at)
    assert not (root / "second").exists() and (root / "first").is_dir()
    assert "second: this run's folder was deleted; showing first instead." in texts(at, "info")
    assert not at.exception
