"""UI latency and memory of the app, measured side by side in one run.

1. Forward page, a 256×256 RGB photo: (a) the core calls one t move costs (bench_forward's timer) and (b) the whole
   page rerun through AppTest after moving the t slider. Goal: ≤ 50 ms.
2. Schedules page with 4 schedules overlaid: the AppTest rerun after changing one parameter. Goal: ≤ 200 ms.
3. Start: `streamlit run explorer/app.py` until /_stcore/health answers, and until chromium shows the Home page;
   twice, the second start finding every import in the OS file cache ("warm imports").
4. Resident memory (VmRSS) of the server, with and without its children: idle after Home, after a visit to every
   page, and while a run launched from the Train page (the default recipe) trains; the trainer's own RSS apart.

Runs go to a temporary DDPM_EXPLORER_RUNS. Needs Linux (/proc), requirements-dev.txt (AppTest helpers, Playwright)
and chromium at /usr/bin/chromium.
Usage: python bench/bench_ui.py [--quick] [--write]   (--write appends the tables to bench/RESULTS.md)
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_forward import median_ms  # noqa: E402
from bench.common import machine, publish  # noqa: E402
from ddpm_core.forward import chain_vs_closed, forward_frame, shown_frame  # noqa: E402
from ddpm_core.images import sample_photo  # noqa: E402
from ddpm_core.run_history import history_row  # noqa: E402
from ddpm_core.schedules import make_schedule  # noqa: E402
from explorer.ui import PAGES  # noqa: E402
from tests.apptest_helpers import open_page, rerun  # noqa: E402
from tests.conftest import CHROMIUM, CHROMIUM_FLAGS  # noqa: E402
from tests.test_browser import READY, url_path, wait_for_app  # noqa: E402

RUN_NAME = "bench-ui"  # the run launched from the Train page
MIB = 1024 * 1024


# ----------------------------------------------------------------------------------------------------------------
# 1 and 2: page reruns through AppTest


def rerun_ms(at, change: Callable[[int], None], runs: int) -> float:
    """Median wall time of AppTest reruns in ms, change(i) setting a widget before rerun i."""
    times = []
    for i in range(runs):
        change(i)
        start = time.perf_counter()
        rerun(at)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def forward_rows(quick: bool) -> list[str]:
    """The core calls of a t move, then the page rerun, at the same fresh t's (a seeded permutation of 0 … T-1)."""
    schedule, runs, core_runs = make_schedule("linear", 1000), 5 if quick else 20, 20 if quick else 200
    x0 = sample_photo("china", 256)
    ts = torch.randperm(schedule.T, generator=torch.Generator().manual_seed(1)).tolist()
    frame = median_ms(lambda t: forward_frame(schedule, x0, t, 0), core_runs, schedule.T)
    shown = median_ms(lambda t: shown_frame(schedule, x0, t, 0), core_runs, schedule.T)
    chain = 1000 * statistics.median(_seconds(lambda t: chain_vs_closed(schedule, x0, t, 0), ts[:runs]))

    at = open_page("forward.py")
    at.selectbox(key="source").set_value("photo")
    rerun(at)  # "china", RGB by default
    at.selectbox(key="resolution").set_value(256)
    rerun(at)
    assert "3×256×256" in at.image[0].captions[0], at.image[0].captions
    page_new_t = rerun_ms(at, lambda i: at.slider(key="t").set_value(ts[i]), runs)
    page_same = rerun_ms(at, lambda i: None, runs)
    return [
        f"| core: x_t + histogram (`forward_frame`) | {frame:.1f} |",
        f"| core: + the PNG the page shows (`shown_frame`) | {shown:.1f} |",
        f"| core: chain vs closed form at a new t (`chain_vs_closed`; per t when its switch is on) | {chain:.0f} |",
        f"| page rerun (AppTest) after moving t to a new value | {page_new_t:.0f} |",
        f"| page rerun (AppTest) with nothing changed (every call cached) | {page_same:.0f} |",
    ]


def _seconds(fn: Callable[[int], object], ts: list[int]) -> list[float]:
    times = []
    for t in ts:
        start = time.perf_counter()
        fn(t)
        times.append(time.perf_counter() - start)
    return times


def schedules_rows(quick: bool) -> list[str]:
    runs = 5 if quick else 20
    at = open_page("schedules.py")
    at.number_input(key="n_schedules").set_value(4)
    rerun(at)
    assert [at.selectbox(key=f"s{i}.schedule").value for i in range(4)] == ["linear", "cosine", "scaled_linear",
                                                                               "sigmoid"]  # fmt: skip
    beta_end = at.number_input(key="s0.linear.beta_end")
    new_value = rerun_ms(at, lambda i: beta_end.set_value(0.02 + (i + 1) * 1e-4), runs)
    same = rerun_ms(at, lambda i: None, runs)
    return [
        f"| page rerun (AppTest) after changing schedule 1's β_end to a new value | {new_value:.0f} |",
        f"| page rerun (AppTest) with nothing changed (every schedule cached) | {same:.0f} |",
    ]


