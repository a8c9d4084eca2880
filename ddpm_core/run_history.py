"""Run folders read back for the app: one history row per run, loss curves, loss per t bucket, progress and ETA,
the latest previews. Pure file reading (no Streamlit, no torch): every reader tolerates a half-written last line,
missing files and garbage, since a run may be writing while the app reads, or may have been killed.

Besides the trainer's files (ddpm_core.runs) a run folder may hold
    train.log        the trainer's stdout and stderr, when the app launched it
"""

from __future__ import annotations

import math
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from ddpm_core import runs
from ddpm_core.runs import read_status  # one reader of status.json, for the run folder's readers here too

LOG, EVALUATION = "train.log", runs.EVALUATION
HOST = socket.gethostname()  # a status's pid is looked at only on the machine whose trainer wrote it
STATES = ("queued", "running", "done", "stopped", "failed")  # queued: waiting for a free slot (explorer/jobs.py)
RUN_FILES = (runs.CONFIG, runs.STATUS, runs.METRICS, LOG)  # any of these makes a folder a run
PREVIEW = re.compile(r"step_(\d{6,})_(raw|ema)\.png")  # the trainer writes step:06d
# The headline number of an evaluation report, best first: (key, label); lower is better for all four
HEADLINE_METRICS = (
    ("feature_fd", "feature FD"),
    ("pixel_fd", "pixel FD"),
    ("sliced_wasserstein", "sliced W1"),
    ("mmd", "MMD"),
)
SESSION_TOLERANCE_S = 1.0  # records whose (time − elapsed) agree this closely come from one trainer process


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _number(value) -> float | None:
    """A finite float, or None for anything else (None, NaN, strings, bools)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def read_config(run_dir: Path) -> dict:
    """config.json as a dict; {} when missing or not a JSON object."""
    return _dict(runs.read_json(Path(run_dir) / runs.CONFIG))


def status_being_written(run_dir: Path) -> bool:
    """Whether status.json is missing or unreadable while its atomic write's temp file is there (caught
    mid-rename): its state is unknown for a moment, not lost."""
    try:
        return any(Path(run_dir).glob(f".{runs.STATUS}.*.tmp")) and not isinstance(
            runs.read_json(Path(run_dir) / runs.STATUS), dict
        )
    except OSError:
        return False


def read_records(run_dir: Path) -> list[dict]:
    """The metrics.jsonl records that have a numeric step and loss, in file order (a half-written last line, a
    non-object line or a record without a loss is skipped)."""
    out = []
    for r in runs.read_metrics(run_dir):
        if isinstance(r, dict) and _number(r.get("step")) is not None and _number(r.get("loss")) is not None:
            out.append(r)
    return out


def pid_alive(pid) -> bool:
    """Whether a process with this id exists (POSIX). Elsewhere os.kill would end it, so the answer is True."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def run_state(status: dict) -> str:
    """status.json's state, "interrupted" when it says running but its process is gone (killed, machine off), and
    "unknown" when the folder has no readable status."""
    state = status.get("state")
    if state not in STATES:
        return "unknown"
    if state == "running" and status.get("host", HOST) == HOST and not pid_alive(status.get("pid")):
        return "interrupted"  # (a trainer on another machine, a node of a cluster, is not ours to look at)
    if state == "queued" and pid_alive(status.get("pid")):
        return "running"  # taken from the queue: its trainer is starting
    return state


# ----------------------------------------------------------------------------------------------------------------
# Curves


def loss_curve(records: list[dict]) -> tuple[list[int], list[float]]:
    """(steps, mean loss over each log interval) from metrics records."""
    return [int(r["step"]) for r in records], [float(r["loss"]) for r in records]


def ema_smooth(values: list[float], weight: float = 0.8) -> list[float]:
    """Debiased exponential moving average s_k = w·s_{k−1} + (1 − w)·v_k, divided by 1 − w^k so the first points
    are not pulled towards 0 (TensorBoard's smoothing). A non-finite value keeps the previous average."""
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"weight must lie in [0, 1), got {weight}")
    out, avg, n = [], 0.0, 0
    for v in values:
        if _number(v) is not None:
            n += 1
            avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight**n) if n else math.nan)
    return out


def bucket_losses(records: list[dict], last: int = 5) -> list[float | None] | None:
    """Loss per tenth of the t range, averaged over the last `last` records that logged it (the trainer's
    `loss_buckets`, N_BUCKETS values, None where no t of a bucket was drawn). None when no record has buckets."""
    rows = [r["loss_buckets"] for r in records if isinstance(r.get("loss_buckets"), list) and r["loss_buckets"]]
    if not rows:
        return None
    n = len(rows[-1])
    rows = [row for row in rows if len(row) == n][-last:]
    out = []
    for i in range(n):
        vals = [v for row in rows if (v := _number(row[i])) is not None]
        out.append(sum(vals) / len(vals) if vals else None)
    return out


