"""Runs as Ray Jobs (the Ray Jobs API, `ray[default]`): the classroom file's [cluster] table names the cluster.

Each run is one job whose entrypoint is the same CLI as the local backend's, `python -m ddpm_core.train …`, run in the
code folder on whichever node Ray places it, with its output appended to <run>/train.log. The job's first act is to
check that the run folder is there and writable (every node must mount the runs root at the same path); when it is
not, the job ends with a message that says so, which the app copies into the run's status.

The run folder records the job (job.json: the cluster's address and the submission id) before the job is submitted,
so that a restarted app re-attaches to the jobs still running. Runs wait in Ray's queue until a node has the CPUs
and GPUs they ask for; a request that no node of the cluster could ever place is refused at submission.

Nothing here starts or stops a cluster: a teacher runs `ray start` on the nodes (or KubeRay), and tests start their
own head on loopback.
"""

from __future__ import annotations

import functools
import secrets
import shlex
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ddpm_core import run_history, runs
from explorer.backends import BackendError
from explorer.classroom import ROOT, ClusterSettings

STATUS_TTL_S = 1.0  # a handle asks Ray for its job's state at most this often
NODES_TTL_S = 5.0  # the pages' line on the cluster's CPUs and GPUs; a submission looks afresh
# Ray's job states and the exit codes a handle reports for the ended ones (STOPPED: as if by SIGTERM)
ENDED = {"SUCCEEDED": 0, "FAILED": 1, "STOPPED": -15}
# What never goes up with a job's working_dir: environments, runs, caches and bench outputs
EXCLUDES = [".venv", "venv", ".git", "runs", "data", "**/__pycache__", ".pytest_cache", "bench/mnist_cpu",
            "tests/artifacts", "*.safetensors", "!assets/checkpoints/*.safetensors"]  # fmt: skip


class Unreachable(BackendError):
    """The cluster's dashboard does not answer."""