# ----------------------------------------------------------------------------------------------------------------
# 3 and 4: a real server, chromium and /proc


def rss_mib(pid: int) -> float:
    """VmRSS of one process in MiB; 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / MIB
    except OSError:
        pass
    return 0.0


def descendants(pid: int) -> list[int]:
    """Every process below pid (children, their children …), from the parent ids in /proc/*/stat."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # the name, in parentheses, may hold spaces
        except OSError:
            continue
        parent[int(stat.parent.name)] = int(fields[1])
    found, todo = [], [pid]
    while todo:
        above = todo.pop()
        kids = [p for p, pp in parent.items() if pp == above]
        found += kids
        todo += kids
    return found


def trainer_pid(server: int) -> int | None:
    for pid in descendants(server):
        try:
            if b"ddpm_core.train" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        except OSError:
            pass
    return None


@dataclass
class Memory:
    server: float = 0.0
    total: float = 0.0  # the server and all its children
    trainer: float | None = None

    @classmethod
    def read(cls, server: int) -> Memory:
        own, trainer = rss_mib(server), trainer_pid(server)
        total = own + sum(rss_mib(p) for p in descendants(server))
        return cls(own, total, None if trainer is None else rss_mib(trainer))

    def peak(self, other: Memory) -> Memory:
        trainers = [m for m in (self.trainer, other.trainer) if m is not None]
        return Memory(max(self.server, other.server), max(self.total, other.total), max(trainers, default=None))

    def row(self, moment: str) -> str:
        trainer = "—" if self.trainer is None else f"{self.trainer:.0f}"
        return f"| {moment} | {self.server:.0f} | {self.total:.0f} | {trainer} |"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`streamlit run explorer/app.py` as a user starts it, on a free loopback port, with its own runs folder."""

    def __init__(self, runs_root: Path, log: Path):
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = open(log, "w+")  # noqa: SIM115 - closed in stop()
        cmd = [sys.executable, "-m", "streamlit", "run", "explorer/app.py", "--server.headless", "true",
               "--server.port", self.url.rsplit(":", 1)[1], "--server.address", "127.0.0.1",
               "--browser.gatherUsageStats", "false"]  # fmt: skip
        self.started = time.perf_counter()
        env = {**os.environ, "DDPM_EXPLORER_RUNS": str(runs_root)}
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_healthy(self, timeout: float = 120) -> float:
        """Seconds from the start until /_stcore/health says ok."""
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as r:
                    if r.read() == b"ok":
                        return time.perf_counter() - self.started
            except OSError:
                pass
            if self.proc.poll() is not None or time.perf_counter() - self.started > timeout:
                self.log.seek(0)
                raise RuntimeError(f"streamlit did not come up on {self.url}:\n{self.log.read()}")
            time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def show(page, url: str, file: str) -> float:
    """Open a page and wait until it has drawn its slowest element and its script run has finished; seconds."""
    start = time.perf_counter()
    page.goto(f"{url}/{url_path(file)}")
    title = next(p.title for p in PAGES if p.file == file)
    page.get_by_role("heading", name="DDPM Explorer" if file == "home.py" else title).first.wait_for(timeout=120_000)
    page.locator(READY.get(file, ".katex")).first.wait_for(timeout=120_000)
    if file == "home.py":
        page.get_by_text("Device found").wait_for(timeout=120_000)
    wait_for_app(page)
    if page.locator("[data-testid='stException']").count():
        raise RuntimeError(f"{file} shows an exception")
    return time.perf_counter() - start


def start_row(browser, runs_root: Path, log: Path, label: str) -> tuple[str, Server, object]:
    """Start a server and open Home in a fresh browser tab: the table row, and the server and tab, still open."""
    server = Server(runs_root, log)
    health = server.wait_healthy()
    page = browser.new_context(viewport={"width": 1400, "height": 3200}).new_page()
    home = show(page, server.url, "home.py")
    row = f"| {label} | {health:.1f} | {health + home:.1f} | {home:.1f} |"
    return row, server, page


def train_memory(page, server: Server, runs_root: Path, window: float) -> tuple[Memory, int, float]:
    """Launch the default recipe from the Train page and sample memory every 0.25 s while it trains, for `window`
    seconds or until it ends; then stop it from the page. The peak, the steps done and the seconds sampled."""
    show(page, server.url, "train.py")
    page.get_by_role("button", name="Launch").wait_for(timeout=60_000)
    page.get_by_label("Run name").fill(RUN_NAME)
    page.get_by_label("Run name").press("Enter")
    wait_for_app(page)
    page.get_by_role("button", name="Launch").click()
    page.get_by_text(f"Launched {RUN_NAME}").wait_for(timeout=60_000)
    run_dir = runs_root / RUN_NAME
    deadline = time.perf_counter() + 120
    while history_row(run_dir).state != "running":  # torch loads in the trainer first
        if time.perf_counter() > deadline:
            raise RuntimeError(f"the run did not start training: {history_row(run_dir)}")
        time.sleep(0.25)
    peak, start = Memory(), time.perf_counter()
    while time.perf_counter() - start < window and trainer_pid(server.proc.pid) is not None:
        peak = peak.peak(Memory.read(server.proc.pid))
        time.sleep(0.25)
    sampled, pid = time.perf_counter() - start, trainer_pid(server.proc.pid)
    if pid is not None:
        page.get_by_role("button", name="Stop").click()
        deadline = time.perf_counter() + 120
        while trainer_pid(server.proc.pid) == pid:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"the trainer (pid {pid}) did not stop")
            time.sleep(0.25)
    return peak, history_row(run_dir).step, sampled


def server_rows(window: float) -> tuple[list[str], list[str], list[str]]:
    """Starts (two), first visits to every page, and memory rows."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        raise SystemExit(f"no chromium at {CHROMIUM} (apt-get install -y chromium)")
    starts, visits, memory = [], [], []
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        runs_root = Path(tmp) / "runs"
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        row, server, page = start_row(browser, runs_root, Path(tmp) / "first.log", "first start")
        starts.append(row)
        try:
            time.sleep(2)  # let the first run's garbage go and the session settle: "idle"
            memory.append(Memory.read(server.proc.pid).row("idle after Home"))
            for info in PAGES:
                visits.append(f"| {info.title} | {show(page, server.url, info.file):.1f} |")
            memory.append(Memory.read(server.proc.pid).row("after a visit to every page"))
            peak, step, sampled = train_memory(page, server, runs_root, window)
            memory.append(peak.row(f"training the default recipe (peak over {sampled:.0f} s, to step {step:,})"))
            memory.append(Memory.read(server.proc.pid).row("after the run ended"))
        finally:
            server.stop()
        row, server, _ = start_row(browser, runs_root, Path(tmp) / "second.log", "second start (warm imports)")
        server.stop()
        starts.append(row)
        browser.close()
    return starts, visits, memory


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="fewer reruns and a 10 s training window (a smoke test)")
    p.add_argument("--write", action="store_true", help="append the tables to bench/RESULTS.md")
    args = p.parse_args()
    print(f"machine: {machine()}", flush=True)
    clock = time.perf_counter()
    # the servers first: their first start then finds less of the app's imports in the OS cache
    starts, visits, memory = server_rows(10 if args.quick else 300)
    forward, schedules = forward_rows(args.quick), schedules_rows(args.quick)
    command = "python bench/bench_ui.py" + (" --quick" if args.quick else "")
    lines = [
        f"## UI latency and memory — {time.strftime('%Y-%m-%d')} — {machine()}",
        "",
        f"`{command}` — in {time.perf_counter() - clock:.0f} s. AppTest reruns (medians in ms) include "
        "AppTest's own overhead; core timings are bench_forward's medians at fresh t's.",
        "",
        "Forward process page, sample photo 3×256×256, linear T = 1000 (goal ≤ 50 ms per t move):",
        "",
        "| what | median ms |",
        "| --- | --- |",
        *forward,
        "",
        "Schedules page, 4 schedules overlaid (goal ≤ 200 ms):",
        "",
        "| what | median ms |",
        "| --- | --- |",
        *schedules,
        "",
        "Start of `streamlit run explorer/app.py --server.headless true` (s from launching it; the first start "
        "is not a cold one when this script has just imported torch itself):",
        "",
        "| start | /_stcore/health ok | Home drawn in chromium | of which Home's first script run |",
        "| --- | --- | --- | --- |",
        *starts,
        "",
        "| first visit, in a fresh session, after Home | s to drawn |",
        "| --- | --- |",
        *visits,
        "",
        "Resident memory (VmRSS, MiB) of the server; the trainer is one of its children:",
        "",
        "| moment | server | server + children | trainer |",
        "| --- | --- | --- | --- |",
        *memory,
        "",
    ]
    publish(lines, args.write)


if __name__ == "__main__":
    main()
