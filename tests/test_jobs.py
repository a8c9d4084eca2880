"""The job registry launches real tiny training runs as separate processes: done, stopped, resumed, refused when
full, failed with the trainer's message, and a process that dies without a word is recorded as failed. Submitted runs
wait in a first-come-first-served queue that survives a restart; the per-session limit and the teacher's switch hold
at the registry, whatever the page shows."""

import contextlib
import os
import signal
import subprocess
import time

import pytest
import torch

from ddpm_core import run_history, runs
from ddpm_core.config import TrainConfig
from explorer import owners
from explorer.classroom import Classroom
from explorer.jobs import (
    MAX_RUNS_ENV,
    OFF,
    JobRegistry,
    LaunchError,
    default_max_runs,
    run_folder,
)
from explorer.owners import Requester
from tests.runs_helpers import TINY

QUICK = {**TINY, "steps": 30, "warmup": 5, "log_every": 5, "preview_every": 15, "checkpoint_every": 15}
LONG = {**QUICK, "steps": 1_000_000, "preview_every": 0, "checkpoint_every": 0}  # runs until stopped
BRIEF = {**QUICK, "steps": 5, "preview_every": 0, "checkpoint_every": 0, "evaluate_n": 0}  # a queue's quick turn


@pytest.fixture(autouse=True)
def one_thread_each(monkeypatch, tmp_path):
    """The trainer inherits the environment: one thread on a shared CPU; runs land in tmp_path."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("DDPM_EXPLORER_RUNS", str(tmp_path))


def cleaned_up(reg: JobRegistry):
    """Never leave a trainer or a queue's watcher behind, even when a test fails."""
    reg.close()
    for path in reg.queue():
        reg.cancel(path)
    for path in reg.active():
        job = reg.job(path)
        if job is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(job.process.pid, signal.SIGKILL)
            job.process.wait()


@pytest.fixture
def registry():
    reg = JobRegistry()
    yield reg
    cleaned_up(reg)


@pytest.fixture
def room():
    """A registry with room for one run at a time and one run per session, whatever the environment says."""
    reg = JobRegistry(max_runs=1, room=lambda: Classroom(per_session=1))
    yield reg
    cleaned_up(reg)


