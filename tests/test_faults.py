"""Faults: a trainer killed with SIGKILL, a kill in the middle of a checkpoint write, a full disk, two sessions
launching at once, and an app server restarted while a run trains. Nothing saved may be lost, and every failure
must say what happened.

tests/test_train.py kills a CLI run (`python -m ddpm_core.train`) and resumes it from the CLI, and fills the disk
under a Trainer; here the same faults hit the app's path (explorer/jobs.JobRegistry, the Train page) and the CLI's
error line.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ddpm_core import run_history, runs, train
from ddpm_core.config import TrainConfig
from explorer import identity
from explorer.checkpoints import checkpoint_files
from explorer.jobs import MAX_RUNS_ENV, JobRegistry, LaunchError
from explorer.owners import Requester
from tests.apptest_helpers import open_page, rerun
from tests.runs_helpers import DIGITS, ROOT, TINY, flags, wait_until

BUNDLED = ROOT / "assets" / "checkpoints" / "digits.safetensors"
QUICK = {**TINY, "steps": 30, "warmup": 5, "log_every": 5, "preview_every": 15, "checkpoint_every": 15, "evaluate_n": 0}
ENDLESS = {**QUICK, "steps": 1_000_000, "log_every": 1, "preview_every": 0, "checkpoint_every": 5}
CHECKPOINTS = (runs.MODEL, runs.EMA, runs.STATE)


@pytest.fixture(autouse=True)
def environment(monkeypatch, tmp_path):
    """Trainers inherit the environment: one thread on a shared CPU, runs in tmp_path, one run at a time."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("DDPM_EXPLORER_RUNS", str(tmp_path))
    monkeypatch.setenv(MAX_RUNS_ENV, "1")


@pytest.fixture
def processes():
    """Popen handles a test starts, directly or through a registry; killed (their whole group) if still alive."""
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def finished(registry: JobRegistry, proc: subprocess.Popen, run: Path, timeout: float = 120) -> dict:
    """Wait for the trainer to end; its status once the registry has looked at its end."""
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{run.name} did not finish within {timeout} s:\n{run_history.log_tail(run)}")
    registry.job(run)
    return run_history.read_status(run)


def steps_of(run: Path) -> list[int]:
    return [r["step"] for r in runs.read_metrics(run)]


def file_bytes(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}


# ----------------------------------------------------------------------------------------------------------------
# kill -9


def test_kill_9_of_an_app_launched_run_then_resume_from_the_last_checkpoint(tmp_path, processes):
    registry = JobRegistry()
    run = tmp_path / "killed"
    job = registry.launch(TrainConfig(**ENDLESS), run)
    processes.append(job.process)

    def between_checkpoints():  # steps logged that no checkpoint holds yet, as a crash would find them
        steps = steps_of(run)
        return runs.read_status(run).get("checkpoint_step", 0) >= 10 and steps and steps[-1] % 5 in (2, 3)

    wait_until(between_checkpoints, job.process, 120, "a checkpoint at step ≥ 10 and two more steps")
    os.killpg(job.process.pid, signal.SIGKILL)
    status = finished(registry, job.process, run)
    assert status["state"] == "failed" and "exited with code -9" in status["error"]

    raw, ema = runs.load_checkpoint(run, prefer_ema=False), runs.load_checkpoint(run)
    assert raw.step == ema.step == runs.load_training_state(run / runs.STATE)["step"]
    assert raw.step >= 10 and raw.step % 5 == 0 and steps_of(run)[-1] > raw.step
    resumed = registry.resume(run, raw.step + 10)
    processes.append(resumed.process)
    status = finished(registry, resumed.process, run)
    assert status["state"] == "done" and status["step"] == raw.step + 10, run_history.log_tail(run)
    steps = steps_of(run)
    assert steps == sorted(set(steps)) == list(range(1, raw.step + 11))  # strictly increasing, nothing repeated
    assert runs.load_checkpoint(run).step == raw.step + 10


# ----------------------------------------------------------------------------------------------------------------
# A kill in the middle of a checkpoint write

