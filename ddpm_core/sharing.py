"""Leaving a core to the app: a trainer on the CPU computes with one thread fewer while the app that watches its run
folder computes too.

The app touches the run folder's BUSY file while it samples (explorer/cpu_share.py), and computes with one thread
itself. Each step the trainer looks at the file's time (one stat): fresh, and the trainer takes one thread fewer than
it started with; stale or missing, the count its ThreadTuner measured fastest again (ddpm_core.threads: all of them on
a quiet machine). Without this, the trainer's OpenMP threads spin waiting for a
thread that the app's work has pushed off its core: on 2 cores the trainer fell from about 2,900 to under 300
images/s while the app sampled (bench/bench_threads.py).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import torch

from ddpm_core.threads import ThreadTuner, set_threads, tuning_enabled

BUSY = "BUSY"  # in the run folder: its modification time says when the app last computed
FRESH_S = 2.0  # the app counts as busy this long after its last touch


def touch_busy(run_dir: Path) -> None:
    """Say "the app is computing now" to the trainer of run_dir (a run folder that no longer exists is skipped)."""
    with contextlib.suppress(OSError):
        (Path(run_dir) / BUSY).touch()


class CoreSharing:
    """Call update() before each step and observe(seconds) after it: sets torch's threads for the trainer's thread —
    one fewer than its own count while the app is busy, else the count a ThreadTuner measured fastest (all of them
    on a quiet machine; fewer while another program keeps a core busy; ddpm_core.threads). Does nothing off the CPU
    or with a single thread."""

    def __init__(self, run_dir: Path, device: torch.device):
        self.path = Path(run_dir) / BUSY
        self.threads = self.own = torch.get_num_threads()
        self.active = device.type == "cpu" and self.own > 1
        self.tuner = ThreadTuner(self.own) if self.active and tuning_enabled() else None
        self.busy = False

    def update(self, now: float | None = None) -> int:
        if not self.active:
            return self.threads
        try:
            self.busy = (time.time() if now is None else now) - self.path.stat().st_mtime < FRESH_S
        except OSError:
            self.busy = False
        self.threads = set_threads(self.own - 1 if self.busy else self.tuner.threads if self.tuner else self.own)
        return self.threads

    def observe(self, seconds: float) -> None:
        """The step just made took seconds: the tuner learns from it (not while the app's share held it back)."""
        if self.tuner is not None and not self.busy:
            self.tuner.observe(seconds)
