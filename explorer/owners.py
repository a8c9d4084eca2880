"""Who may act on a run: its owner and the teacher (issue 15 §4). No Streamlit here: explorer/identity.py finds out
who the browser is, explorer/jobs.py asks `may_act` before it stops, resumes, cancels or deletes a run.

- An owner is a browser, named by a random id that the server signs (HMAC-SHA256 with a secret kept in the runs
  root) and the browser keeps in a cookie, so that the id survives a reload and a server restart, and a cookie
  cannot be made up: `sign(id)` and `verify(cookie)`.
- A run launched from the app records its owner in `<run>/owner.json`, which the trainer never touches; runs from
  the CLI (and older runs) have none, and only the teacher acts on them.
- The teacher is whoever presents the classroom file's `[server] teacher_token` (once: a signed cookie then keeps
  it), or, unless `[server] localhost_is_teacher = false`, a browser on the server's own machine.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

OWNER = "owner.json"  # <run>/owner.json: {"owner": <id>} — written by the app when it launches or queues the run
SECRET = ".explorer-secret"  # <runs root>/.explorer-secret: the key that signs the cookies; made on first use
ID_BYTES = 16
_fallback_key = secrets.token_bytes(32)  # a runs root we cannot write: cookies then last as long as this process


@dataclass(frozen=True)
class Requester:
    """Who asks: the browser's owner id ("" when unknown) and whether it is the teacher."""

    owner: str
    teacher: bool = False


def new_id() -> str:
    return secrets.token_hex(ID_BYTES)


def secret(root: Path) -> bytes:
    """The signing key in root (created exclusively, readable by the server's user only); a per-process key when
    root cannot hold one."""
    path = Path(root) / SECRET
    for _ in range(2):
        try:
            key = path.read_bytes()
            if len(key) >= 32:
                return key
            path.unlink()  # cut short (a full disk while writing it): make a new one
        except FileNotFoundError:
            pass
        except OSError:
            return _fallback_key
        try:
            Path(root).mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:  # another server process made it just now: read theirs
            continue
        except OSError:
            return _fallback_key
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
    try:
        return path.read_bytes()
    except OSError:
        return _fallback_key


def _mac(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def sign(owner: str, key: bytes) -> str:
    """The cookie value for an owner id: `<id>.<mac>`."""
    return f"{owner}.{_mac(key, 'owner:' + owner)}"


def verify(cookie: str | None, key: bytes) -> str | None:
    """The owner id a cookie carries, or None when it is missing, malformed or not signed with key."""
    if not isinstance(cookie, str) or cookie.count(".") != 1:
        return None
    owner, mac = cookie.split(".")
    if len(owner) != 2 * ID_BYTES or not all(c in "0123456789abcdef" for c in owner):
        return None
    return owner if hmac.compare_digest(mac, _mac(key, "owner:" + owner)) else None


def teacher_mark(token: str, key: bytes) -> str:
    """The cookie value that says "this browser gave the teacher token": it changes with the token, so a new token
    in the classroom file signs every earlier teacher out."""
    return _mac(key, "teacher:" + hashlib.sha256(token.encode()).hexdigest())


def is_teacher_mark(cookie: str | None, token: str | None, key: bytes) -> bool:
    return bool(token) and isinstance(cookie, str) and hmac.compare_digest(cookie, teacher_mark(token, key))


def token_matches(given: str, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(given.strip().encode(), token.encode())


def owner_of(run_dir: Path) -> str:
    """The id of the browser that launched the run from the app; "" for a run from the CLI or before owners."""
    try:
        owner = json.loads((Path(run_dir) / OWNER).read_text()).get("owner")
    except (OSError, ValueError, AttributeError):
        return ""
    return owner if isinstance(owner, str) else ""


def record_owner(run_dir: Path, owner: str) -> None:
    if owner:
        tmp = Path(run_dir) / f".{OWNER}.tmp"
        tmp.write_text(json.dumps({"owner": owner}) + "\n")
        tmp.replace(Path(run_dir) / OWNER)


def may_act(who: Requester | None, run_dir: Path) -> bool:
    """Whether who may stop, resume, cancel or delete the run: the teacher always, the owner on its own runs, None
    (the server itself, the CLI, tests) always."""
    if who is None or who.teacher:
        return True
    return bool(who.owner) and owner_of(run_dir) == who.owner


def refusal(run_dir: Path, action: str) -> str:
    """The message for a requester who may not act on the run (shown as is)."""
    name = Path(run_dir).name
    if owner_of(run_dir):
        return f"{name} belongs to another browser, the one that launched it: only it or the teacher can {action} it"
    return (
        f"{name} was not launched from this app's Train page (the CLI, or before runs had owners): only the teacher "
        f"can {action} it"
    )