def bucket_labels(T: int, n: int) -> list[str]:
    """The paper's t range (t = index + 1) of each of n buckets: the trainer's bucket is ⌊index · n / T⌋."""
    starts = [-(-i * T // n) for i in range(n + 1)]  # first index of bucket i: ⌈i·T/n⌉
    return [f"{starts[i] + 1}–{starts[i + 1]}" for i in range(n)]


# ----------------------------------------------------------------------------------------------------------------
# Progress


@dataclass(frozen=True)
class Progress:
    step: int
    total: int
    fraction: float  # step / total, in [0, 1]
    eta_s: float | None  # seconds left at the current pace; None before a pace is known
    images_per_s: float | None  # the last interval's training throughput


def steps_per_second(records: list[dict]) -> float | None:
    """The current trainer process's pace, previews and checkpoints included: steps since it started over the
    seconds since it started. Its records are the trailing ones whose start time (time − elapsed) agrees; the step it
    started from is the record before them (a resume), or 0."""
    timed = [r for r in records if _number(r.get("time")) is not None and _number(r.get("elapsed")) is not None]
    if not timed:
        return None
    start = timed[-1]["time"] - timed[-1]["elapsed"]
    k = len(timed) - 1
    while k > 0 and abs(timed[k - 1]["time"] - timed[k - 1]["elapsed"] - start) < SESSION_TOLERANCE_S:
        k -= 1
    first_step = timed[k - 1]["step"] if k > 0 else 0
    steps, seconds = timed[-1]["step"] - first_step, timed[-1]["elapsed"]
    return steps / seconds if steps > 0 and seconds > 0 else None


def progress(status: dict, records: list[dict], now: float | None = None) -> Progress:
    """Where a run is: step and total from status.json (or the last record), ETA from the pace of its records,
    less the time already spent since the last record."""
    last = records[-1] if records else {}
    step = int(_number(status.get("step")) or _number(last.get("step")) or 0)
    total = int(_number(status.get("total_steps")) or step or 1)
    rate = steps_per_second(records)
    eta = None
    if rate and step < total:
        last_time = _number(last.get("time"))
        since = (now if now is not None else time.time()) - last_time if last_time is not None else 0.0
        eta = max(0.0, (total - step) / rate - max(0.0, since))
    elif step >= total:
        eta = 0.0
    return Progress(step, total, min(1.0, step / total), eta, _number(last.get("images_per_s")))


def format_duration(seconds: float | None) -> str:
    """42 s, 3 min 05 s, 1 h 02 min; an em dash when unknown."""
    if seconds is None:
        return "—"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


# ----------------------------------------------------------------------------------------------------------------
# Previews, logs, evaluations


@dataclass(frozen=True)
class Previews:
    step: int
    raw: Path | None
    ema: Path | None


def latest_previews(run_dir: Path) -> Previews | None:
    """The last step's preview grids (previews/step_XXXXXX_raw.png and _ema.png), or None when there are none."""
    found: dict[int, dict[str, Path]] = {}
    try:
        files = list((Path(run_dir) / runs.PREVIEWS).iterdir())
    except OSError:
        return None
    for f in files:
        if m := PREVIEW.fullmatch(f.name):
            found.setdefault(int(m[1]), {})[m[2]] = f
    if not found:
        return None
    step = max(found)
    return Previews(step, found[step].get("raw"), found[step].get("ema"))


def log_tail(run_dir: Path, lines: int = 20, max_bytes: int = 16_384) -> str:
    """The last lines of train.log ("" when there is none)."""
    try:
        with open(Path(run_dir) / LOG, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - max_bytes))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def log_error(run_dir: Path) -> str:
    """The line of train.log that says what went wrong: the CLI's last "error: …" line, else the last line (a
    traceback ends with the exception)."""
    tail = [line.strip() for line in log_tail(run_dir, lines=200).splitlines() if line.strip()]
    errors = [line.removeprefix("error: ") for line in tail if line.startswith("error: ")]
    return errors[-1] if errors else (tail[-1] if tail else "")


def read_evaluation(run_dir: Path) -> dict:
    """evaluation.json as a dict ({} when it is missing, unreadable or not an object)."""
    return _dict(runs.read_json(Path(run_dir) / EVALUATION))


def headline_metric(run_dir: Path) -> str:
    """The main score of evaluation.json ("pixel FD 0.065"), or "" when the run was not evaluated."""
    return _headline(read_evaluation(run_dir))


def bound_summary(run_dir: Path) -> str:
    """The variational bound of evaluation.json ("2.88 ± 0.03 bits/dim"), or "" when the run did not measure it."""
    return _bound(read_evaluation(run_dir))


def _headline(report: dict) -> str:
    for key, label in HEADLINE_METRICS:
        if (value := _number(report.get(key))) is not None:
            return f"{label} {value:.3g}"
    return ""


def _bound(report: dict) -> str:
    bound = _dict(report.get("bound"))
    if (value := _number(bound.get("bits_per_dim"))) is None:
        return ""
    stderr = _number(bound.get("stderr"))
    return f"{value:.3g}" + (f" ± {stderr:.2g}" if stderr is not None else "") + " bits/dim"


def evaluation_summary(run_dir: Path) -> str:
    """How evaluation.json was made: "1000 DDIM-50 samples at step 1,500", or "" when it says nothing of that."""
    report = read_evaluation(run_dir)
    n, steps, step = (report.get(k) for k in ("n", "steps", "step"))
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (n, steps)):
        return ""
    at = f" at step {step:,}" if isinstance(step, int) and not isinstance(step, bool) else ""
    return f"{n:,} {str(report.get('sampler', '')).upper()}-{steps} samples{at}"


