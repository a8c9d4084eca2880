"""Where runs live, and whether this server can write there: the runs root every app server (and, on a cluster,
every node) shares. explorer/jobs.py launches into it; the pages list it."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import torch

from ddpm_core import runs
from ddpm_core.fileio import atomic_write
from explorer.classroom import ROOT

PROBE = ".probe-"  # the name's start of the file the check writes and removes


def runs_root() -> Path:
    """Where runs live: $DDPM_EXPLORER_RUNS, else runs/ in the repository. Read at each call, not at import."""
    return Path(os.environ.get("DDPM_EXPLORER_RUNS", ROOT / "runs"))


def default_max_runs() -> int:
    """One at a time on a CPU (two would halve each other's speed), two with a GPU."""
    return 2 if torch.cuda.is_available() else 1


def run_folder(name: str, dataset: str, root: Path | None = None) -> Path:
    """<runs root>/<name, sanitised>, or <dataset>-<date>-<time> when name is blank; ValueError for a name with
    nothing usable in it."""
    name = name.strip() or f"{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    return (root or runs_root()) / runs.sanitize_run_name(name)


def root_problem(root: Path | None = None) -> str | None:
    """Why runs cannot be saved under root (it cannot be created, or a probe file cannot be written, read back and
    removed there), or None when they can. Every app server and node must share this folder."""
    root = Path(root or runs_root())
    probe = root / f"{PROBE}{secrets.token_hex(6)}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        atomic_write(probe, lambda tmp: tmp.write_bytes(b"probe"))
        if probe.read_bytes() != b"probe":
            return f"the runs folder {root} does not keep what is written to it: runs cannot be saved there"
        probe.unlink()
    except OSError as e:
        with_path = f"{e.strerror or e}" + (f" ({e.filename})" if e.filename else "")
        return (
            f"the runs folder {root} cannot be written ({with_path}): runs cannot be launched from this server. "
            f"Point $DDPM_EXPLORER_RUNS at a folder this server may write (on a cluster, one every node and app "
            f"server mounts at the same path)"
        )
    return None
