"""Leaving a core to the app: a trainer on the CPU computes with one thread fewer while the app that watches its run
folder computes too.

The app touches the run folder's BUSY file while it samples (explorer/cpu_share.py), and computes with one thread
itself. Each step the trainer looks at the file's time (one stat): fresh, and the trainer takes one thread fewer than
it started with; stale or missing, all of them again. Without this, the trainer's OpenMP threads spin waiting for a
thread that the app's work has pushed off its core: on 2 cores the trainer fell from about 2,900 to under 300
images/s while the app sampled (bench/bench_threads.py).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import torch

BUSY = "BUSY"  # in the run folder: its modification time says when the app last computed
FRESH_S = 2.0  # the app counts as busy this long after its last touch


def touch_busy(run_dir: Path) -> None:
    """Say "the app is computing now" to the trainer of run_dir (a run folder that no longer exists is skipped)."""
    with contextlib.suppress(OSError):
        (Path(run_dir) / BUSY).touch()


class CoreSharing:
    """Call update() once a step: sets torch's threads for the trainer's thread to its own count, or one fewer
    while the app is busy. Does nothing off the CPU or with a single thread."""

    def __init__(self, run_dir: Path, device: torch.device):
        self.path = Path(run_dir) / BUSY
        self.threads = self.own = torch.get_num_threads()
        self.active = device.type == "cpu" and self.own > 1

    def update(self, now: float | None = None) -> int:
        if not self.active:
            return self.threads
        try:
            busy = (time.time() if now is None else now) - self.path.stat().st_mtime < FRESH_S
        except OSError:
            busy = False
        threads = self.own - 1 if busy else self.own
        if threads != self.threads:
            torch.set_num_threads(threads)
            self.threads = threads
        return threads
