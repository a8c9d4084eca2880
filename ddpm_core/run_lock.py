"""One trainer per run folder: a lock file, created exclusively, held for the trainer's lifetime.

Two `--resume` of one run would otherwise both train and append duplicate steps to metrics.jsonl. The lock holds
the owner's pid and host; a lock whose process is gone (killed with SIGKILL, a crashed machine) is stale and taken
over, with a note in the log. A lock from another host (a shared file system) cannot be checked, so it is honoured.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from ddpm_core.run_history import pid_alive

LOCK = "trainer.lock"


class RunLocked(ValueError):
    """Another live trainer holds the run folder (a ValueError: the CLI says `error: …` and exits with 2)."""


def _read_owner(path: Path) -> dict:
    try:
        owner = json.loads(path.read_text())
    except (OSError, ValueError):  # half-written by a trainer that died between create and write: no owner
        return {}
    return owner if isinstance(owner, dict) else {}


class RunLock:
    """`with RunLock(run_dir):` — refuse (RunLocked) if another live trainer holds run_dir, else hold it until the
    block ends, however it ends: normally, by an exception, KeyboardInterrupt or SIGTERM (turned into SystemExit
    while no Trainer has its own handler installed)."""

    def __init__(self, run_dir: Path, log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)):
        self.run_dir, self.path, self.log = Path(run_dir), Path(run_dir) / LOCK, log
        self.host, self.pid = socket.gethostname(), os.getpid()
        self._previous_sigterm, self.made_dir = None, False

    def acquire(self) -> None:
        self.made_dir = not self.run_dir.exists()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # a stale lock is removed, then created anew; another trainer may win that race
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"pid": self.pid, "host": self.host}, f)
            return
        raise RunLocked(f"{self.run_dir} is being locked and unlocked by other trainers right now; try again")

    def _take_over_if_stale(self) -> None:
        owner = _read_owner(self.path)
        pid, host = owner.get("pid"), owner.get("host")
        if pid == self.pid and host == self.host:
            raise RunLocked(f"{self.run_dir} is already being trained by this process ({pid})")
        if host not in (None, self.host):
            raise RunLocked(
                f"{self.run_dir} is being trained by process {pid} on {host}; wait for it to end, or delete "
                f"{self.path} if that machine is gone"
            )
        if pid_alive(pid):
            raise RunLocked(f"{self.run_dir} is being trained by process {pid}; wait for it to end or stop it first")
        self.log(f"note: taking over {self.path}: its process {pid} is no longer running")
        self.path.unlink(missing_ok=True)

    def release(self) -> None:
        if _read_owner(self.path) == {"pid": self.pid, "host": self.host}:  # never remove a lock taken over since
            self.path.unlink(missing_ok=True)
        if self.made_dir:  # a run that could not start (bad data, …) leaves no folder behind
            with contextlib.suppress(OSError):  # not empty: the run wrote into it
                self.run_dir.rmdir()

    def __enter__(self) -> RunLock:
        self.acquire()
        if _main_thread():  # SIGTERM's default ends the process without running `finally`: the lock would remain
            self._previous_sigterm = signal.signal(signal.SIGTERM, _exit_on_sigterm)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
        self.release()


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
