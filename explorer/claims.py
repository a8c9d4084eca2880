"""Several app servers on one runs root: a queued run is started by exactly one of them. Whoever starts it first
claims it by creating <run>/queue.claim exclusively (O_CREAT | O_EXCL: atomic on a local disk and on NFSv3+); every
other server sees the claim and leaves the run alone. The claim names its server's host and pid, so that the claim
of a server that died before it could start the run (same host, process gone) is stale and is taken over; a claim
from another host cannot be checked and is honoured for CLAIM_TTL_S, after which the run is taken over as well.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from pathlib import Path

from ddpm_core.run_history import pid_alive

CLAIM = "queue.claim"
CLAIM_TTL_S = 120.0  # a claim from another host older than this, on a run still waiting, is stale
HOST = socket.gethostname()


def claim(run_dir: Path) -> bool:
    """True when this server now holds run_dir's claim (and must start it); False when another server holds it."""
    path = Path(run_dir) / CLAIM
    for _ in range(2):  # one takeover of a stale claim, then one more try
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if not _stale(path):
                return False
            gone = path.with_name(f".{CLAIM}.stale-{secrets.token_hex(4)}")
            try:
                path.rename(gone)  # one server wins the rename; the others find the claim gone or fresh
            except FileNotFoundError:
                continue
            gone.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump({"host": HOST, "pid": os.getpid(), "time": time.time()}, f)
        return True
    return False


def release(run_dir: Path) -> None:
    """Give a claim up (the run could not be started and stays queued, or it was cancelled)."""
    (Path(run_dir) / CLAIM).unlink(missing_ok=True)


def _stale(path: Path) -> bool:
    try:
        owner = json.loads(path.read_text())
        age = time.time() - float(owner.get("time", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        try:  # being written this instant, or left half-written by a server that died: judged by its age
            return time.time() - path.stat().st_mtime > CLAIM_TTL_S
        except OSError:
            return False
    if owner.get("host") == HOST:
        return not pid_alive(owner.get("pid"))
    return age > CLAIM_TTL_S
