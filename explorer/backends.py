"""Where runs train: the seam between explorer/jobs.py (when) and an engine (how). Two implementations:

- **local** (the default, nothing to install): the trainer as a child process of the app server
  (explorer/trainer_process.py); the registry keeps its own first-come-first-served queue.
- **ray**: each run is a Ray Job on a cluster (explorer/ray_backend.py), named by the classroom file's [cluster]
  table or $DDPM_EXPLORER_RAY; runs wait in Ray's own queue for resources.

Both run the same CLI, `python -m ddpm_core.train …`, on the same run folder: the folder stays the only interface
(progress, status, checkpoints), so a run trains the same way everywhere. A handle is what a launch returns: it has
`pid` (None where the process is not ours to signal), `poll()` (None while it may still run, else an exit code) and
`returncode`, as subprocess.Popen has them.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from ddpm_core.devices import resolve_device
from explorer import trainer_process
from explorer.classroom import Classroom


class Handle(Protocol):
    pid: int | None

    def poll(self) -> int | None: ...

    @property
    def returncode(self) -> int | None: ...


class BackendError(ValueError):
    """The backend cannot take the run (the cluster unreachable, no node that can place it): the message says why."""


class TrainingBackend(Protocol):
    name: str  # "local" or "ray"
    queues: bool  # True: the engine queues runs itself (the registry keeps no FIFO of its own)

    def check(self, device: str) -> None:
        """BackendError when no place this backend trains on has device ("auto", "cpu", "cuda")."""

    def spawn(self, run_dir: Path, args: list, device: str = "auto") -> Handle: ...

    def terminate(self, handle: Handle) -> None: ...

    def attach(self, run_dir: Path) -> Handle | None:
        """The handle of a run this backend started before an app restart (recorded in its folder), or None."""

    def owns(self, handle: Handle, status: dict) -> bool:
        """Whether status.json was written by the process behind handle (not by a previous one)."""

    def describe(self) -> str:
        """One line for the Home and Train pages: which engine trains the runs, with what."""

    def why_ended(self, handle: Handle) -> str:
        """What the engine knows of how a job ended that its run folder does not say ("" when nothing)."""


@dataclass
class LocalBackend:
    """Today's child process, in a session of its own (explorer/trainer_process.py)."""

    name: str = "local"
    queues: bool = False

    def check(self, device: str) -> None:
        try:
            resolve_device(device)
        except ValueError as e:
            raise BackendError(str(e)) from None

    def spawn(self, run_dir: Path, args: list, device: str = "auto") -> subprocess.Popen:
        return trainer_process.spawn(run_dir, args)

    def terminate(self, handle: subprocess.Popen) -> None:
        trainer_process.terminate(handle)

    def attach(self, run_dir: Path) -> None:
        return None  # a child of an earlier server is found through its status.json's pid (run_history.run_state)

    def owns(self, handle: Handle, status: dict) -> bool:
        return status.get("pid") == handle.pid

    def why_ended(self, handle: Handle) -> str:
        return ""  # the trainer's output is all in train.log

    def describe(self) -> str:
        device = "a CUDA GPU" if torch.cuda.is_available() else "the CPU"
        return f"Runs train on this server, as its child processes, on {device}."


LOCAL = LocalBackend()


def backend_for(room: Classroom) -> TrainingBackend:
    """The backend the classroom settings ask for: Ray when [cluster] address (or $DDPM_EXPLORER_RAY) names one."""
    if not room.cluster.address:
        return LOCAL
    from explorer.ray_backend import ray_backend  # only a classroom with a cluster needs Ray installed

    return ray_backend(room.cluster)