def _client(address: str):
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError:
        raise BackendError(
            "the classroom file names a Ray cluster ([cluster] address), but Ray is not installed on this server: "
            'pip install "ray[default]" (the version in requirements-dev.txt), or remove [cluster] to train here'
        ) from None
    try:
        return JobSubmissionClient(address)
    except Exception as e:  # ConnectionError, or Ray's own errors for a dashboard that does not answer
        raise Unreachable(f"the Ray cluster at {address} is unreachable: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__


@dataclass
class RayJob:
    """A handle on one Ray Job, shaped like subprocess.Popen's: poll() is None while it waits or runs."""

    backend: RayBackend
    submission_id: str
    pid: int | None = None  # not a process of this server: it may run on another node
    _code: int | None = None
    _asked: float = 0.0
    message: str = ""  # Ray's word on how it ended (FAILED, STOPPED)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def returncode(self) -> int | None:
        return self._code

    def poll(self) -> int | None:
        with self._lock:
            if self._code is not None or time.monotonic() - self._asked < STATUS_TTL_S:
                return self._code
            self._asked = time.monotonic()
            try:
                info = self.backend.client().get_job_info(self.submission_id)
            except Exception as e:  # unreachable: it may still run; nothing is marked ended on a guess
                self.backend.note_unreachable(e)
                return None
            self.backend.note_reachable()
            state = str(getattr(info.status, "value", info.status))
            if state in ENDED:
                self._code, self.message = ENDED[state], (info.message or "").strip()
            return self._code


class RayBackend:
    name = "ray"
    queues = True

    def __init__(self, settings: ClusterSettings):
        self.settings = settings
        self._client = None
        self._lock = threading.Lock()
        self.unreachable = ""  # the last connection error, "" while the cluster answers
        self._nodes: tuple[float, list[dict]] = (-1e9, [])  # (when asked, the nodes)

    # -- the connection ------------------------------------------------------------------------------------------

    def client(self):
        with self._lock:
            if self._client is None:
                self._client = _client(self.settings.address)
            return self._client

    def note_unreachable(self, e: BaseException) -> None:
        self.unreachable = f"the Ray cluster at {self.settings.address} is unreachable: {_first_line(e)}"
        with self._lock:
            self._client = None  # a fresh client on the next call (the head may come back)

    def note_reachable(self) -> None:
        self.unreachable = ""

    # -- what the cluster has -------------------------------------------------------------------------------------

    def resources(self, max_age_s: float = NODES_TTL_S) -> list[dict]:
        """One dict per alive node: its total "CPU" and "GPU" (the dashboard's node summary), at most max_age_s old."""
        with self._lock:
            asked, nodes = self._nodes
        if time.monotonic() - asked < max_age_s:
            return nodes
        nodes = self._ask_nodes()
        with self._lock:
            self._nodes = (time.monotonic(), nodes)
        return nodes

    def _ask_nodes(self) -> list[dict]:
        import requests  # ray[default] brings it

        try:
            reply = requests.get(f"{self.settings.address.rstrip('/')}/nodes?view=summary", timeout=5)
            reply.raise_for_status()
            summary = reply.json()["data"]["summary"]
        except Exception as e:
            self.note_unreachable(e)
            raise Unreachable(self.unreachable) from None
        self.note_reachable()
        nodes = []
        for node in summary:
            raylet = node.get("raylet", node)
            if str(raylet.get("state", "ALIVE")).upper() != "ALIVE":
                continue
            total = raylet.get("resourcesTotal", {})
            nodes.append({"CPU": float(total.get("CPU", 0)), "GPU": float(total.get("GPU", 0))})
        return nodes

    def request(self, device: str) -> tuple[float, float]:
        """The (CPUs, GPUs) a run on device asks for: [cluster] num_cpus; and num_gpus (1 when it is 0) for a run
        on "cuda", or on "auto" where the cluster gives runs a GPU share (num_gpus > 0)."""
        s = self.settings
        gpus = device == "cuda" or (device == "auto" and s.num_gpus > 0)
        return s.num_cpus, (s.num_gpus or 1.0) if gpus else 0.0

    def check(self, device: str) -> None:
        """Refuse, at submission, a run that no node of the cluster could ever place (it would wait forever)."""
        cpus, want_gpus = self.request(device)
        nodes = self.resources(max_age_s=0)
        if any(n["CPU"] >= cpus and n["GPU"] >= want_gpus for n in nodes):
            return
        have = ", ".join(f"{n['CPU']:g} CPU / {n['GPU']:g} GPU" for n in nodes) or "no live node"
        what = f"{cpus:g} CPU{'s' if cpus != 1 else ''}" + (f" and {want_gpus:g} GPU" if want_gpus else "")
        raise BackendError(
            f"no node of the Ray cluster at {self.settings.address} can place a run that asks for {what} (its nodes: "
            f"{have}): it would wait forever. Pick a CPU recipe or device, or ask the teacher for a node with a GPU"
        )

    def describe(self) -> str:
        try:
            nodes = self.resources()
        except BackendError as e:
            return f"Runs train on a Ray cluster, but {e}."
        cpus, gpus = sum(n["CPU"] for n in nodes), sum(n["GPU"] for n in nodes)
        per_run, per_gpu_run = self.request("cpu")[0], self.request("cuda")[1]
        return (
            f"Runs train as Ray Jobs on the cluster at {self.settings.address}: {len(nodes)} node(s), {cpus:g} CPUs, "
            f"{gpus:g} GPUs; each run asks for {per_run:g} CPU(s) (and {per_gpu_run:g} GPU on a GPU run), and waits "
            f"in Ray's queue until a node has them."
        )

    # -- runs ----------------------------------------------------------------------------------------------------

    def entrypoint(self, run_dir: Path, args: list, submission_id: str) -> str:
        s, folder = self.settings, shlex.quote(str(run_dir))
        log = shlex.quote(str(run_dir / run_history.LOG))
        cmd = " ".join(shlex.quote(str(a)) for a in [s.python, "-m", "ddpm_core.train", *args])
        missing = shlex.quote(
            f"the run folder {run_dir} is not there or not writable on the node that took this job: every Ray node "
            f"must mount the runs root at the same path as the app servers (NFS, or a ReadWriteMany volume)"
        )
        where = "" if s.working_dir else f"cd {shlex.quote(str(s.code_dir or ROOT))} && "
        return (
            f'{{ test -d {folder} && test -w {folder}; }} || {{ echo {missing} "($(hostname))"; exit 3; }}; '
            f"{where}{runs.JOB_ENV}={shlex.quote(submission_id)} PYTHONUNBUFFERED=1 exec {cmd} >> {log} 2>&1"
        )

    def spawn(self, run_dir: Path, args: list, device: str = "auto") -> RayJob:
        self.check(device)
        cpus, want_gpus = self.request(device)
        submission_id = f"ddpm-{runs.sanitize_run_name(run_dir.name)[:40]}-{secrets.token_hex(4)}"
        runtime_env = {"working_dir": str(ROOT), "excludes": EXCLUDES} if self.settings.working_dir else {}
        (run_dir / runs.STOP).unlink(missing_ok=True)
        with open(run_dir / run_history.LOG, "a") as log:
            log.write(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] Ray job {submission_id} on {self.settings.address}: "
                      f"python -m ddpm_core.train {' '.join(map(str, args))}\n")  # fmt: skip
        record = {"backend": "ray", "address": self.settings.address, "submission_id": submission_id}
        runs.write_json(run_dir / runs.JOB, record)  # first: an app that restarts mid-submission still finds it
        try:
            self.client().submit_job(
                entrypoint=self.entrypoint(run_dir, args, submission_id),
                submission_id=submission_id,
                runtime_env=runtime_env or None,
                entrypoint_num_cpus=cpus,
                entrypoint_num_gpus=want_gpus or None,
                metadata={"run": run_dir.name, "app": "ddpm-explorer"},
            )
        except BackendError:
            (run_dir / runs.JOB).unlink(missing_ok=True)
            raise
        except Exception as e:
            (run_dir / runs.JOB).unlink(missing_ok=True)
            self.note_unreachable(e)
            why = _first_line(e)
            raise BackendError(f"the Ray cluster at {self.settings.address} refused the run: {why}") from None
        runs.write_status(run_dir, "queued", job=submission_id, queued=time.time(), pid=None)
        return RayJob(self, submission_id)

    def terminate(self, handle: RayJob) -> None:
        """Stop the job: Ray sends SIGTERM to its entrypoint (the trainer checkpoints and exits) or cancels it while
        it waits. An unreachable cluster raises BackendError."""
        try:
            self.client().stop_job(handle.submission_id)
        except Exception as e:
            self.note_unreachable(e)
            raise BackendError(self.unreachable) from None

    def attach(self, run_dir: Path) -> RayJob | None:
        record = runs.read_json(Path(run_dir) / runs.JOB, {})
        if not isinstance(record, dict) or record.get("backend") != "ray" or not record.get("submission_id"):
            return None
        return RayJob(self, str(record["submission_id"]))

    def owns(self, handle: RayJob, status: dict) -> bool:
        return status.get("job") == handle.submission_id

    def why_ended(self, handle: RayJob) -> str:
        """Ray's message and the last lines of the job's own output (where a job that never reached the trainer,
        e.g. on a node without the runs root, says why)."""
        tail = ""
        try:
            logs = self.client().get_job_logs(handle.submission_id).strip().splitlines()
            tail = logs[-1] if logs else ""
        except Exception:  # the cluster is gone: Ray's message is all there is
            pass
        return "; ".join(x for x in (tail, handle.message) if x)


@functools.lru_cache(maxsize=4)
def ray_backend(settings: ClusterSettings) -> RayBackend:
    """One backend per cluster setting (its client and its handles' caches are shared by every session)."""
    return RayBackend(settings)
