"""Sharing the CPU between the server and a trainer: the server computes with one torch thread while a run (the app's
or the CLI's) trains on the CPU, with its own count otherwise and for a run on a GPU; while the server samples it
touches the run's BUSY file, and a trainer on the CPU takes one thread fewer while that file is fresh. The speed-ups
are measured in bench/bench_threads.py, not here."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
import torch

from ddpm_core import runs
from ddpm_core.sharing import BUSY, FRESH_S, CoreSharing, touch_busy
from ddpm_core.threads import TUNE_ENV
from explorer import cpu_share
from explorer.cpu_share import CHECK_EVERY_S, share_cpu
from tests.conftest import ROOT


def in_new_thread(fn):
    """fn() in a fresh thread, as Streamlit runs each page run: (its result, that thread's torch threads after)."""
    out = {}

    def run():
        out["result"] = fn()
        out["threads"] = torch.get_num_threads()

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    return out["result"], out["threads"]


@pytest.fixture
def server_threads(monkeypatch):
    """A server started with 2 threads (the tests themselves run with one)."""
    monkeypatch.setattr(cpu_share, "SERVER_THREADS", 2)
    return 2


def wait_for(condition, timeout=60.0):
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.2)


def test_one_thread_while_a_cli_run_trains_on_the_cpu_and_all_again_after(tmp_path, server_threads):
    clock = [1000.0]

    def share():
        clock[0] += CHECK_EVERY_S  # every call looks at the runs again
        return share_cpu(tmp_path, now=clock[0])

    assert in_new_thread(share) == (2, 2)  # no run: the server's own count
    run = tmp_path / "cli-run"
    trainer = subprocess.Popen(
        [sys.executable, "-m", "ddpm_core.train", "--dataset", "moons", "--steps", "100000", "--device", "cpu",
         "--out", str(run), "--preview-every", "0", "--checkpoint-every", "0", "--evaluate-n", "0"],
        cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for(lambda: runs.read_status(run).get("device") == "cpu")
        assert in_new_thread(share) == (1, 1)
        assert share_cpu(tmp_path, now=clock[0] + 0.5) == 1  # a second look within CHECK_EVERY_S reuses the answer
        trainer.kill()
        trainer.wait()
        assert in_new_thread(share) == (2, 2)  # its process is gone: the cores are the server's again
    finally:
        trainer.kill()
        trainer.wait()


def test_a_run_on_a_gpu_leaves_the_server_its_threads(tmp_path, server_threads):
    run = tmp_path / "gpu-run"
    run.mkdir()
    runs.write_status(run, "running", pid=os.getpid(), device="cuda", step=5)  # alive: this process
    assert in_new_thread(lambda: share_cpu(tmp_path, now=2000.0)) == (2, 2)
    runs.write_status(run, "running", pid=os.getpid(), device="cpu", step=6)
    assert in_new_thread(lambda: share_cpu(tmp_path, now=2000.0 + CHECK_EVERY_S)) == (1, 1)
    runs.write_status(run, "done", pid=os.getpid(), device="cpu", step=7)
    assert in_new_thread(lambda: share_cpu(tmp_path, now=2000.0 + 2 * CHECK_EVERY_S)) == (2, 2)


def test_the_server_tells_the_trainers_on_the_cpu_that_it_computes(tmp_path, server_threads):
    cpu, gpu = tmp_path / "cpu-run", tmp_path / "gpu-run"
    for run, device in ((cpu, "cpu"), (gpu, "cuda")):
        run.mkdir()
        runs.write_status(run, "running", pid=os.getpid(), device=device, step=1)
    share_cpu(tmp_path, now=3000.0)  # a page run: looks, touches nothing
    assert not (cpu / BUSY).exists()
    before = time.time()
    in_new_thread(lambda: share_cpu(tmp_path, now=3000.5, busy=True))  # sampling: the progress callback
    assert (cpu / BUSY).stat().st_mtime >= before - 1 and not (gpu / BUSY).exists()


def test_a_trainer_takes_one_thread_fewer_while_the_busy_file_is_fresh(tmp_path, monkeypatch):
    monkeypatch.setenv(TUNE_ENV, "0")  # its own count when not busy, not the count a tuner measures

    def trainer_thread(steps):
        """CoreSharing made and updated in a fresh thread started with 3 threads: the counts it sets."""

        def run():
            torch.set_num_threads(3)
            sharing = CoreSharing(tmp_path, torch.device("cpu"))
            return [(sharing.update(now), torch.get_num_threads()) for now in steps]

        return in_new_thread(run)[0]

    now = time.time()
    assert trainer_thread([now]) == [(3, 3)]  # no file: every thread
    touch_busy(tmp_path)
    assert trainer_thread([now + 0.5, now + FRESH_S + 1.0]) == [(2, 2), (3, 3)]  # fresh: one fewer; stale: all again
    touch_busy(tmp_path / "gone")  # a run folder that was deleted meanwhile: nothing to touch, no error
    assert CoreSharing(tmp_path, torch.device("cuda")).update(now) == torch.get_num_threads()  # off the CPU: untouched


def test_a_real_trainer_reads_the_busy_file(tmp_path):
    """The trainer's loop calls CoreSharing: with the file kept fresh a 2-thread run logs 1 thread, then 2 again."""
    run = tmp_path / "run"
    trainer = subprocess.Popen(
        [sys.executable, "-m", "ddpm_core.train", "--dataset", "moons", "--steps", "100000", "--device", "cpu",
         "--out", str(run), "--preview-every", "0", "--checkpoint-every", "0", "--evaluate-n", "0",
         "--log-every", "5"],
        cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "2", TUNE_ENV: "0"}, stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )  # fmt: skip

    def threads_logged() -> list[int]:
        return [r["cpu_threads"] for r in runs.read_metrics(run) if "cpu_threads" in r]

    def server_samples() -> bool:
        touch_busy(run)  # as the Sample page's progress callback does
        return 1 in threads_logged()[seen:]

    try:
        wait_for(lambda: 2 in threads_logged())  # alone: both threads
        seen = len(threads_logged())
        wait_for(server_samples)
        seen = len(threads_logged())
        wait_for(lambda: 2 in threads_logged()[seen:])  # FRESH_S after the last touch: both again
    finally:
        trainer.kill()
        trainer.wait()
