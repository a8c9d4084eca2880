"""Runs on a real Ray cluster (issue 29): a local head on loopback, started here and stopped by its own process,
takes real tiny training runs as Ray Jobs. Each run trains in its folder as a local run does (status, metrics,
checkpoints, train.log); a stop checkpoints and exits, a resume continues, a job killed mid-run is recorded failed
and resumes from its checkpoint, a restarted app re-attaches, a run no node can place is refused at submission, and
an unreachable cluster is said, with nothing marked ended. Skipped where Ray is not installed, except in CI."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from ddpm_core import run_history, runs
from ddpm_core.config import TrainConfig
from explorer.backends import BackendError
from explorer.classroom import Classroom, ClusterSettings
from explorer.jobs import JobRegistry, LaunchError
from explorer.owners import Requester
from tests.runs_helpers import TINY

QUICK = {**TINY, "steps": 20, "warmup": 5, "log_every": 5, "preview_every": 0, "checkpoint_every": 10}
LONG = {**QUICK, "steps": 1_000_000, "checkpoint_every": 5}  # runs until stopped
RAY = Path(sys.executable).with_name("ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str) -> bool:
    """The dashboard answers and lists the head as a live node with its CPUs (it registers a moment later)."""
    import requests

    try:
        summary = requests.get(f"{url}/nodes?view=summary", timeout=2).json()["data"]["summary"]
    except (requests.RequestException, ValueError, KeyError, TypeError):
        return False
    return any(n.get("raylet", {}).get("resourcesTotal", {}).get("CPU") for n in summary)


@pytest.fixture(scope="module")
def ray_head():
    """`ray start --head --block` on loopback with 2 CPUs, its own temp dir and ports; the dashboard's URL. Stopped by
    signalling the process it started (never `ray stop`, which ends every Ray on the machine)."""
    if not RAY.exists():
        if os.environ.get("CI") == "true":
            pytest.fail('CI=true but Ray is not installed: requirements-dev.txt must bring "ray[default]"')
        pytest.skip('Ray is not installed (pip install -r requirements-dev.txt brings "ray[default]")')
    port, dashboard = _free_port(), _free_port()
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's sockets live under it
    with open(Path(temp) / "head.log", "w") as log:  # the child keeps its own descriptor
        head = _start_head(port, dashboard, temp, log)
    url = f"http://127.0.0.1:{dashboard}"
    deadline = time.monotonic() + 180
    while not _answers(url):
        if head.poll() is not None or time.monotonic() > deadline:
            _stop(head)
            pytest.fail(f"the Ray head did not come up:\n{(Path(temp) / 'head.log').read_text()[-3000:]}")
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(0.5)
    yield url, head
    _stop(head)


def _start_head(port: int, dashboard: int, temp: str, log) -> subprocess.Popen:
    return subprocess.Popen(
        [str(RAY), "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--num-cpus=2", "--num-gpus=0",
         f"--temp-dir={temp}", "--include-dashboard=true", "--disable-usage-stats"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
    )  # fmt: skip


def _stop(head: subprocess.Popen) -> None:
    if head.poll() is None:
        head.send_signal(signal.SIGTERM)  # `ray start --block` stops the processes it started
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(60)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(head.pid, signal.SIGKILL)  # anything of its own group that is left


@pytest.fixture(autouse=True)
def app_registry_forgets_the_cluster():
    """The app's one registry (st.cache_resource) lives on in this process: after a test whose pages attached it to
    a cluster's jobs, it forgets them, so that later tests of the local backend see only their own runs."""
    yield
    from explorer.train_widgets import registry

    registry()._jobs.clear()


@pytest.fixture
def cluster(ray_head, tmp_path, monkeypatch):
    """A registry whose classroom points at the head; runs land in tmp_path."""
    monkeypatch.setenv("DDPM_EXPLORER_RUNS", str(tmp_path))
    room = Classroom(cluster=ClusterSettings(address=ray_head[0], num_cpus=1))
    reg = JobRegistry(room=lambda: room)
    yield reg, room
    _stop_all(reg, tmp_path)


def until(predicate, timeout: float, what: str, run_dir: Path | None = None):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            tail = run_history.log_tail(run_dir) if run_dir else ""
            pytest.fail(f"no {what} within {timeout} s; train.log:\n{tail}")
        time.sleep(0.2)
    return value


def state(reg: JobRegistry, run_dir: Path) -> str:
    reg.job(run_dir)  # records the end of a job that ended without a status
    return run_history.run_state(run_history.read_status(run_dir))