# The real save_weights, whose serialiser writes half the new file into atomic_write's temp file and then waits to
# be killed: the kill lands, deterministically, while the new checkpoint is half on disk.
HALF_WRITTEN = """
import sys
from ddpm_core import runs

def half_then_wait(tensors, filename, metadata):
    real_save_file(tensors, filename, metadata=metadata)
    with open(filename, "r+b") as f:
        f.truncate(f.seek(0, 2) // 2)
    print(filename, flush=True)
    sys.stdin.read()

real_save_file, runs.save_file = runs.save_file, half_then_wait
ckpt = runs.load_checkpoint(sys.argv[1])
runs.save_weights(ckpt.path, ckpt.model, ckpt.config, ckpt.model_config, ckpt.step + 1, ckpt.data)
"""


def test_a_kill_during_a_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, processes):
    run = tmp_path / "run"
    run.mkdir()
    for name in (runs.EMA, runs.MODEL):
        shutil.copy(BUNDLED, run / name)
    before = file_bytes(run)
    step = runs.load_checkpoint(run).step
    child = subprocess.Popen(
        [sys.executable, "-c", HALF_WRITTEN, str(run / runs.EMA)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    processes.append(child)
    temp = Path(child.stdout.readline().strip())  # blocks until the half file is written (or the child died)
    assert temp.name.startswith(f".{runs.EMA}.") and temp.is_file(), child.communicate(timeout=30)
    child.kill()
    child.communicate(timeout=30)

    assert {name: (run / name).read_bytes() for name in before} == before  # the old files, and a temp beside them
    assert runs.load_checkpoint(run).step == runs.load_checkpoint(run / runs.EMA).step == step
    assert runs.resolve_checkpoint(run) == run / runs.EMA  # the temp is never taken for a checkpoint
    assert str(temp) not in checkpoint_files(tmp_path) and str(run / runs.EMA) in checkpoint_files(tmp_path)
    with pytest.raises(runs.CheckpointError, match="not a readable safetensors checkpoint"):
        runs.load_checkpoint(temp)  # and if someone picks it by hand, it is refused, not half-loaded
    ckpt = runs.load_checkpoint(run)
    runs.save_weights(run / runs.EMA, ckpt.model, ckpt.config, ckpt.model_config, step + 1, ckpt.data)
    assert runs.load_checkpoint(run).step == step + 1  # the next save goes through beside the stray temp


# ----------------------------------------------------------------------------------------------------------------
# A full disk


def full_disk(only: tuple[str, ...] | None = None):
    """os.replace — atomic_write's last step — failing with ENOSPC (for the files named in only, or for all)."""
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if only is None or os.path.basename(dst) in only:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return real_replace(src, dst, *args, **kwargs)

    return replace


@pytest.fixture
def small_run(tmp_path, capsys) -> Path:
    """A 10-step digits run made in process, with checkpoints."""
    run = tmp_path / "small"
    argv = [*flags({**DIGITS, "steps": 10, "checkpoint_every": 5, "preview_every": 0, "evaluate_n": 0})]
    assert train.main([*argv, "--out", str(run)]) == 0, capsys.readouterr().err
    capsys.readouterr()
    return run


def test_a_full_disk_at_a_checkpoint_fails_the_cli_run_with_an_error_line(small_run, monkeypatch, capsys):
    before = {name: (small_run / name).read_bytes() for name in CHECKPOINTS}
    monkeypatch.setattr(os, "replace", full_disk(only=CHECKPOINTS))
    rc = train.main(["--out", str(small_run), "--resume", "--steps", "15"])
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert "No space left on device" in err
    status = runs.read_status(small_run)
    assert status["state"] == "failed" and "No space left on device" in status["error"]
    assert {name: (small_run / name).read_bytes() for name in CHECKPOINTS} == before
    assert runs.load_checkpoint(small_run).step == runs.load_training_state(small_run / runs.STATE)["step"] == 10
    assert not list(small_run.rglob("*.tmp"))


def test_a_disk_full_from_the_start_changes_nothing(small_run, monkeypatch, capsys):
    before = file_bytes(small_run)
    monkeypatch.setattr(os, "replace", full_disk())
    rc = train.main(["--out", str(small_run), "--resume", "--steps", "15"])
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("error: ") and "No space left on device" in err and "Traceback" not in err
    assert file_bytes(small_run) == before and not list(small_run.rglob("*.tmp"))


def test_a_full_disk_refuses_an_app_launch_with_a_message(tmp_path, monkeypatch, processes):
    registry = JobRegistry()
    monkeypatch.setattr(os, "replace", full_disk())
    # the runs folder's write probe (explorer/run_folders.py) or the run folder's own first write says so
    with pytest.raises(LaunchError, match=r"(cannot write the run folder .*full|cannot be written).*No space left"):
        registry.launch(TrainConfig(**QUICK), tmp_path / "full")
    monkeypatch.undo()
    assert registry.active(tmp_path) == [] and not run_history.run_dirs(tmp_path)


# ----------------------------------------------------------------------------------------------------------------
# Two sessions launching at once


def launch_together(registry: JobRegistry, folders: list[Path]) -> list:
    """Launch from one thread per folder, released together (the app serves each browser session in a thread)."""
    barrier, results = threading.Barrier(len(folders)), [None] * len(folders)

    def go(i: int) -> None:
        barrier.wait()
        try:
            results[i] = registry.launch(TrainConfig(**QUICK), folders[i])
        except LaunchError as e:
            results[i] = e

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(folders))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_two_sessions_at_once_with_room_for_one_the_second_is_told_to_wait(tmp_path, processes):
    registry = JobRegistry(max_runs=1)
    results = launch_together(registry, [tmp_path / "a", tmp_path / "b"])
    jobs = [r for r in results if not isinstance(r, LaunchError)]
    refused = [r for r in results if isinstance(r, LaunchError)]
    processes.extend(j.process for j in jobs)
    assert len(jobs) == len(refused) == 1
    assert "at most 1 may run at once: stop one or wait for it to finish" in str(refused[0])
    (job,) = jobs
    loser = ({tmp_path / "a", tmp_path / "b"} - {job.run_dir}).pop()
    assert not loser.exists()
    assert finished(registry, job.process, job.run_dir)["state"] == "done"


def test_two_sessions_at_once_with_room_for_two_both_finish_apart(tmp_path, processes):
    registry = JobRegistry(max_runs=2)
    folders = [tmp_path / "a", tmp_path / "b"]
    jobs = launch_together(registry, folders)
    assert not [j for j in jobs if isinstance(j, LaunchError)], jobs
    processes.extend(j.process for j in jobs)
    assert {j.run_dir for j in jobs} == set(folders) and jobs[0].process.pid != jobs[1].process.pid
    for job in jobs:
        status = finished(registry, job.process, job.run_dir)
        assert status["state"] == "done" and status["pid"] == job.process.pid, run_history.log_tail(job.run_dir)
        assert steps_of(job.run_dir) == [5, 10, 15, 20, 25, 30]
        assert runs.read_json(job.run_dir / runs.CONFIG)["out"] == str(job.run_dir)
        assert runs.load_checkpoint(job.run_dir).step == 30
    assert [r.state for r in run_history.history(tmp_path)] == ["done", "done"]


# ----------------------------------------------------------------------------------------------------------------
# The app server restarted while a run trains


def test_after_a_server_restart_the_train_page_finds_the_run_and_stops_it(tmp_path, processes):
    first = JobRegistry()
    run = tmp_path / "survivor"
    browser = Requester("f" * 32)  # the browser that launched it: its cookie names it again after the restart
    job = first.launch(TrainConfig(**{**ENDLESS, "checkpoint_every": 0}), run, browser)
    proc = job.process
    processes.append(proc)
    wait_until(lambda: runs.read_status(run).get("step", 0) >= 3, proc, 120, "training")
    del first, job  # the server goes away; the trainer, in its own session, goes on

    restarted = JobRegistry()
    assert restarted.job(run) is None and restarted.active(tmp_path) == [run.resolve()]
    at = open_page("train.py")  # the page's registry has never seen this run either
    at.session_state[identity.OWNER] = browser.owner
    assert "survivor" in set(at.dataframe[0].value["name"])
    assert at.dataframe[0].value.set_index("name").loc["survivor", "status"] == "running"
    assert any("1 run(s) training now (survivor)" in w.value for w in at.warning)
    at.selectbox(key="run").set_value("survivor")
    rerun(at)
    assert "/ 1,000,000" in at.get("progress")[0].proto.text
    at.button(key="stop").click()  # the STOP file reaches a trainer the app did not start
    rerun(at)
    try:
        proc.wait(120)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the trainer did not stop:\n{run_history.log_tail(run)}")
    rerun(at)
    status = runs.read_status(run)
    assert status["state"] == "stopped" and status["checkpoint_step"] == status["step"]
    assert at.dataframe[0].value.set_index("name").loc["survivor", "status"] == "stopped"
    assert not at.warning and at.button(key="resume")
