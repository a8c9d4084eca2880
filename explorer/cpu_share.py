"""Sharing the CPU with a training run: while a run trains on this machine's CPU, the server computes with one
thread, and while the server samples, the trainer computes with one thread fewer (ddpm_core/sharing.py).

The trainer and the server are two PyTorch processes. GNU OpenMP's threads wait for each other by spinning, so two
processes that each use every core take the cores from each other's waiting threads, and both slow down many times
over. With this module both keep close to their own speed, and the trainer has every core whenever nobody samples
(bench/bench_threads.py measures it; its figures are in bench/RESULTS.md). A run on a GPU leaves the CPU alone: the
server then keeps its threads.

torch's thread count belongs to each thread of a process once it has computed (OpenMP keeps it per thread), and each
Streamlit script run is a new thread that starts from the count last set. So `share_cpu()` is called at the start of
every page run (explorer/app.py) and during long computations (the sampling progress callback, with busy=True), each
time in the thread that computes.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ddpm_core import run_history
from ddpm_core.sharing import touch_busy
from ddpm_core.threads import set_threads
from explorer.jobs import runs_root

SERVER_THREADS = torch.get_num_threads()  # the server's own count (OMP_NUM_THREADS or the cores), read at its start
CHECK_EVERY_S = 2.0  # how long an answer to "which runs train on the CPU?" is reused
_last: dict = {"at": -CHECK_EVERY_S, "root": None, "runs": []}  # the last look at the runs, and what it found


def cpu_runs(root: Path | None = None) -> list[Path]:
    """The runs under root (this server's, or ones started from the CLI) that train on the CPU now, read from their
    run folders alone (a sampling's progress callback asks: it has no business with the training registry)."""
    statuses = ((p, run_history.read_status(p)) for p in run_history.run_dirs(root or runs_root()))
    return [p for p, s in statuses if run_history.run_state(s) == "running" and s.get("device") == "cpu"]


def server_threads(root: Path | None = None, now: float | None = None, busy: bool = False) -> int:
    """The most threads the server may compute with now: 1 while a run trains on the CPU, else its own count; with
    busy, also tell those runs' trainers that the server computes now. The runs are looked at every CHECK_EVERY_S
    at most."""
    now, root = time.monotonic() if now is None else now, root or runs_root()
    if now - _last["at"] >= CHECK_EVERY_S or root != _last["root"]:
        _last.update(at=now, root=root, runs=cpu_runs(root))
    if busy:
        for run in _last["runs"]:
            touch_busy(run)
    return 1 if _last["runs"] else SERVER_THREADS


def share_cpu(root: Path | None = None, now: float | None = None, busy: bool = False) -> int:
    """Set the calling thread's torch threads to server_threads(…). Returns the count set."""
    return set_threads(server_threads(root, now, busy))
