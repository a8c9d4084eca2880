"""Shared fixtures: a real `streamlit run explorer/app.py` on a free loopback port, and a chromium page on it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from tests.runs_helpers import TrainedRun, digits_run

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tests use tiny models: one thread is as fast, and more threads than free cores make OpenMP spin — tiny
    convolutions then run ~100× slower on a busy 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def shared(tmp_path_factory) -> TrainedRun:
    """A 60-step digits run made once per session through the CLI; read-only for the tests."""
    return digits_run(tmp_path_factory)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(runs_root: Path, log_path: Path, args: tuple[str, ...] = (), port: int | None = None):
    """`streamlit run explorer/app.py [-- args]` as a user would, on runs_root: (process, url) once
    /_stcore/health answers; stop it with stop_app."""
    port = port or _free_port()
    # one torch thread: on a 2-core machine shared with the test process, OpenMP threads spin against each other
    env = {**os.environ, "DDPM_EXPLORER_RUNS": str(runs_root), "OMP_NUM_THREADS": "1"}
    log = open(log_path, "w+")  # noqa: SIM115
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        "explorer/app.py",
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
    ]
    if args:
        command += ["--", *args]
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    proc.log = log
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read() == b"ok":
                    return proc, url
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            log.seek(0)
            proc.kill()
            pytest.fail(f"streamlit did not come up on {url}:\n{log.read()}")
        time.sleep(0.25)


def stop_app(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    proc.log.close()


@pytest.fixture(scope="session")
def app_url(tmp_path_factory):
    """The app on a runs folder of its own, for the whole session."""
    proc, url = start_app(tmp_path_factory.mktemp("runs"), tmp_path_factory.mktemp("streamlit") / "server.log")
    yield url
    stop_app(proc)


@pytest.fixture(scope="session")
def browser():
    """Debian's chromium through Playwright. Skips where there is none — except in CI, where that is a failure."""
    if not CHROMIUM.exists() or shutil.which("chromium") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but /usr/bin/chromium is missing: .ci/run must install it (apt-get install chromium)")
        pytest.skip("no /usr/bin/chromium on this machine (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    p = context.new_page()
    yield p
    context.close()
