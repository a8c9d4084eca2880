"""Training runs as separate processes: launch, stop, resume, and a limit on how many run at once.

Each run is `python -m ddpm_core.train --config <run>/config.json --out <run>` (the CLI, the same TrainConfig), in
its own session so that a stop signals only it and the app never waits on it. Its stdout and stderr go to
<run>/train.log. The run folder stays the only interface: the registry only keeps the process handles (to count and
stop runs, and to record a process that died without writing its status), so after an app restart the runs are
still found through their folders. One JobRegistry serves every browser session (explorer/train_widgets.py caches
it with st.cache_resource); a lock guards it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ddpm_core import run_history, runs
from ddpm_core.config import TrainConfig
from ddpm_core.devices import resolve_device

ROOT = Path(__file__).resolve().parent.parent
MAX_RUNS_ENV = "DDPM_EXPLORER_MAX_RUNS"


class LaunchError(ValueError):
    """A run cannot be launched, stopped or resumed; the message says why and what to do (shown as is)."""


def runs_root() -> Path:
    """Where runs live: $DDPM_EXPLORER_RUNS, else runs/ in the repository. Read at each call, not at import."""
    return Path(os.environ.get("DDPM_EXPLORER_RUNS", ROOT / "runs"))


def default_max_runs() -> int:
    """One at a time on a CPU (two would halve each other's speed), two with a GPU."""
    return 2 if torch.cuda.is_available() else 1


def max_concurrent_runs() -> int:
    """$DDPM_EXPLORER_MAX_RUNS when it is a positive integer, else default_max_runs()."""
    value = os.environ.get(MAX_RUNS_ENV, "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else default_max_runs()


def run_folder(name: str, dataset: str, root: Path | None = None) -> Path:
    """<runs root>/<name, sanitised>, or <dataset>-<date>-<time> when name is blank; ValueError for a name with
    nothing usable in it."""
    name = name.strip() or f"{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    return (root or runs_root()) / runs.sanitize_run_name(name)


@dataclass
class Job:
    run_dir: Path
    process: subprocess.Popen
    resume: bool
    stop_requested: bool = False
    finished: bool = field(default=False, repr=False)  # its exit has been looked at (and recorded if need be)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


class JobRegistry:
    def __init__(self, max_runs: int | None = None):
        self._max_runs = max_runs  # None: read the environment at each launch
        self._jobs: dict[Path, Job] = {}
        self._lock = threading.RLock()

    @property
    def max_runs(self) -> int:
        return self._max_runs or max_concurrent_runs()

    def job(self, run_dir: Path) -> Job | None:
        with self._lock:
            job = self._jobs.get(Path(run_dir).resolve())
            if job is not None:
                self._finish(job)
            return job

    def active(self, root: Path | None = None) -> list[Path]:
        """The run folders training now: this registry's live processes, plus the runs under root whose status says
        running with a live pid (launched before an app restart, or from the CLI)."""
        with self._lock:
            for job in self._jobs.values():
                self._finish(job)
            mine = [p for p, job in self._jobs.items() if job.alive]
            others = [
                p.resolve()
                for p in run_history.run_dirs(root or runs_root())
                if run_history.run_state(run_history.read_status(p)) == "running" and p.resolve() not in mine
            ]
            return mine + others

    # ------------------------------------------------------------------------------------------------------------

    def launch(self, config: TrainConfig, run_dir: Path) -> Job:
        """Start a new run of config in run_dir, which must not hold a run yet."""
        run_dir = Path(run_dir).resolve()  # the trainer runs from the repository root
        _check_device(config.device)
        config = config.replace(name=run_dir.name, out=str(run_dir))
        with self._lock:
            if (run_dir / runs.MODEL).exists():
                raise LaunchError(f"{run_dir} already holds a trained model: resume it, or pick another run name")
            if run_history.is_run_dir(run_dir):
                state = run_history.run_state(run_history.read_status(run_dir))
                raise LaunchError(f"{run_dir} already holds a run ({state}): pick another run name")
            self._check_room(run_dir)
            try:
                run_dir.mkdir(parents=True, exist_ok=True)
                runs.write_text(run_dir / runs.CONFIG, config.to_json())
            except OSError as e:  # a full disk, a read-only runs folder: say so on the page, not as a traceback
                raise LaunchError(f"cannot write the run folder {run_dir}: {e}") from None
            return self._start(run_dir, ["--config", run_dir / runs.CONFIG, "--out", run_dir], resume=False)

    def resume(self, run_dir: Path, steps: int) -> Job:
        """Continue a stopped or finished run from its last checkpoint until it reaches `steps` in all."""
        run_dir = Path(run_dir).resolve()
        row = run_history.history_row(run_dir)
        if not ((run_dir / runs.MODEL).is_file() and (run_dir / runs.STATE).is_file()):
            raise LaunchError(
                f"{run_dir.name} has no checkpoint yet (it stopped before its first one): nothing to resume"
            )
        if steps <= row.step:
            raise LaunchError(f"{run_dir.name} is at step {row.step:,}: ask for more steps than that to resume it")
        _check_device(run_history.read_config(run_dir).get("device", "auto"))
        with self._lock:
            self._check_room(run_dir)
            return self._start(run_dir, ["--out", run_dir, "--resume", "--steps", steps], resume=True)

    def stop(self, run_dir: Path) -> None:
        """Ask a run to stop cleanly: the trainer sees the STOP file at its next log step, saves a checkpoint and
        writes status "stopped". A process of ours that has not started training yet has nothing to save: it is
        terminated (its status then says stopped)."""
        run_dir = Path(run_dir)
        runs.write_text(run_dir / runs.STOP, "stop requested by the app\n")
        job = self.job(run_dir)
        if job is None or not job.alive:
            return
        job.stop_requested = True
        status = run_history.read_status(run_dir)
        if not (status.get("state") == "running" and status.get("pid") == job.process.pid):
            # the trainer deletes a STOP file when it starts training; before that it has no SIGTERM handler either
            _terminate(job.process)

    # ------------------------------------------------------------------------------------------------------------

    def _check_room(self, run_dir: Path) -> None:
        active = self.active(run_dir.parent)
        if run_dir.resolve() in active:
            raise LaunchError(f"{run_dir.name} is training right now: stop it first")
        if len(active) >= self.max_runs:
            names = ", ".join(p.name for p in active)
            raise LaunchError(
                f"{len(active)} run(s) already training ({names}) and at most {self.max_runs} may run at once: "
                f"stop one or wait for it to finish (set {MAX_RUNS_ENV} to change the limit)"
            )

    def _start(self, run_dir: Path, args: list, resume: bool) -> Job:
        cmd = [sys.executable, "-m", "ddpm_core.train", *map(str, args)]
        (run_dir / runs.STOP).unlink(missing_ok=True)
        with open(run_dir / run_history.LOG, "a") as log:
            log.write(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] python {' '.join(cmd[1:])}\n")
            log.flush()
            process = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                **_own_session(),
            )
        job = Job(run_dir, process, resume)
        self._jobs[run_dir.resolve()] = job
        return job

    def _finish(self, job: Job) -> None:
        """Once a process has ended, make sure its status says how: the trainer records done, stopped and its own
        failures; a process that died before (bad data set, import error) or without a word (killed) is recorded
        here, with the line of train.log that says why."""
        if job.finished or job.alive:
            return
        job.finished = True
        code = job.process.returncode
        status = run_history.read_status(job.run_dir)
        ours = status.get("pid") == job.process.pid
        if code == 0 or (ours and status.get("state") in ("failed", "stopped", "done")):
            return
        if job.stop_requested:
            runs.write_status(job.run_dir, "stopped", error=None, returncode=code)
            return
        why = run_history.log_error(job.run_dir) or "no output"
        runs.write_status(
            job.run_dir, "failed", error=f"{why} (the trainer exited with code {code}; see {run_history.LOG})",
            returncode=code,
        )  # fmt: skip


def _check_device(name: str) -> None:
    try:
        resolve_device(name)
    except ValueError as e:
        raise LaunchError(str(e)) from None


def _own_session() -> dict:
    if os.name == "posix":
        return {"start_new_session": True}
    return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}


def _terminate(process: subprocess.Popen) -> None:
    if os.name == "posix":
        with contextlib.suppress(ProcessLookupError):  # it has just ended
            os.killpg(process.pid, signal.SIGTERM)  # its own session: the group is the trainer alone
    else:
        process.terminate()