def test_stop_checkpoints_and_resume_continues_on_the_cluster(cluster, tmp_path):
    reg, _ = cluster
    run_dir = tmp_path / "ray-long"
    reg.submit(TrainConfig.from_dict(LONG), run_dir, Requester("bob"))
    until(lambda: run_history.read_status(run_dir).get("checkpoint_step", 0) >= 5, 240, "a checkpoint", run_dir)
    with pytest.raises(LaunchError, match="belongs to another"):
        reg.stop(run_dir, Requester("mallory"))
    reg.stop(run_dir, Requester("bob"))
    until(lambda: state(reg, run_dir) == "stopped", 60, "the stop", run_dir)
    stopped_at = run_history.read_status(run_dir)["step"]
    assert stopped_at >= 5
    resumed = reg.resume(run_dir, stopped_at + 10, Requester("bob"))
    until(lambda: state(reg, run_dir) == "done", 240, "the resumed run's end", run_dir)
    status = run_history.read_status(run_dir)
    assert status["step"] == stopped_at + 10 and status["job"] == resumed.process.submission_id
    steps, _ = run_history.loss_curve(run_history.read_records(run_dir))
    assert steps == sorted(steps) and steps[-1] == stopped_at + 10


def test_a_killed_job_is_failed_and_resumes_and_a_restarted_app_reattaches(cluster, tmp_path):
    reg, room = cluster
    run_dir = tmp_path / "ray-killed"
    reg.submit(TrainConfig.from_dict(LONG), run_dir, Requester("carol"))
    until(lambda: run_history.read_status(run_dir).get("checkpoint_step", 0) >= 5, 240, "a checkpoint", run_dir)
    # the app restarts: a fresh registry finds the job through the folder, counts it, and may stop it
    again = JobRegistry(room=lambda: room)
    assert run_dir in again.active(tmp_path) and again.job(run_dir) is not None
    os.kill(run_history.read_status(run_dir)["pid"], signal.SIGKILL)  # a trainer killed without a word
    until(lambda: state(again, run_dir) == "failed", 60, "the failure recorded", run_dir)
    status = run_history.read_status(run_dir)
    assert "the trainer exited with code" in status["error"], status
    checkpoint = status["checkpoint_step"]
    again.resume(run_dir, checkpoint + 5, Requester("carol"))
    until(lambda: state(again, run_dir) == "done", 240, "the resumed run's end", run_dir)
    assert run_history.read_status(run_dir)["step"] == checkpoint + 5


def test_a_run_no_node_can_place_is_refused_at_submission(cluster, tmp_path):
    reg, _ = cluster
    with pytest.raises(LaunchError, match="no node of the Ray cluster"):
        reg.submit(TrainConfig.from_dict({**QUICK, "device": "cuda"}), tmp_path / "ray-gpu", Requester("dave"))
    assert not (tmp_path / "ray-gpu" / runs.JOB).exists()
    assert "2 CPUs" in reg.backend.describe() and "0 GPUs" in reg.backend.describe()


def test_an_unreachable_cluster_is_said_and_nothing_is_marked_ended(tmp_path, monkeypatch):
    monkeypatch.setenv("DDPM_EXPLORER_RUNS", str(tmp_path))
    room = Classroom(cluster=ClusterSettings(address=f"http://127.0.0.1:{_free_port()}"))
    reg = JobRegistry(room=lambda: room)
    with pytest.raises(LaunchError, match="unreachable"):
        reg.submit(TrainConfig.from_dict(QUICK), tmp_path / "nowhere", Requester("erin"))
    assert "unreachable" in reg.backend.describe()
    # a run that a job trains, as the folder says, while the head is down: still running, not failed
    run_dir = tmp_path / "away"
    run_dir.mkdir()
    runs.write_json(run_dir / runs.JOB, {"backend": "ray", "address": room.cluster.address, "submission_id": "x"})
    runs.write_status(run_dir, "running", pid=1, host="another-node", job="x", step=3)
    assert run_dir in reg.active(tmp_path)
    assert run_history.run_state(run_history.read_status(run_dir)) == "running"


def test_runs_wait_in_rays_queue_and_a_waiting_run_is_cancelled(ray_head, tmp_path, monkeypatch):
    """Each run asks for both of the head's CPUs: the second waits in Ray's queue (no FIFO of the app's), and
    cancelling it removes its folder and stops its job, which never trains."""
    monkeypatch.setenv("DDPM_EXPLORER_RUNS", str(tmp_path))
    room = Classroom(cluster=ClusterSettings(address=ray_head[0], num_cpus=2))
    reg = JobRegistry(room=lambda: room)
    first, second = tmp_path / "ray-first", tmp_path / "ray-second"
    try:
        reg.submit(TrainConfig.from_dict(LONG), first, Requester("frank"))
        until(lambda: run_history.read_status(first).get("state") == "running", 240, "the first run training", first)
        waiting = reg.submit(TrainConfig.from_dict(LONG), second, Requester("grace"))
        assert waiting is not None and reg.queue(tmp_path) == []
        time.sleep(3)  # long enough for Ray to have started it, were there room
        assert waiting.process.poll() is None and run_history.read_status(second)["state"] == "queued"
        assert {first, second} <= set(reg.active(tmp_path))
        with pytest.raises(LaunchError, match="belongs to another"):
            reg.cancel(second, Requester("frank"))
        reg.cancel(second, Requester("grace"))
        assert not second.exists() and second not in reg.active(tmp_path)
        reg.stop(first, Requester("frank"))
        until(lambda: state(reg, first) == "stopped", 60, "the first run's stop", first)
        # Ray ends a waiting job once it is placed: stopped, or refused by its own check of the (gone) folder
        until(lambda: waiting.process.poll() is not None, 120, "the cancelled job's end in Ray")
        assert not second.exists()
    finally:
        _stop_all(reg, tmp_path)