# ----------------------------------------------------------------------------------------------------------------
# History


@dataclass(frozen=True)
class RunRow:
    name: str
    path: Path
    dataset: str
    schedule: str
    step: int
    total_steps: int | None
    final_loss: float | None
    metric: str
    bound: str  # "2.88 ± 0.03 bits/dim", or ""
    state: str
    error: str
    updated: float  # last change (status.json, else the folder), for sorting

    def table_row(self) -> dict:
        steps = f"{self.step:,}" + (f" / {self.total_steps:,}" if self.total_steps else "")
        return {
            "name": self.name,
            "dataset": self.dataset,
            "schedule": self.schedule,
            "steps": steps,
            "final loss": self.final_loss,
            "metric": self.metric,
            "bound": self.bound,
            "status": self.state,
        }


def describe_schedule(config: dict) -> str:
    """ "linear T=1000" (+ "zero SNR") from a config dict; "" when it has none."""
    if not config.get("schedule"):
        return ""
    zero = " + zero SNR" if config.get("rescale_zero_terminal_snr") else ""
    return f"{config['schedule']} T={config.get('T', '?')}{zero}"


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and any((path / f).is_file() for f in RUN_FILES)


def run_dirs(runs_root: Path) -> list[Path]:
    """The run folders directly under runs_root (none when it does not exist); hidden ones (a run being deleted,
    explorer/jobs.py) are not runs."""
    try:
        return sorted(p for p in Path(runs_root).iterdir() if not p.name.startswith(".") and is_run_dir(p))
    except OSError:
        return []


def history_row(run_dir: Path) -> RunRow:
    run_dir = Path(run_dir)
    config, status, records = read_config(run_dir), read_status(run_dir), read_records(run_dir)
    evaluation = read_evaluation(run_dir)
    state = run_state(status)
    error = status.get("error") if isinstance(status.get("error"), str) else ""
    if state == "interrupted":
        error = f"status.json says running, but its process (pid {status.get('pid')}) is gone: resume it"
    step = int(_number(status.get("step")) or (records[-1]["step"] if records else 0))
    total = _number(status.get("total_steps"))
    try:
        updated = _number(status.get("updated")) or run_dir.stat().st_mtime
    except OSError:
        updated = 0.0
    return RunRow(
        name=run_dir.name,
        path=run_dir,
        dataset=str(config.get("dataset") or _dict(status.get("data")).get("name") or ""),
        schedule=describe_schedule(config),
        step=step,
        total_steps=int(total) if total else None,
        final_loss=float(records[-1]["loss"]) if records else None,
        metric=_headline(evaluation),
        bound=_bound(evaluation),
        state=state,
        error=error,
        updated=updated,
    )


def queued_runs(runs_root: Path) -> list[Path]:
    """The run folders under runs_root that wait in the queue, first come first: by the status's "queued" time,
    then by name."""
    found = [(read_status(p), p) for p in run_dirs(runs_root)]
    # a run submitted to a cluster (its status names the job) waits in the engine's queue, not in this one
    waiting = [
        (_number(s.get("queued")) or 0.0, p.name, p) for s, p in found if run_state(s) == "queued" and not s.get("job")
    ]
    return [p for _, _, p in sorted(waiting)]


def history(runs_root: Path) -> list[RunRow]:
    """One row per run folder under runs_root, the most recently updated first."""
    return sorted((history_row(p) for p in run_dirs(runs_root)), key=lambda r: r.updated, reverse=True)
