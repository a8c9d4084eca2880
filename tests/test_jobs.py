"""The job registry launches real tiny training runs as separate processes: done, stopped, resumed, refused when
full, failed with the trainer's message, and a process that dies without a word is recorded as failed."""

import contextlib
import os
import signal
import subprocess
import time

import pytest
import torch

from ddpm_core import run_history, runs
from ddpm_core.config import TrainConfig
from explorer.jobs import MAX_RUNS_ENV, JobRegistry, LaunchError, default_max_runs, max_concurrent_runs, run_folder
from tests.runs_helpers import TINY

QUICK = {**TINY, "steps": 30, "warmup": 5, "log_every": 5, "preview_every": 15, "checkpoint_every": 15}
LONG = {**QUICK, "steps": 1_000_000, "preview_every": 0, "checkpoint_every": 0}  # runs until stopped


@pytest.fixture(autouse=True)
def one_thread_each(monkeypatch, tmp_path):
    """The trainer inherits the environment: one thread on a shared CPU; runs land in tmp_path."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("DDPM_EXPLORER_RUNS", str(tmp_path))


@pytest.fixture
def registry():
    reg = JobRegistry()
    yield reg
    for path in reg.active():  # never leave a trainer behind, even when a test fails
        job = reg.job(path)
        if job is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(job.process.pid, signal.SIGKILL)
            job.process.wait()


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


def test_max_runs_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(MAX_RUNS_ENV, "3")
    assert max_concurrent_runs() == 3
    for bad in ("0", "-1", "two", ""):
        monkeypatch.setenv(MAX_RUNS_ENV, bad)
        assert max_concurrent_runs() == default_max_runs() == (2 if torch.cuda.is_available() else 1)


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
