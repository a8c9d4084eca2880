"""Where runs train, without a cluster: the classroom file's [cluster] table (and $DDPM_EXPLORER_RAY) picks the
backend, with each wrong entry reported and skipped; the default is the local backend, which needs no Ray. A Ray
job's entrypoint checks its run folder first and says clearly when a node cannot see it. A runs folder the server
cannot write is refused before any launch, with the reason."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ddpm_core import run_history, runs
from ddpm_core.config import TrainConfig
from explorer.backends import LocalBackend, backend_for
from explorer.classroom import ClusterSettings, load_classroom
from explorer.jobs import JobRegistry, LaunchError
from explorer.run_folders import root_problem
from tests.runs_helpers import TINY


def room_of(tmp_path, text: str, env: dict | None = None):
    path = tmp_path / "classroom.toml"
    path.write_text(text)
    return load_classroom(path, env or {})


def test_no_cluster_means_the_local_backend(tmp_path):
    room = room_of(tmp_path, "[training]\nper_session = 2\n")
    assert room.cluster == ClusterSettings() and not room.problems
    backend = backend_for(room)
    assert isinstance(backend, LocalBackend) and not backend.queues
    assert "on this server" in backend.describe()


def test_the_cluster_table_is_read_and_checked_entry_by_entry(tmp_path):
    room = room_of(
        tmp_path,
        '[cluster]\naddress = "http://head:8265/"\nnum_cpus = 2\nnum_gpus = 0.25\ncode_dir = "/srv/x"\n'
        'python = "/srv/venv/bin/python"\nworking_dir = false\n',
    )
    assert room.problems == ()
    assert room.cluster == ClusterSettings("http://head:8265", 2.0, 0.25, "/srv/x", False, "/srv/venv/bin/python")
    bad = room_of(tmp_path, '[cluster]\naddress = "head:8265"\nnum_cpus = 0\nnum_gpus = -1\nnodes = 3\n')
    assert bad.cluster.address == "" and bad.cluster.num_cpus == 1.0 and bad.cluster.num_gpus == 0.0
    problems = " | ".join(bad.problems)
    assert "[cluster] address must be the Ray dashboard's URL" in problems
    assert "[cluster] num_cpus must be a number of CPUs > 0" in problems
    assert "[cluster] num_gpus must be a number of GPUs ≥ 0" in problems
    assert "[cluster] nodes is not a setting" in problems
    assert isinstance(backend_for(bad), LocalBackend)  # a bad address leaves the runs here


def test_the_environment_names_the_cluster_over_the_file(tmp_path):
    room = room_of(
        tmp_path, '[cluster]\naddress = "http://a:8265"\nnum_cpus = 2\n', {"DDPM_EXPLORER_RAY": "http://b:1"}
    )
    assert room.cluster.address == "http://b:1" and room.cluster.num_cpus == 2.0
    wrong = room_of(tmp_path, "", {"DDPM_EXPLORER_RAY": "b:1"})
    assert wrong.cluster.address == "" and "$DDPM_EXPLORER_RAY must be the Ray dashboard's URL" in wrong.problems[0]


def test_a_job_on_a_node_that_cannot_see_the_run_folder_says_so(tmp_path):
    """The entrypoint Ray runs, run here by the shell as Ray would: it stops before the trainer, with the reason."""
    pytest.importorskip("ray")  # the module itself needs no cluster, but lives beside Ray's client
    from explorer.ray_backend import RayBackend

    backend = RayBackend(ClusterSettings(address="http://head:8265"))
    missing = tmp_path / "not-mounted" / "run"
    command = backend.entrypoint(missing, ["--out", missing], "ddpm-x-1")
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3
    assert f"the run folder {missing} is not there or not writable on the node" in done.stdout
    assert "mount the runs root at the same path" in done.stdout
    # where the folder is there, the same command runs the trainer in it (its --help: no training)
    here = tmp_path / "run"
    here.mkdir()
    command = backend.entrypoint(here, ["--help"], "ddpm-x-2")
    ok = subprocess.run(["sh", "-c", command], capture_output=True, timeout=120)
    assert ok.returncode == 0 and "usage" in (here / "train.log").read_text().lower()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into any folder: a read-only folder needs another user")
def test_a_runs_folder_that_cannot_be_written_is_refused_before_a_launch(tmp_path, monkeypatch):
    root = tmp_path / "ro"
    root.mkdir()
    root.chmod(0o500)
    monkeypatch.setenv("DDPM_EXPLORER_RUNS", str(root))
    try:
        assert "cannot be written" in (root_problem(root) or "")
        with pytest.raises(LaunchError, match="cannot be written"):
            JobRegistry().submit(TrainConfig.from_dict({**TINY, "steps": 5}), root / "r")
    finally:
        root.chmod(0o700)


def test_a_runs_folder_that_is_a_file_is_refused_before_a_launch(tmp_path, monkeypatch):
    """What a root user meets too: the runs root is not a folder (a stale mount point's file, a typo)."""
    root = tmp_path / "runs"
    root.write_text("not a folder")
    monkeypatch.setenv("DDPM_EXPLORER_RUNS", str(root))
    assert root_problem(tmp_path) is None  # a writable folder has no problem, and keeps no probe
    assert not [p for p in Path(tmp_path).iterdir() if p.name.startswith(".probe-")]
    problem = root_problem(root)
    assert problem and "cannot be written" in problem and str(root) in problem
    with pytest.raises(LaunchError, match="cannot be written"):
        JobRegistry().submit(TrainConfig.from_dict({**TINY, "steps": 5}), root / "r")
    assert root.read_text() == "not a folder" and not (tmp_path / runs.CONFIG).exists()


def test_two_app_servers_on_one_runs_root_start_a_queued_run_once(tmp_path, monkeypatch):
    """Two registries (two replicas) poll one runs root at the same moment: exactly one claims and starts each
    queued run; a claim left by a server that died is taken over."""
    import threading

    from explorer import claims
    from explorer.classroom import Classroom

    monkeypatch.setenv("DDPM_EXPLORER_RUNS", str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    room = Classroom(per_session=5, max_concurrent=1)
    config = TrainConfig.from_dict({**TINY, "steps": 3, "log_every": 1, "preview_every": 0, "checkpoint_every": 0})
    run_dir = tmp_path / "waiting"
    # queued as a busy server leaves it: config, owner and a "queued" status, no process yet
    JobRegistry._write_config(run_dir, config.replace(name="waiting", out=str(run_dir)), None, queued={"queued": 1.0})
    replicas = [JobRegistry(room=lambda: room) for _ in range(2)]
    started: list = []
    barrier = threading.Barrier(2)

    def poll(reg):
        barrier.wait()
        started.extend(reg.poll(tmp_path))

    threads = [threading.Thread(target=poll, args=(r,)) for r in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert len(started) == 1, started
        assert started[0].process.wait(120) == 0, run_history.log_tail(run_dir)
        assert run_history.read_status(run_dir)["state"] == "done"
    finally:
        for reg in replicas:
            reg.close()
    # a claim whose server is gone (same host, dead pid) is stale: the next server takes it over
    other = tmp_path / "orphan"
    other.mkdir()
    runs.write_json(other / claims.CLAIM, {"host": claims.HOST, "pid": 999_999_999, "time": 0})
    assert claims.claim(other) and not claims.claim(other)  # taken over once; then held by this live process
    claims.release(other)
    assert claims.claim(other)


def test_the_train_page_says_when_the_cluster_does_not_answer(tmp_path, monkeypatch):
    """A classroom pointed at a cluster that is down: the page says so, and a launch is refused with the reason."""
    import socket

    from tests.apptest_helpers import open_page, rerun

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("DDPM_EXPLORER_RUNS", str(tmp_path))
    monkeypatch.setenv("DDPM_EXPLORER_RAY", f"http://127.0.0.1:{port}")
    at = open_page("train.py")
    assert any("is unreachable" in c.value for c in at.caption), [c.value for c in at.caption]
    at.text_input(key="name").set_value("nowhere")
    at.button(key="launch").click()
    rerun(at)
    assert any("is unreachable" in e.value for e in at.error) and not at.exception
    assert not (tmp_path / "nowhere" / runs.JOB).exists()
