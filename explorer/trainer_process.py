"""The trainer as a child process of the app: `python -m ddpm_core.train ARGS` in the repository root, in a session
of its own (so that a stop signals it alone and the app never waits on it), its output appended to <run>/train.log.
explorer/jobs.py decides when; this module only knows how."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ddpm_core import run_history, runs
from explorer.classroom import ROOT


def spawn(run_dir: Path, args: list) -> subprocess.Popen:
    """Start the trainer on run_dir with the CLI arguments args (a stale STOP file removed first)."""
    cmd = [sys.executable, "-m", "ddpm_core.train", *map(str, args)]
    (run_dir / runs.STOP).unlink(missing_ok=True)
    with open(run_dir / run_history.LOG, "a") as log:
        log.write(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] python {' '.join(cmd[1:])}\n")
        log.flush()
        return subprocess.Popen(
            cmd,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            **_own_session(),
        )


def terminate(process: subprocess.Popen) -> None:
    if os.name == "posix":
        with contextlib.suppress(ProcessLookupError):  # it has just ended
            os.killpg(process.pid, signal.SIGTERM)  # its own session: the group is the trainer alone
    else:
        process.terminate()


def _own_session() -> dict:
    if os.name == "posix":
        return {"start_new_session": True}
    return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
