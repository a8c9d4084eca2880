"""One trainer per run folder (issue 15 §5): the lock file, and the CLI's refusal of a folder that is another run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from ddpm_core import runs
from ddpm_core import train as train_cli  # the CLI
from ddpm_core.config import TrainConfig
from ddpm_core.run_lock import LOCK, RunLock, RunLocked
from tests.conftest import ROOT

MOONS = ["--dataset", "moons", "--n-points", "200", "--T", "50", "--preview-steps", "5", "--preview-n", "8",
         "--log-every", "5", "--batch-size", "32", "--device", "cpu", "--evaluate-n", "0"]  # fmt: skip


def dead_pid() -> int:
    """The id of a process that has ended (and been reaped): nothing runs under it now."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def write_lock(run_dir, pid: int, host: str | None = None) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / LOCK).write_text(json.dumps({"pid": pid, "host": host or socket.gethostname()}))


def train(capsys, *argv) -> tuple[int, str, str]:
    rc = train_cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_the_lock_holds_pid_and_host_and_goes_at_exit_however_the_block_ends(tmp_path):
    with RunLock(tmp_path / "run") as lock:
        assert json.loads(lock.path.read_text()) == {"pid": os.getpid(), "host": socket.gethostname()}
    assert not (tmp_path / "run" / LOCK).exists()
    for error in (RuntimeError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(error)), RunLock(tmp_path / "run"):
            raise error
        assert not (tmp_path / "run" / LOCK).exists()


def test_a_live_owner_is_refused_a_dead_one_taken_over_with_a_note(tmp_path):
    run = tmp_path / "run"
    write_lock(run, os.getppid())  # our parent: alive
    with pytest.raises(RunLocked, match=rf"is being trained by process {os.getppid()}"):
        RunLock(run).acquire()
    assert json.loads((run / LOCK).read_text())["pid"] == os.getppid()  # a refused trainer leaves the lock alone
    write_lock(run, gone := dead_pid())
    notes = []
    with RunLock(run, log=notes.append):
        assert json.loads((run / LOCK).read_text())["pid"] == os.getpid()
    assert notes == [f"note: taking over {run / LOCK}: its process {gone} is no longer running"]


def test_a_lock_from_another_host_is_honoured(tmp_path):
    write_lock(tmp_path, dead_pid(), host="another-machine")
    with pytest.raises(RunLocked, match=r"being trained by process \d+ on another-machine.*delete .*trainer.lock"):
        RunLock(tmp_path).acquire()


def test_a_second_trainer_of_a_running_run_is_refused_and_sigterm_frees_the_folder(tmp_path, capsys):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "ddpm_core.train", *MOONS, "--steps", "100000", "--out", str(run)]
    first = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    try:
        first.stdout.readline()  # the trainer's first line: it holds the lock and is training
        assert json.loads((run / LOCK).read_text())["pid"] == first.pid
        for again in (["--resume", "--steps", "200000"], [*MOONS, "--steps", "100000"]):
            rc, out, err = train(capsys, "--out", run, *again)
            assert rc == 2 and err == f"error: {run} is being trained by process {first.pid}; wait for it to end or " \
                                      "stop it first\n", err  # fmt: skip
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) == 0
    finally:
        first.kill()
        first.wait()
    assert not (run / LOCK).exists() and runs.read_status(run)["state"] == "stopped"
    rc, out, err = train(capsys, "--out", run, "--resume", "--steps", runs.read_status(run)["step"] + 5)
    assert rc == 0 and "done" in out, err


def test_a_folder_holding_another_run_needs_overwrite(tmp_path, capsys):
    run = tmp_path / "run"
    assert train(capsys, *MOONS, "--steps", "5", "--out", run)[0] == 0  # metrics, status…
    (run / runs.MODEL).unlink()  # no trained model (that refusal is older): config, metrics and status remain
    rc, _, err = train(capsys, *MOONS, "--steps", "6", "--out", run)
    assert rc == 2 and err.startswith(f"error: {run} already holds another run's config.json") and "--overwrite" in err
    assert json.loads((run / runs.CONFIG).read_text())["steps"] == 5  # untouched
    rc, _, err = train(capsys, *MOONS, "--steps", "6", "--out", run, "--overwrite")
    assert rc == 0 and json.loads((run / runs.CONFIG).read_text())["steps"] == 6, err


@pytest.mark.parametrize("prepare", ["missing", "empty", "same config", "queued"])
def test_this_runs_own_folder_is_fine(tmp_path, capsys, prepare):
    run = tmp_path / "run"
    config = TrainConfig.from_dict({**TrainConfig(dataset="moons").to_dict(), "steps": 5, "out": str(run)})
    if prepare != "missing":
        run.mkdir()
    if prepare == "same config":  # the app writes config.json, then starts `--config <run>/config.json --out <run>`
        runs.write_text(run / runs.CONFIG, config.to_json())
    if prepare == "queued":
        runs.write_text(run / runs.CONFIG, TrainConfig(dataset="swiss_roll").to_json())
        runs.write_status(run, "queued")
    train_cli.refuse_another_run(run, config)  # no ValueError


def test_a_run_that_cannot_start_leaves_no_folder_but_one_that_ran_keeps_it(tmp_path, capsys):
    rc, _, err = train(capsys, "--dataset", "folder", "--folder", tmp_path / "no-images", "--out", tmp_path / "never")
    assert rc == 2 and err.startswith("error: ") and not (tmp_path / "never").exists()
    with RunLock(tmp_path / "made") as lock:
        (lock.run_dir / runs.CONFIG).write_text("{}")
    assert (tmp_path / "made" / runs.CONFIG).exists() and not (tmp_path / "made" / LOCK).exists()