def until(predicate, job, timeout: float, what: str):
    """Poll predicate() until truthy; the pause between polls is a wait on the trainer process."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout} s; train.log:\n{run_history.log_tail(job.run_dir)}")
        with contextlib.suppress(subprocess.TimeoutExpired):
            job.process.wait(0.05)
    return value


def finished(registry, job, timeout: float = 120) -> dict:
    """Wait for the process to end; its status once the registry has recorded its end."""
    until(lambda: not job.alive, job, timeout, "end of the trainer")
    registry.job(job.run_dir)
    return run_history.read_status(job.run_dir)


def training(job, step: int = 5):
    return lambda: run_history.read_status(job.run_dir).get("step", 0) >= step


def test_a_tiny_run_trains_to_done_in_its_own_process(registry, tmp_path):
    run_dir = run_folder("tiny run", "digits", tmp_path)
    assert run_dir == tmp_path / "tiny-run"
    job = registry.launch(TrainConfig(**QUICK), run_dir)
    assert os.getpgid(job.process.pid) == job.process.pid != os.getpgid(0)  # its own group: a stop reaches it alone
    status = finished(registry, job)
    assert job.process.returncode == 0, run_history.log_tail(run_dir)
    assert status["state"] == "done" and status["step"] == 30 and status["pid"] == job.process.pid
    assert [r["step"] for r in run_history.read_records(run_dir)] == [5, 10, 15, 20, 25, 30]
    assert runs.read_json(run_dir / runs.CONFIG)["out"] == str(run_dir)
    assert run_history.latest_previews(run_dir).step == 30
    assert "ddpm_core.train --config" in run_history.log_tail(run_dir)
    with pytest.raises(LaunchError, match="already holds a trained model"):
        registry.launch(TrainConfig(**QUICK), run_dir)


def test_the_limit_refuses_a_second_run_then_stop_and_resume(registry, tmp_path, monkeypatch):
    monkeypatch.setenv(MAX_RUNS_ENV, "1")
    first = registry.launch(TrainConfig(**LONG), tmp_path / "first")
    with pytest.raises(LaunchError, match=r"1 run\(s\) already training \(first\) and at most 1 may run at once"):
        registry.launch(TrainConfig(**QUICK), tmp_path / "second")
    assert not (tmp_path / "second").exists()
    until(training(first), first, 120, "training step")
    registry.stop(first.run_dir)
    status = finished(registry, first)
    assert status["state"] == "stopped" and status["error"] is None
    assert (first.run_dir / runs.MODEL).is_file()  # the trainer checkpointed on its way out

    step = status["step"]
    with pytest.raises(LaunchError, match=f"at step {step}"):
        registry.resume(first.run_dir, step)
    resumed = registry.resume(first.run_dir, step + 10)
    status = finished(registry, resumed)
    assert status["state"] == "done" and status["step"] == step + 10
    steps = [r["step"] for r in run_history.read_records(first.run_dir)]
    assert steps == sorted(set(steps)) and steps[-1] == step + 10


def test_a_stop_before_training_starts_ends_the_process_as_stopped(registry, tmp_path):
    job = registry.launch(TrainConfig(**LONG), tmp_path / "early")
    registry.stop(job.run_dir)  # at once: the trainer is still importing torch
    status = finished(registry, job, timeout=60)
    assert status["state"] == "stopped"
    assert registry.active(tmp_path) == []


def test_a_failing_run_reports_the_trainers_message(registry, tmp_path):
    config = TrainConfig(**{**QUICK, "dataset": "mnist", "data_root": str(tmp_path / "empty")})
    job = registry.launch(config, tmp_path / "no-mnist")
    status = finished(registry, job)
    assert job.process.returncode == 2
    assert status["state"] == "failed" and status["error"].startswith("MNIST not found under")
    row = run_history.history_row(job.run_dir)
    assert row.state == "failed" and "MNIST not found" in row.error
    with pytest.raises(LaunchError, match=r"already holds a run \(failed\)"):
        registry.launch(TrainConfig(**QUICK), job.run_dir)


def test_a_process_killed_without_a_word_is_recorded_as_failed(registry, tmp_path):
    job = registry.launch(TrainConfig(**LONG), tmp_path / "killed")
    until(training(job), job, 120, "training step")
    os.kill(job.process.pid, signal.SIGKILL)
    status = finished(registry, job)
    assert status["state"] == "failed" and "exited with code -9" in status["error"]


def test_a_run_launched_elsewhere_counts_towards_the_limit(registry, tmp_path, monkeypatch):
    monkeypatch.setenv(MAX_RUNS_ENV, "1")
    elsewhere = tmp_path / "from-the-cli"
    elsewhere.mkdir()
    runs.write_status(elsewhere, "running", pid=os.getpid(), step=3, total_steps=10)  # a live process
    assert registry.active(tmp_path) == [elsewhere.resolve()]
    with pytest.raises(LaunchError, match="from-the-cli"):
        registry.launch(TrainConfig(**QUICK), tmp_path / "mine")
    runs.write_status(elsewhere, "running", pid=2**22 + 1)  # above Linux's pid_max: no such process
    assert registry.active(tmp_path) == []
    assert run_history.history_row(elsewhere).state == "interrupted"


def test_max_runs_comes_from_the_classroom_file_then_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("DDPM_EXPLORER_CONFIG", raising=False)
    monkeypatch.setenv(MAX_RUNS_ENV, "3")
    assert JobRegistry().max_runs == 3 and JobRegistry(max_runs=5).max_runs == 5
    for bad in ("0", "-1", "two", ""):
        monkeypatch.setenv(MAX_RUNS_ENV, bad)
        assert JobRegistry().max_runs == default_max_runs() == (2 if torch.cuda.is_available() else 1)
    (tmp_path / "classroom.toml").write_text("[training]\nmax_concurrent = 4\nper_session = 2\n")
    monkeypatch.setenv("DDPM_EXPLORER_CONFIG", str(tmp_path / "classroom.toml"))
    assert (JobRegistry().max_runs, JobRegistry().per_session) == (4, 2)
    monkeypatch.setenv(MAX_RUNS_ENV, "3")  # the environment wins where it speaks
    assert JobRegistry().max_runs == 3


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_a_missing_device_is_refused_before_anything_starts(registry, tmp_path):
    with pytest.raises(LaunchError, match="no CUDA GPU"):
        registry.launch(TrainConfig(**{**QUICK, "device": "cuda"}), tmp_path / "gpu")
    assert not (tmp_path / "gpu").exists()


def test_run_names_are_sanitised_or_refused(tmp_path):
    assert run_folder("../../etc", "digits", tmp_path) == tmp_path / "etc"
    assert run_folder("", "moons", tmp_path).name.startswith("moons-")
    with pytest.raises(ValueError, match="no letters or digits"):
        run_folder("///", "digits", tmp_path)


# ----------------------------------------------------------------------------------------------------------------
# The queue, the per-session limit and the teacher's switch


def test_submitted_runs_wait_in_a_queue_and_start_first_come_first_served(room, tmp_path):
    first = room.submit(TrainConfig(**LONG), tmp_path / "first", who=Requester("a"))
    assert first is not None  # a free slot: it starts at once
    assert room.submit(TrainConfig(**BRIEF), tmp_path / "second", who=Requester("b")) is None
    assert room.submit(TrainConfig(**BRIEF), tmp_path / "third", who=Requester("c")) is None
    second, third = (tmp_path / "second").resolve(), (tmp_path / "third").resolve()
    assert room.queue(tmp_path) == [second, third]
    status = run_history.read_status(second)
    assert (status["state"], status["total_steps"], owners.owner_of(second)) == ("queued", 5, "b")
    assert runs.read_json(second / runs.CONFIG)["out"] == str(second)  # ready to start as it is
    assert [r.state for r in run_history.history(tmp_path)].count("queued") == 2
    assert JobRegistry().queue(tmp_path) == [second, third]  # a restarted server finds the queue in the folders

    room.stop(first.run_dir)  # the slot frees up: the watcher thread starts the head of the queue, and so on
    assert finished(room, first)["state"] == "stopped"
    assert room.drain(tmp_path, timeout=180), run_history.log_tail(second)  # the last one has started
    assert finished(room, room.job(second))["state"] == "done"
    assert finished(room, room.job(third))["state"] == "done"
    assert run_history.read_status(third)["started"] > run_history.read_status(second)["updated"]  # one at a time


def test_a_restarted_server_starts_the_queue_it_finds(tmp_path, monkeypatch):
    monkeypatch.setenv(MAX_RUNS_ENV, "1")
    elsewhere = tmp_path / "from-the-cli"
    elsewhere.mkdir()
    runs.write_status(elsewhere, "running", pid=os.getpid(), step=3, total_steps=10)  # a live process holds the slot
    before = JobRegistry()
    assert before.submit(TrainConfig(**BRIEF), tmp_path / "waiting") is None
    before.close()  # the server goes away
    restarted = JobRegistry()
    try:
        assert restarted.poll(tmp_path) == [] and restarted.queue(tmp_path) == [(tmp_path / "waiting").resolve()]
        runs.write_status(elsewhere, "done")
        (job,) = restarted.poll(tmp_path)
        assert job.run_dir == (tmp_path / "waiting").resolve() and restarted.queue(tmp_path) == []
        assert finished(restarted, job)["state"] == "done"
    finally:
        cleaned_up(restarted)


def test_the_per_browser_limit_counts_running_and_queued_runs(room, tmp_path):
    assert room.submit(TrainConfig(**LONG), tmp_path / "mine", who=Requester("a")) is not None
    with pytest.raises(LaunchError, match=r"This browser already has 1 run\(s\) training or waiting \(mine\)"):
        room.submit(TrainConfig(**QUICK), tmp_path / "more", who=Requester("a"))
    assert not (tmp_path / "more").exists()
    assert room.submit(TrainConfig(**QUICK), tmp_path / "theirs", who=Requester("b")) is None  # queued
    with pytest.raises(LaunchError, match=r"already has 1 run\(s\) training or waiting \(theirs\)"):
        room.submit(TrainConfig(**QUICK), tmp_path / "again", who=Requester("b"))
    with pytest.raises(
        LaunchError, match="belongs to another browser, the one that launched it: only it or the teacher can cancel it"
    ):
        room.cancel(tmp_path / "theirs", who=Requester("a"))
    room.cancel(tmp_path / "theirs", who=Requester("b"))
    assert not (tmp_path / "theirs").exists() and room.queue(tmp_path) == []
    assert room.submit(TrainConfig(**QUICK), tmp_path / "again", who=Requester("b")) is None  # b has room again
    with pytest.raises(LaunchError, match="not waiting in the queue"):
        room.cancel(tmp_path / "mine", who=Requester("a"))


def test_the_teachers_switch_refuses_launch_submit_and_resume(registry, tmp_path, monkeypatch):
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    for name in (runs.MODEL, runs.STATE):
        (stopped / name).write_bytes(b"")
    runs.write_status(stopped, "stopped", step=10)
    monkeypatch.setenv("DDPM_EXPLORER_TRAINING", "off")
    assert not registry.training
    for call in (
        lambda: registry.launch(TrainConfig(**QUICK), tmp_path / "a"),
        lambda: registry.submit(TrainConfig(**QUICK), tmp_path / "b", who=Requester("s")),
        lambda: registry.resume(stopped, 20),
    ):
        with pytest.raises(LaunchError, match="Training is turned off on this server"):
            call()
    assert str(OFF).startswith("Training is turned off") and registry.active(tmp_path) == []
    assert [p.name for p in run_history.run_dirs(tmp_path)] == ["stopped"]  # nothing written
