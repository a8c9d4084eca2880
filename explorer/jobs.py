"""Training runs as separate processes: launch, stop, resume, a limit on how many run at once, and a queue for the
runs that wait for a free slot.

Each run is `python -m ddpm_core.train --config <run>/config.json --out <run>` (the CLI, the same TrainConfig), in
its own session so that a stop signals only it and the app never waits on it. Its stdout and stderr go to
<run>/train.log. The run folder stays the only interface: the registry only keeps the process handles (to count and
stop runs, and to record a process that died without writing its status), so after an app restart the runs are
still found through their folders. One JobRegistry serves every browser session (explorer/train_widgets.py caches
it with st.cache_resource); a lock guards it.

Training is a shared resource of the classroom (explorer/classroom.py): the teacher's switch turns launching and
resuming off, `max_concurrent` runs train at once, and `per_session` runs at most belong to one browser. A run
submitted while every slot is taken waits in the queue: its folder holds config.json and a status.json that says
"queued" (with the time it was queued), so that the queue survives a server restart.

Runs belong to someone (explorer/owners.py): the app records the launching browser in <run>/owner.json, and only
that browser or the teacher may stop, resume, cancel or delete the run. Each of those takes `who`, a Requester;
None is the server itself (the CLI, tests), which may do anything.
Queued runs start first come first, as slots free up: a daemon thread polls while the queue is not empty, and the
Train page polls at each run.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ddpm_core import run_history, runs
from ddpm_core.config import TrainConfig
from ddpm_core.run_lock import RunLock, RunLocked
from explorer import claims, gate, owners
from explorer.backends import BackendError, TrainingBackend, backend_for
from explorer.classroom import MAX_RUNS_ENV, Classroom, current
from explorer.job import Job, record_end
from explorer.owners import Requester
from explorer.run_folders import default_max_runs, root_problem, run_folder, runs_root  # noqa: F401 (also theirs)

POLL_S = 1.0  # how often the queue's watcher looks for a free slot
OFF = (
    "Training is turned off on this server by the teacher (the classroom settings): runs cannot be launched or "
    "resumed from the app. Sampling and the other pages work as usual."
)


class LaunchError(ValueError):
    """A run cannot be launched, stopped or resumed; the message says why and what to do (shown as is)."""


class JobRegistry:
    def __init__(self, max_runs: int | None = None, room: Callable[[], Classroom] | None = None):
        self._max_runs = max_runs  # None: the classroom's max_concurrent, else default_max_runs()
        self._room = room or current  # read at each call: the teacher may edit the file while we run
        self._jobs: dict[Path, Job] = {}
        self._lock = threading.RLock()
        self._watchers: dict[Path, threading.Thread] = {}  # runs root → the thread that starts its queued runs
        self._closed = threading.Event()

    @property
    def backend(self) -> TrainingBackend:
        """Where runs train (explorer/backends.py): this server, or the classroom file's Ray cluster."""
        return backend_for(self._room())

    @property
    def max_runs(self) -> int:
        """Runs training at once. On a cluster the engine decides (its queue, its resources): no limit here."""
        if self.backend.queues:
            return 1 << 30
        return self._max_runs or self._room().max_concurrent or default_max_runs()

    @property
    def training(self) -> bool:
        """The teacher's switch: False when nobody may launch or resume a run from the app."""
        return self._room().training

    @property
    def per_session(self) -> int:
        return self._room().per_session

    def job(self, run_dir: Path) -> Job | None:
        with self._lock:
            job = self._jobs.get(Path(run_dir).resolve()) or self._attach(Path(run_dir).resolve())
            if job is not None:
                record_end(job)
            return job

    def _attach(self, run_dir: Path) -> Job | None:
        """A job the backend started before this registry existed (an app restart, another replica), found through
        what it recorded in the run folder: only while the folder says the run waits or trains."""
        if run_history.read_status(run_dir).get("state") not in ("queued", "running"):
            return None
        handle = self.backend.attach(run_dir)
        if handle is None:
            return None
        job = self._jobs[run_dir] = Job(run_dir, handle, False, self.backend)
        return job

    def active(self, root: Path | None = None) -> list[Path]:
        """The run folders training now: this registry's live processes, plus the runs under root whose status says
        running with a live pid (launched before an app restart, or from the CLI)."""
        with self._lock:
            folders = [p.resolve() for p in run_history.run_dirs(root or runs_root())]
            for p in folders:
                if p not in self._jobs:
                    self._attach(p)
            for job in self._jobs.values():
                record_end(job)
            mine = [p for p, job in self._jobs.items() if job.alive]
            others = [
                p for p in folders if run_history.run_state(run_history.read_status(p)) == "running" and p not in mine
            ]
            return mine + others

    def queue(self, root: Path | None = None) -> list[Path]:
        """The runs waiting under root, the next to start first."""
        return [p.resolve() for p in run_history.queued_runs(root or runs_root())]

    def owner_runs(self, owner: str, root: Path | None = None) -> list[Path]:
        """The runs of one browser (its owner id) that train now or wait in the queue under root."""
        with self._lock:
            return [p for p in [*self.active(root), *self.queue(root)] if owners.owner_of(p) == owner]

    # ------------------------------------------------------------------------------------------------------------

    def launch(self, config: TrainConfig, run_dir: Path, who: Requester | None = None) -> Job:
        """Start a new run of config in run_dir, which must not hold a run yet, now: LaunchError when every slot is
        taken (submit() queues it instead). who becomes its owner."""
        with self._lock:
            run_dir, config = self._check_new(config, run_dir, who)
            self._check_room(run_dir)
            self._write_config(run_dir, config, who)
            return self._start(run_dir, ["--config", run_dir / runs.CONFIG, "--out", run_dir], False)

    def submit(self, config: TrainConfig, run_dir: Path, who: Requester | None = None) -> Job | None:
        """Start a new run in run_dir now if a slot is free and no run waits, else queue it: its Job, or None when it
        was queued. LaunchError for what no waiting mends (training off, the browser's limit, the folder in use)."""
        with self._lock:
            run_dir, config = self._check_new(config, run_dir, who)
            root = run_dir.parent
            if not self.queue(root) and len(self.active(root)) < self.max_runs:
                self._write_config(run_dir, config, who)
                return self._start(run_dir, ["--config", run_dir / runs.CONFIG, "--out", run_dir], False)
            queued = {"queued": time.time(), "step": 0, "total_steps": config.steps}
            self._write_config(run_dir, config, who, queued=queued)
            self._watch(root)
            return None

    def resume(self, run_dir: Path, steps: int, who: Requester | None = None) -> Job:
        """Continue a stopped or finished run from its last checkpoint until it reaches `steps` in all."""
        run_dir = Path(run_dir).resolve()
        self._check_may_act(who, run_dir, "resume")
        self._check_training(steps)
        row = run_history.history_row(run_dir)
        if not ((run_dir / runs.MODEL).is_file() and (run_dir / runs.STATE).is_file()):
            raise LaunchError(
                f"{run_dir.name} has no checkpoint yet (it stopped before its first one): nothing to resume"
            )
        if steps <= row.step:
            raise LaunchError(f"{run_dir.name} is at step {row.step:,}: ask for more steps than that to resume it")
        _check_device(run_history.read_config(run_dir).get("device", "auto"), self.backend)
        with self._lock:
            self._check_limit(who, run_dir.parent)
            self._check_room(run_dir)
            return self._start(run_dir, ["--out", run_dir, "--resume", "--steps", steps], True)

    def stop(self, run_dir: Path, who: Requester | None = None) -> None:
        """Ask a run to stop cleanly: the trainer sees the STOP file after its current step, saves a checkpoint,
        writes status "stopped" and exits (no preview, no evaluation). A process of ours that has not started
        training yet has nothing to save: it is terminated (its status then says stopped)."""
        run_dir = Path(run_dir)
        self._check_may_act(who, run_dir, "stop")
        runs.write_text(run_dir / runs.STOP, "stop requested by the app\n")
        job = self.job(run_dir)
        if job is None or not job.alive:
            return
        job.stop_requested = True
        status = run_history.read_status(run_dir)
        if not (status.get("state") == "running" and job.backend.owns(job.process, status)):
            # the trainer deletes a STOP file when it starts training; before that it has no SIGTERM handler either
            # (on a cluster: the job still waits for a node, and stopping it takes it out of Ray's queue)
            try:
                job.backend.terminate(job.process)
            except BackendError as e:
                raise LaunchError(str(e)) from None

    def cancel(self, run_dir: Path, who: Requester | None = None) -> None:
        """Take a queued run out of the queue (ours, or Ray's: its job is stopped) and remove its folder (it holds
        only config.json, status.json and owner.json). Claimed first, so that no other app server starts it."""
        run_dir = Path(run_dir).resolve()
        with self._lock:
            self._check_may_act(who, run_dir, "cancel")
            status = run_history.read_status(run_dir)
            if status.get("state") != "queued" or status.get("pid") or not (status.get("job") or claims.claim(run_dir)):
                state = "starting" if status.get("pid") or status.get("state") == "queued" else None
                state = state or run_history.run_state(status)
                raise LaunchError(f"{run_dir.name} is not waiting in the queue ({state}): nothing to cancel")
            if status.get("job") and (job := self.job(run_dir)) is not None:
                try:
                    job.backend.terminate(job.process)  # out of Ray's queue (a job that started meanwhile stops)
                except BackendError as e:
                    raise LaunchError(str(e)) from None
                self._jobs.pop(run_dir, None)
            for name in (runs.CONFIG, runs.STATUS, run_history.LOG, runs.STOP, owners.OWNER, claims.CLAIM, runs.JOB):
                (run_dir / name).unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # not empty: someone put files there; leave them
                run_dir.rmdir()

    def delete(self, run_dir: Path, who: Requester | None = None) -> None:
        """Remove a run that has ended (done, stopped, failed) with everything in its folder; a run that trains or
        waits is refused (stop or cancel it first), as is one a trainer holds (explorer.run_lock)."""
        run_dir = Path(run_dir).resolve()
        with self._lock:
            self._check_may_act(who, run_dir, "delete")
            if run_dir in self.active(run_dir.parent) or run_dir in self.queue(run_dir.parent):
                raise LaunchError(f"{run_dir.name} is training or waiting to: stop or cancel it before deleting it")
            lock = RunLock(run_dir)
            try:
                lock.acquire()  # no trainer may start on it while it goes (a resume from the CLI, say)
            except RunLocked as e:
                raise LaunchError(str(e)) from None
            # Renamed first, in one step, so that it leaves the history at once even if removing it takes a while
            gone = run_dir.with_name(f".deleted-{run_dir.name}-{secrets.token_hex(4)}")
            try:
                run_dir.rename(gone)
            except OSError as e:
                lock.release()
                raise LaunchError(f"cannot delete {run_dir.name}: {e.strerror or e}") from None
            self._jobs.pop(run_dir, None)
        shutil.rmtree(gone, ignore_errors=True)

    def poll(self, root: Path | None = None) -> list[Job]:
        """Start queued runs under root, first come first, while slots are free (and training is on); keeps a
        watcher thread polling while runs still wait. The jobs started."""
        root = Path(root or runs_root())
        started: list[Job] = []
        with self._lock:
            tried: set[Path] = set()
            while self.training and len(self.active(root)) < self.max_runs:
                waiting = [p for p in self.queue(root) if p not in tried]
                if not waiting:
                    break
                tried.add(waiting[0])
                if (job := self._start_queued(waiting[0])) is not None:
                    started.append(job)
            if self.queue(root):
                self._watch(root)
        return started

    def drain(self, root: Path | None = None, timeout: float | None = None) -> bool:
        """Wait until no run waits in root's queue (its watcher has started the last one); False at the timeout."""
        thread = self._watchers.get(Path(root or runs_root()).resolve())
        if thread is not None:
            thread.join(timeout)
        return not self.queue(root)

    def close(self) -> None:
        """Stop the queue's watcher threads (runs already started go on)."""
        self._closed.set()

    # ------------------------------------------------------------------------------------------------------------

    def _check_training(self, steps: int) -> None:
        """The gate (explorer.gate.training): training on, and no more than the classroom's steps per run."""
        decision = gate.training(self._room(), steps, OFF)
        if not decision.allowed:
            raise LaunchError(decision.refusal)

    @staticmethod
    def _check_may_act(who: Requester | None, run_dir: Path, action: str) -> None:
        if not owners.may_act(who, run_dir):
            raise LaunchError(owners.refusal(run_dir, action))

    def _check_new(self, config: TrainConfig, run_dir: Path, who: Requester | None) -> tuple[Path, TrainConfig]:
        """The checks of a new run that hold whether or not it has to wait; the run folder resolved (the trainer
        runs from the repository root) and the config pointed at it."""
        if config.epochs:
            raise LaunchError("the app launches runs counted in steps: set steps, not epochs")
        self._check_training(config.steps)
        run_dir = Path(run_dir).resolve()
        if problem := root_problem(run_dir.parent):
            raise LaunchError(problem)
        _check_device(config.device, self.backend)
        if (run_dir / runs.MODEL).exists():
            raise LaunchError(f"{run_dir} already holds a trained model: resume it, or pick another run name")
        if run_history.is_run_dir(run_dir):
            state = run_history.run_state(run_history.read_status(run_dir))
            raise LaunchError(f"{run_dir} already holds a run ({state}): pick another run name")
        self._check_limit(who, run_dir.parent)
        return run_dir, config.replace(name=run_dir.name, out=str(run_dir))

    def _check_limit(self, who: Requester | None, root: Path) -> None:
        """per_session: the runs one browser may have training or waiting (the teacher has no limit)."""
        if who is None or who.teacher or not who.owner:
            return
        mine = self.owner_runs(who.owner, root)
        if len(mine) >= self.per_session:
            names = ", ".join(p.name for p in mine)
            raise LaunchError(
                f"This browser already has {len(mine)} run(s) training or waiting ({names}), the most one browser "
                f"may have ({self.per_session}): wait for it to finish, or stop or cancel it"
            )

    def _check_room(self, run_dir: Path) -> None:
        self.poll(run_dir.parent)  # a queued run takes a free slot before a run that did not wait
        active = self.active(run_dir.parent)
        if run_dir.resolve() in active:
            raise LaunchError(f"{run_dir.name} is training right now: stop it first")
        if len(active) >= self.max_runs:
            names = ", ".join(p.name for p in active)
            raise LaunchError(
                f"{len(active)} run(s) already training ({names}) and at most {self.max_runs} may run at once: "
                f"stop one or wait for it to finish (the classroom file's [training] max_concurrent or "
                f"{MAX_RUNS_ENV} sets the limit)"
            )

    @staticmethod
    def _write_config(run_dir: Path, config: TrainConfig, who: Requester | None, queued: dict | None = None) -> None:
        """config.json and owner.json, and with queued a status.json that says so (with those fields)."""
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            owners.record_owner(run_dir, who.owner if who else "")
            runs.write_text(run_dir / runs.CONFIG, config.to_json())
            if queued is not None:
                runs.write_status(run_dir, "queued", **queued)
        except OSError as e:  # a full disk, a read-only runs folder: say so on the page, not as a traceback
            raise LaunchError(f"cannot write the run folder {run_dir}: {e}") from None

    def _start_queued(self, run_dir: Path) -> Job | None:
        """Start a run that waited in the queue, unless another app server on this runs root has claimed it first
        (explorer/claims.py); a run that cannot start any more (its device gone) is failed."""
        if not claims.claim(run_dir):
            return None
        try:
            _check_device(run_history.read_config(run_dir).get("device", "auto"), self.backend)
            job = self._start(run_dir, ["--config", run_dir / runs.CONFIG, "--out", run_dir], False)
            runs.write_status(run_dir, "queued", pid=job.process.pid)  # out of the queue, also for a restarted app
            return job
        except (LaunchError, OSError) as e:
            with contextlib.suppress(OSError):
                runs.write_status(run_dir, "failed", error=f"could not start after waiting in the queue: {e}")
            return None

    def _watch(self, root: Path) -> None:
        """Make sure a daemon thread starts root's queued runs as slots free up."""
        root = Path(root).resolve()
        if (thread := self._watchers.get(root)) is not None and thread.is_alive():
            return
        thread = threading.Thread(target=self._watch_loop, args=(root,), name=f"run-queue {root}", daemon=True)
        self._watchers[root] = thread
        thread.start()

    def _watch_loop(self, root: Path) -> None:
        while not self._closed.wait(POLL_S):
            with self._lock:
                if not self.queue(root):  # under the lock: a run queued now finds this thread gone and starts one
                    self._watchers.pop(root, None)
                    return
                self.poll(root)

    def _start(self, run_dir: Path, args: list, resume: bool) -> Job:
        backend = self.backend
        try:
            handle = backend.spawn(run_dir, args, run_history.read_config(run_dir).get("device", "auto"))
        except BackendError as e:
            if not resume and run_history.read_status(run_dir).get("state") in (None, "queued"):
                runs.write_status(run_dir, "failed", error=f"could not start: {e}")
            raise LaunchError(str(e)) from None
        job = Job(run_dir, handle, resume, backend)
        self._jobs[run_dir.resolve()] = job
        return job


def _check_device(name: str, backend: TrainingBackend) -> None:
    """A device the backend's machines have: this server's, or a node of the cluster that could place the run."""
    try:
        backend.check(name)
    except BackendError as e:
        raise LaunchError(str(e)) from None
