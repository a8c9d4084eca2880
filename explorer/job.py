"""One run a backend trains (explorer/backends.py): its handle, and how its end is recorded in its folder when the
trainer could not record it itself. explorer/jobs.py keeps the jobs; this module knows what one is."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ddpm_core import run_history, runs
from explorer.backends import LOCAL, Handle, TrainingBackend


@dataclass
class Job:
    run_dir: Path
    process: Handle  # a subprocess.Popen (local), a RayJob (ray)
    resume: bool
    backend: TrainingBackend = field(default_factory=lambda: LOCAL)
    stop_requested: bool = False
    finished: bool = field(default=False, repr=False)  # its exit has been looked at (and recorded if need be)

    @property
    def alive(self) -> bool:
        if self.process.poll() is not None:
            return False
        if not self.backend.queues:
            return True
        # a cluster notices a job's end a moment after its trainer has written it: the folder says it first
        status = run_history.read_status(self.run_dir)
        return not (self.backend.owns(self.process, status) and status.get("state") in ("done", "stopped", "failed"))


def record_end(job: Job) -> None:
    """Once a process has ended, make sure its status says how: the trainer records done, stopped and its own
    failures; a process that died before (bad data set, import error) or without a word (killed) is recorded
    here, with the line of train.log that says why."""
    if job.finished or job.alive:
        return
    job.finished = True
    if not job.run_dir.is_dir():  # its folder was deleted: there is nothing left to record the end in
        return
    code = job.process.returncode
    status = run_history.read_status(job.run_dir)
    ours = job.backend.owns(job.process, status)
    if code == 0 or (ours and status.get("state") in ("failed", "stopped", "done")):
        return
    if job.stop_requested or (status.get("state") == "queued" and code == -15):
        runs.write_status(job.run_dir, "stopped", error=None, returncode=code, job=None)
        return
    why = run_history.log_error(job.run_dir) or job.backend.why_ended(job.process) or "no output"
    runs.write_status(
        job.run_dir, "failed", error=f"{why} (the trainer exited with code {code}; see {run_history.LOG})",
        returncode=code,
    )  # fmt: skip