def _stop_all(reg: JobRegistry, root: Path) -> None:
    """No job of a test outlives it, even a failed one (its CPUs would starve the next test's runs)."""
    reg.close()
    for job in list(reg._jobs.values()):
        with contextlib.suppress(LaunchError, BackendError):
            if job.alive:
                job.backend.terminate(job.process)


def test_the_train_page_launches_onto_the_cluster_and_watches_the_folder(ray_head, tmp_path, monkeypatch):
    """The Train page with $DDPM_EXPLORER_RAY: it says where runs train, submits the form's run as a Ray Job, and
    follows it from its folder to the end; the Home page names the cluster too."""
    from explorer.train_widgets import registry
    from tests.apptest_helpers import open_page, rerun
    from tests.test_page_train import TINY_FORM, fill

    monkeypatch.setenv("DDPM_EXPLORER_RUNS", str(tmp_path))
    monkeypatch.setenv("DDPM_EXPLORER_RAY", ray_head[0])
    at = open_page("train.py")
    assert any("Runs train as Ray Jobs on the cluster" in c.value and "2 CPUs" in c.value for c in at.caption)
    fill(at, device="cpu", **TINY_FORM)
    at.text_input(key="name").set_value("from-the-page")
    at.button(key="launch").click()
    rerun(at)
    assert any("Submitted from-the-page to the cluster" in s.value for s in at.success), [e.value for e in at.error]
    run_dir = tmp_path / "from-the-page"
    record, reg = runs.read_json(run_dir / runs.JOB), registry()
    assert record["address"] == ray_head[0] and record["backend"] == "ray"
    assert run_dir in reg.active(tmp_path) and reg.queue(tmp_path) == []  # Ray's queue, not a FIFO of ours
    until(lambda: run_history.read_status(run_dir).get("state") == "done", 240, "the page's run done", run_dir)
    status = run_history.read_status(run_dir)  # the run trained in its folder as a local run does
    assert status["step"] == TINY_FORM["steps"] and status["job"] == record["submission_id"]
    assert status["host"] == run_history.HOST
    steps, _ = run_history.loss_curve(run_history.read_records(run_dir))
    assert steps == list(range(5, TINY_FORM["steps"] + 1, 5))
    assert (run_dir / runs.MODEL).is_file() and (run_dir / runs.EMA).is_file()
    assert f"Ray job {record['submission_id']}" in (run_dir / run_history.LOG).read_text()
    until(lambda: reg.job(run_dir).process.poll() == 0, 60, "the job's end seen through Ray")
    assert run_dir not in reg.active(tmp_path)
    at.button(key="launch")  # the page, rerun, shows the finished run
    assert not rerun(at).exception
    home = open_page("home.py")
    assert any("Runs train as Ray Jobs on the cluster at " + ray_head[0] in m.value for m in home.markdown)


def test_the_head_stopped_while_a_run_trains_loses_nothing(ray_head, cluster, tmp_path):
    """The cluster goes away mid-run (its head stopped; Ray ends its jobs): the pages say the cluster is unreachable,
    and the run keeps its folder and its checkpoint, never marked done or failed by the app. Last in this module: it
    stops the module's head."""
    from tests.apptest_helpers import open_page

    reg, _ = cluster
    run_dir = tmp_path / "ray-orphaned"
    reg.submit(TrainConfig.from_dict(LONG), run_dir, Requester("heidi"))
    until(lambda: run_history.read_status(run_dir).get("checkpoint_step", 0) >= 5, 240, "a checkpoint", run_dir)
    _stop(ray_head[1])
    assert "unreachable" in reg.backend.describe()
    reg.active(tmp_path)  # the registry looks at its job: Ray does not answer, so nothing is recorded as ended
    status = run_history.read_status(run_dir)
    assert status["state"] in ("running", "stopped") and status.get("error") is None, status
    assert (run_dir / runs.MODEL).is_file() and (run_dir / runs.STATE).is_file() and status["checkpoint_step"] >= 5
    os.environ["DDPM_EXPLORER_RAY"] = ray_head[0]
    try:
        page = open_page("train.py")
    finally:
        del os.environ["DDPM_EXPLORER_RAY"]
    assert any("is unreachable" in w.value for w in page.warning) and not page.exception
