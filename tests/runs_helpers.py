"""Shared by the engine tests: the CLIs run as a user runs them, polling of run folders, and one tiny trained run.

The trained run is made once per session (a subprocess `python -m ddpm_core.train`) and is read-only for the tests:
a test that changes a run works on a copy (`copy_run`).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from ddpm_core import runs
from ddpm_core.config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
POLL_S = 0.02

# The smallest settings that still train a real UNet on digits: each CLI run is a few seconds on a shared CPU.
TINY = {
    "dataset": "digits",
    "base_channels": 8,
    "T": 100,
    "preview_steps": 5,
    "preview_n": 8,
    "batch_size": 32,
    "device": "cpu",
    "evaluate_n": 0,  # the tests that score a run ask for it
}
DIGITS = {**TINY, "steps": 60, "warmup": 20, "log_every": 5, "checkpoint_every": 30, "preview_every": 30,
          "evaluate_n": 100}  # fmt: skip


def flags(settings: dict) -> list[str]:
    """{"batch_size": 32} → ["--batch-size", "32"]."""
    out = []
    for name, value in settings.items():
        out += [f"--{name.replace('_', '-')}", str(value)]
    return out


def cli_env(runs_root: Path) -> dict:
    # one thread each: the tiny models gain nothing from more, and the CPUs are shared with other work
    return {**os.environ, "DDPM_EXPLORER_RUNS": str(runs_root), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def start(module: str, *args, runs_root: Path) -> subprocess.Popen:
    """`python -m ddpm_core.<module> args…` from the repo root, as a user starts it."""
    return subprocess.Popen(
        [sys.executable, "-m", f"ddpm_core.{module}", *map(str, args)],
        cwd=ROOT,
        env=cli_env(runs_root),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_cli(module: str, *args, runs_root: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    proc = start(module, *args, runs_root=runs_root)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def call_cli(module: str, *args, runs_root: Path | None = None) -> subprocess.CompletedProcess:
    """`python -m ddpm_core.<module> args…` called in this process: its main(argv), with stdout and stderr captured
    (and runs_root, when given, as the runs folder in the environment), as run_cli has them — without a process's
    ~3 s of importing torch. For the CLIs' settings and errors; test_cli.py starts each CLI as a real process."""
    main = importlib.import_module(f"ddpm_core.{module}").main
    out, err = io.StringIO(), io.StringIO()
    before = os.environ.get("DDPM_EXPLORER_RUNS")
    if runs_root is not None:
        os.environ["DDPM_EXPLORER_RUNS"] = str(runs_root)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as e:  # argparse's usage errors
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        if before is None:
            os.environ.pop("DDPM_EXPLORER_RUNS", None)
        else:
            os.environ["DDPM_EXPLORER_RUNS"] = before
    return subprocess.CompletedProcess([module, *map(str, args)], code, out.getvalue(), err.getvalue())


def wait_until(predicate, proc: subprocess.Popen, timeout: float, what: str):
    """Poll predicate() until it is truthy (returned), the process ends (failure) or the deadline passes (failure).
    The pause between polls is a wait on the process itself."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the process exited ({proc.returncode}) before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {what} within {timeout} s")
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(POLL_S)
    return value


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ----------------------------------------------------------------------------------------------------------------
# The shared trained run


@dataclass(frozen=True)
class TrainedRun:
    path: Path
    config: TrainConfig  # what the CLI flags describe
    returncode: int
    stdout: str
    stderr: str
    pid: int
    running: dict  # status.json as first seen while the process was still training


_CACHE: dict[str, TrainedRun] = {}


def digits_run(tmp_path_factory) -> TrainedRun:
    """60 steps on digits through the CLI, made once per session."""
    if "digits" not in _CACHE:
        root = tmp_path_factory.mktemp("shared-runs")
        path = root / "digits"
        proc = start("train", *flags(DIGITS), "--out", path, runs_root=root)
        running = {}
        deadline = time.monotonic() + 180
        while proc.poll() is None and not running and time.monotonic() < deadline:
            status = runs.read_status(path)
            if status.get("state") == "running":
                running = status
            else:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(POLL_S)
        out, err = proc.communicate(timeout=180)
        if proc.returncode != 0:
            pytest.fail(f"the shared training run failed ({proc.returncode}):\n{out}\n{err}")
        config = TrainConfig(**DIGITS, out=str(path))
        _CACHE["digits"] = TrainedRun(path, config, proc.returncode, out, err, proc.pid, running)
    return _CACHE["digits"]
