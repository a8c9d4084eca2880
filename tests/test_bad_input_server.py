"""The bad-input table (tests/test_bad_input.py), continued for a classroom server that strangers share: a
classroom file's list with one bad entry (the good entries still apply), and run folders that vanish or hold a
status caught mid-write under the Train page (a message, never a traceback), and a stranger's request to act on a
run that is not theirs, however it reaches the registry (a refusal that says whose it is)."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from ddpm_core import runs
from explorer import owners
from explorer import train_queue as tq
from explorer.classroom import load_classroom
from explorer.jobs import LaunchError
from explorer.owners import Requester
from tests.apptest_helpers import open_page, rerun
from tests.test_bad_input import Env, env  # noqa: F401 (env: a fixture)
from tests.test_page_train import hand_made_run


def classroom(text: str, applies: Callable[[object], bool]) -> Callable[[Env], str]:
    """The classroom file's problems, once its good entries are checked to still apply."""

    def call(e: Env) -> str:
        path = e.tmp / "classroom.toml"
        path.write_text(text)
        room = load_classroom(path, {})
        assert applies(room), room
        return "problems: " + " | ".join(room.problems)

    return call


def train_page(prepare: Callable[[Env], object], change: Callable[[Env], object]) -> Callable[[Env], str]:
    """The Train page over run folders prepare made, rerun after change: no exception; its st.info and st.error."""

    def call(e: Env) -> str:
        prepare(e)
        at = open_page("train.py")
        change(e)
        rerun(at)
        return " | ".join([f"st.info: {i.value}" for i in at.info] + [f"st.error: {e.value}" for e in at.error])

    return call


def two_runs(e: Env) -> None:
    hand_made_run(e.runs_root, "kept", [1.0, 0.4])
    hand_made_run(e.runs_root, "gone", [1.0, 0.5], updated=2e9)  # the newest: the one the page watches


def status(write: Callable[[object], object]) -> Callable[[Env], object]:
    return lambda e: write(e.runs_root / "gone" / runs.STATUS)


def _as_folder(path) -> None:
    path.unlink()
    path.mkdir()


def strangers(action: Callable[[Path, Requester], object], owner: str = "a" * 32) -> Callable[[Env], str]:
    """A stranger's request, straight to the app's registry, on an ended run owned by `owner` ("" for none): the
    refusal, once the run is checked to be untouched."""

    def call(e: Env) -> str:
        run = hand_made_run(e.runs_root, "theirs", [1.0, 0.5], state="stopped")
        owners.record_owner(run, owner)
        before = sorted(p.name for p in run.iterdir())
        try:
            action(run, Requester("b" * 32))
        except LaunchError as err:
            assert sorted(p.name for p in run.iterdir()) == before
            return f"LaunchError: {err}"
        return "accepted"

    return call


ROWS = [
    # -- classroom lists: one bad entry, the rest kept
    pytest.param(
        classroom('[pages]\nhidden = ["train", "trian"]\n', lambda r: r.hidden_pages == ("train",)),
        r"\[pages\] hidden must be a list of page names from home, .*; 'trian' is not; the other entries still apply",
        id="classroom-hidden-typo",
    ),
    pytest.param(
        classroom('[pages]\nhidden = ["home", "sample"]\n', lambda r: r.hidden_pages == ("sample",)),
        r"\[pages\] hidden cannot hide the home page: .*; the other entries still apply",
        id="classroom-hidden-home",
    ),
    pytest.param(
        classroom(
            "[locked.sample]\nguidance_scales = [0, [1], 4]\n",
            lambda r: r.default("sample", "guidance_scales") == [0, 4],
        ),
        r"\[locked.sample\] guidance_scales must be a number, .* got \[1\] among them; the others still apply",
        id="classroom-locked-list-entry",
    ),
    pytest.param(
        classroom('[server]\nteacher_token = "1234"\n', lambda r: r.teacher_token is None),
        r"\[server\] teacher_token must be a string of 12 to 200 printable characters .*; ignored$",
        id="classroom-weak-teacher-token",
    ),
    # -- a run that belongs to another browser, or to nobody (the CLI's): refused, untouched
    pytest.param(
        strangers(lambda run, who: tq.registry().delete(run, who)),
        r"^LaunchError: theirs belongs to another browser, the one that launched it: only it or the teacher can "
        r"delete it$",
        id="owner-stranger-deletes",
    ),
    pytest.param(
        strangers(lambda run, who: tq.registry().stop(run, who)),
        r"only it or the teacher can stop it$",
        id="owner-stranger-stops",
    ),
    pytest.param(
        strangers(lambda run, who: tq.registry().resume(run, 100, who), owner=""),
        r"^LaunchError: theirs was not launched from this app's Train page .*only the teacher can resume it$",
        id="owner-cli-run-resumed-from-the-app",
    ),
    # -- run folders that vanish, or whose status is caught mid-write
    pytest.param(
        train_page(two_runs, lambda e: shutil.rmtree(e.runs_root / "gone")),
        r"^st.info: gone: this run's folder was deleted; showing kept instead\.$",
        id="train-watched-run-deleted",
    ),
    pytest.param(
        train_page(two_runs, status(lambda p: p.rename(p.with_name(f".{p.name}.ab12.tmp")))),
        r"^st.info: gone: its status.json is being rewritten right now",
        id="train-status-mid-rename",
    ),
    pytest.param(
        train_page(two_runs, status(lambda p: p.write_text('{"state": "runn'))),
        r"^st.error: gone unknown: no status.json that says why$",
        id="train-status-truncated",
    ),
    pytest.param(
        train_page(two_runs, status(_as_folder)),
        r"^st.error: gone unknown: no status.json that says why$",
        id="train-status-a-folder",
    ),
]


@pytest.mark.parametrize(("call", "message"), ROWS)
def test_bad_input_gets_a_clear_message(env, call, message):  # noqa: F811
    shown = call(env)
    assert re.search(message, shown), shown
