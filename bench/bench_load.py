"""Classroom load (issue 8): K concurrent sessions move the Forward page's t slider against one real server.

One `streamlit run explorer/app.py` on loopback (OMP_NUM_THREADS=1 unless --torch-threads default, a temporary
DDPM_EXPLORER_RUNS). For each K in
--sessions, K sessions open /forward, set their own starting t (so that they share no cached frame) and move t by one
once a second for --duration s, staggered by 1/K s; a move over a second pushes the next to the next whole second
("skipped ticks"). Errors: no new image within 10 s, Streamlit exceptions, websocket closes. Server RSS is sampled
every 5 s; a CPU table splits each window's CPU time between the server, the clients and the rest of the machine.
Two drivers (--driver):
- protocol (default): a websocket per session speaking Streamlit's BackMsg/ForwardMsg protobufs as the browser does;
  a move ends when the x_t image's delta has arrived and its picture is fetched. Light: the server's capacity.
- browser: a chromium page per session (Playwright, one context each), an arrow key on the slider, timed in the page
  until the first image shows the new x_t. End to end, but 2 chromium pages already take more CPU than the server.
--with-training first starts one run of the Train page's default recipe (CLI) and reports its images/s alone and
during each window. The issue's cases: the default (K = 5, 10, 20) and `--sessions 10 --with-training`.

Needs Linux (/proc); the browser driver needs Playwright (requirements-dev.txt) and chromium at /usr/bin/chromium.
Usage: python bench/bench_load.py [--driver protocol|browser] [--sessions 5 10 20] [--duration 60] [--with-training]
                                  [--quick] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


from bench.bench_ui import Server, descendants, rss_mib  # noqa: E402
from bench.common import machine, publish  # noqa: E402
from bench.load_sessions import DRIVERS, Session, drive  # noqa: E402
from ddpm_core import runs  # noqa: E402
from ddpm_core.recipes import DEFAULT_RECIPE, RECIPES  # noqa: E402
from tests.conftest import CHROMIUM, CHROMIUM_FLAGS  # noqa: E402

RSS_EVERY_S = 5
TRAIN_ALONE_S = 15  # the run's images/s with no session open, for comparison
TICKS = os.sysconf("SC_CLK_TCK")

# ----------------------------------------------------------------------------------------------------------------
# The machine: memory and CPU time from /proc


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def machine_busy_seconds() -> float:
    """CPU time all cores spent on anything but idle and iowait, from /proc/stat."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / TICKS


def process_groups(server: int, trainer: int | None) -> dict[str, list[int]]:
    """server (+ children), chromium, driver (this script and Playwright's node process), trainer (+ children)."""
    served = {server, *descendants(server)}
    trained = set() if trainer is None else {trainer, *descendants(trainer)}
    groups = {"server": sorted(served), "chromium": [], "driver": [os.getpid()], "trainer": sorted(trained)}
    for pid in set(descendants(os.getpid())) - served - trained:
        with contextlib.suppress(OSError):  # gone
            groups["chromium" if Path(f"/proc/{pid}/comm").read_text().startswith("chrom") else "driver"].append(pid)
    return groups


def cpu_snapshot(server: int, trainer: int | None) -> tuple[float, float, dict[int, float]]:
    """(wall clock, machine busy seconds, CPU seconds per pid of every group)."""
    pids = [p for g in process_groups(server, trainer).values() for p in g]
    return time.perf_counter(), machine_busy_seconds(), {p: cpu_seconds(p) for p in pids}


def cpu_row(k: int, start: tuple[float, float, dict[int, float]], server: int, trainer: int | None, moves: int) -> str:
    """Each group's CPU time since start as a share of all cores (its pids read again now, new ones from 0), and the
    server's CPU time per move: its Python runs the page scripts mostly on one core (the GIL)."""
    wall, busy = time.perf_counter() - start[0], machine_busy_seconds() - start[1]
    used = [sum(cpu_seconds(p) - start[2].get(p, 0.0) for p in g) for g in process_groups(server, trainer).values()]
    shares = [100 * s / (wall * (os.cpu_count() or 1)) for s in (*used, max(0.0, busy - sum(used)))]
    per_move = f"{1000 * used[0] / moves:.0f}" if moves else "—"
    return f"| {k} | {wall:.0f} | " + " | ".join(f"{p:.0f} %" for p in shares) + f" | {per_move} |"


def memory(server: int) -> tuple[float, float]:
    """VmRSS in MiB of the server alone, and of the server and all its children."""
    own = rss_mib(server)
    return own, own + sum(rss_mib(p) for p in descendants(server))


async def sample_memory(server: int, into: list[tuple[float, float, float]], started: float, stop: asyncio.Event):
    """(seconds since started, server MiB, server + children MiB) every RSS_EVERY_S until stop is set."""
    while not stop.is_set():
        into.append((time.perf_counter() - started, *memory(server)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), RSS_EVERY_S)
    into.append((time.perf_counter() - started, *memory(server)))


# ----------------------------------------------------------------------------------------------------------------
# The training run (--with-training)


def start_training(out: Path) -> subprocess.Popen:
    """The Train page's default recipe through the CLI (the page runs the same command), long enough to outlast us."""
    recipe = {**RECIPES[DEFAULT_RECIPE].overlay, "steps": 100_000, "evaluate_n": 0, "device": "cpu"}
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in recipe.items()]
    cmd = [sys.executable, "-m", "ddpm_core.train", *flags, "--out", str(out)]
    with open(out.parent / "train.log", "w") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(cmd, cwd=ROOT, env=os.environ, stdout=log, stderr=subprocess.STDOUT)


def wait_training(proc: subprocess.Popen, run: Path, timeout: float = 180) -> None:
    """Until the run has logged its first metrics line (torch loaded, the first log_every steps done)."""
    deadline = time.perf_counter() + timeout
    while not runs.read_metrics(run):
        if proc.poll() is not None or time.perf_counter() > deadline:
            raise RuntimeError(f"the training run did not start: see {run.parent / 'train.log'}")
        time.sleep(0.5)


def images_per_s(run: Path, since: float, until: float, batch: int) -> tuple[float, float] | None:
    """Over the wall-clock window (since, until] (time.time()), from the metrics lines logged in it and the last one
    before it: the mean of images_per_s (train steps only) and steps × batch / wall (previews and logging included)."""
    rows = runs.read_metrics(run)
    before = [r for r in rows if r["time"] <= since][-1:]
    inside = [r for r in rows if since < r["time"] <= until]
    if not before or not inside:
        return None
    first, last = before[0], inside[-1]
    wall = (last["step"] - first["step"]) * batch / (last["time"] - first["time"])
    return statistics.mean(r["images_per_s"] for r in inside), wall


def stop_training(proc: subprocess.Popen, run: Path) -> int | None:
    (run / runs.STOP).touch()
    for ask in (lambda: None, proc.terminate, proc.kill):  # the STOP file, then SIGTERM, then SIGKILL
        ask()
        with contextlib.suppress(subprocess.TimeoutExpired):
            return proc.wait(30)


# ----------------------------------------------------------------------------------------------------------------
# One level: K sessions for `duration` seconds


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least q % of the values at or below it."""
    ranked = sorted(values)
    return ranked[max(0, -(-len(ranked) * q // 100) - 1)] if ranked else float("nan")


@dataclass
class Level:
    latency: str  # its row in each table
    cpu: str
    memory: list[str]
    samples: list[tuple[float, float, float]]  # (s into the window, server MiB, server + children MiB)
    training: str | None = None


def latency_row(k: int, opening: float, sessions: list[Session]) -> tuple[str, float]:
    """The row of the latency table, and p95 in ms."""
    ms = [x for s in sessions for x in s.latencies_ms]
    errors = [sum(s.timeouts for s in sessions), sum(s.exceptions for s in sessions),
              sum(s.disconnects for s in sessions), sum(len(s.driver_errors) for s in sessions)]  # fmt: skip
    p95 = percentile(ms, 95)
    ok = "✓" if ms and p95 <= 1000 and not any(errors) else "✗"
    numbers = [len(ms), percentile(ms, 50), p95, max(ms, default=float("nan")), *errors]
    skipped = sum(s.skipped_ticks for s in sessions)
    return f"| {k} | {opening:.0f} | " + " | ".join(f"{n:.0f}" for n in numbers) + f" | {skipped} | {ok} |", p95


def memory_rows(k: int, samples: list[tuple[float, float, float]]) -> list[str]:
    """At the window's start, after 60 s (if it went on after that), at its end and the peak."""
    minute = next((m for m in samples if m[0] >= 60), samples[-1])
    marks = [("sessions open", samples[0])] + [(f"after {minute[0]:.0f} s", minute)] * (minute is not samples[-1])
    marks += [("end", samples[-1]), ("peak", max(samples, key=lambda m: m[2]))]
    return [f"| {k} sessions: {what} | {m[1]:.0f} | {m[2]:.0f} |" for what, m in marks]


async def run_level(driver: str, browser, server: Server, k: int, index: int, duration: float, trainer) -> Level:
    """Open k sessions (5 at a time), drive them for `duration` s, close them. trainer: (process, run folder)."""
    opening, gate, loop = time.perf_counter(), asyncio.Semaphore(5), asyncio.get_running_loop()

    async def opened(i: int) -> Session:
        async with gate:  # all at once would only time out on 2 cores; a room does not click in the same second
            session = DRIVERS[driver]()
            await session.open(server.url, 40 + i * 900 // k + 5 * index, browser)
            return session

    sessions = await asyncio.gather(*(opened(i) for i in range(k)))
    opening, samples, stop = time.perf_counter() - opening, [], asyncio.Event()
    sampler = asyncio.create_task(sample_memory(server.proc.pid, samples, time.perf_counter(), stop))
    trainer_pid, since = None if trainer is None else trainer[0].pid, time.time()
    cpu_start, first = cpu_snapshot(server.proc.pid, trainer_pid), loop.time() + 1.0
    await asyncio.gather(*(drive(s, first + i / k, first + duration) for i, s in enumerate(sessions)))
    moves = sum(len(s.latencies_ms) + s.timeouts for s in sessions)
    cpu, until = cpu_row(k, cpu_start, server.proc.pid, trainer_pid, moves), time.time()
    stop.set()
    await sampler
    for s in sessions:
        await s.close()
        for e in s.driver_errors[:3]:
            print(f"  error: {e}", flush=True)
    latency, p95 = latency_row(k, opening, sessions)
    print(latency, flush=True)
    level = Level(latency, cpu, memory_rows(k, samples), samples)
    if trainer is not None:
        rates = images_per_s(trainer[1], since, until, RECIPES[DEFAULT_RECIPE].overlay["batch_size"])
        level.training = training_row(f"with {k} sessions", rates, p95)
    return level


def training_row(label: str, rates: tuple[float, float] | None, p95: float | None) -> str:
    field_rate, wall_rate = ("—", "—") if rates is None else (f"{rates[0]:,.0f}", f"{rates[1]:,.0f}")
    return f"| {label} | {field_rate} | {wall_rate} | {'—' if p95 is None else f'{p95:.0f}'} |"


# ----------------------------------------------------------------------------------------------------------------
# The whole bench


async def run_levels(driver: str, browser, server: Server, sizes: list[int], duration: float, trainer) -> list[Level]:
    levels = []
    for index, k in enumerate(sizes):
        print(f"{k} sessions ({driver}) for {duration:.0f} s …", flush=True)
        levels.append(await run_level(driver, browser, server, k, index, duration, trainer))
    return levels


async def bench(driver: str, sizes: list[int], duration: float, with_training: bool, alone_s: float) -> dict:
    if driver == "browser" and not CHROMIUM.exists():
        raise SystemExit(f"no chromium at {CHROMIUM} (apt-get install -y chromium)")
    found: dict = {"training_alone": None}
    with tempfile.TemporaryDirectory() as tmp:
        server, trainer = Server(Path(tmp) / "runs", Path(tmp) / "server.log"), None
        try:
            server.wait_healthy()
            if with_training:
                trainer = start_training(Path(tmp) / "load-run"), Path(tmp) / "load-run"
                wait_training(*trainer)
                since = time.time()
                await asyncio.sleep(alone_s)
                rates = images_per_s(trainer[1], since, time.time(), RECIPES[DEFAULT_RECIPE].overlay["batch_size"])
                found["training_alone"] = training_row(f"alone ({alone_s:.0f} s, no session)", rates, None)
            found["idle"] = memory(server.proc.pid)
            if driver == "browser":
                from playwright.async_api import async_playwright

                async with async_playwright() as pw:
                    browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
                    found["levels"] = await run_levels(driver, browser, server, sizes, duration, trainer)
                    await browser.close()
            else:
                found["levels"] = await run_levels(driver, None, server, sizes, duration, trainer)
            found["after"] = memory(server.proc.pid)
        finally:
            if trainer is not None:
                stop_training(*trainer)
            server.stop()
    return found


def growth_line(levels: list[Level], duration: float) -> str:
    """RSS (server + children) after the first minute of load, counting only the measured windows, and at the end."""
    timeline = [(i * duration + s, total) for i, level in enumerate(levels) for s, _, total in level.samples]
    minute = next((m for m in timeline if m[0] >= 60), None)
    if minute is None or minute is timeline[-1]:
        return "Under a minute of load in all: no growth after the first minute to report (run longer)."
    end = timeline[-1]
    return (
        f"Server + children RSS after the first minute of load: {minute[1]:.0f} MiB; at the end ({end[0]:.0f} s of "
        f"load): {end[1]:.0f} MiB, {end[1] - minute[1]:+.0f} MiB (goal: no growth after the first minute)."
    )


HOW = {
    "protocol": "each session a websocket speaking Streamlit's protocol (BackMsg/ForwardMsg) from this script, as a "
    "browser would; time: rerun request sent → the x_t image's delta received and its picture fetched (no drawing)",
    "browser": "one chromium (Playwright), each session a page in its own context; time: keydown on the slider → the "
    "first image shows the new x_t, loaded (in the page's clock, drawing included)",
}


THREADS = {
    "one": "OMP_NUM_THREADS=1 for the server and the trainer",
    "default": "torch's default threads, as a plain `streamlit run` has them; the server computes with one while the "
    "run trains on the CPU (explorer/cpu_share.py)",
}


def report(found: dict, driver: str, command: str, seconds: float, duration: float) -> list[str]:
    levels: list[Level] = found["levels"]
    idle, after = found["idle"], found["after"]
    lines = [
        f"## Classroom load — {time.strftime('%Y-%m-%d')} — {machine()}",
        "",
        f"`{command}` — in {seconds:.0f} s. One `streamlit run` on loopback ({THREADS[found['threads']]}); "
        f"{HOW[driver]}. "
        f"Each session moves the Forward page's t slider once a second for {duration:.0f} s. The clients share the "
        f"machine's {os.cpu_count()} cores with the server (CPU table below).",
        "",
        "Goal (issue 8): 10 sessions with p95 ≤ 1 s and no errors; server RSS bounded (no growth after the first "
        "minute). Errors: timeouts (no image in 10 s), Streamlit exceptions (browser: moves with an exception box; "
        "protocol: exception elements), websocket closes, other errors (failed driver calls; pictures the server "
        "no longer had, HTTP 404).",
        "",
        "| sessions | opened in s | changes | p50 ms | p95 ms | max ms | timeouts | exceptions | disconnects | "
        "other errors | skipped ticks | p95 ≤ 1 s, no errors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *(level.latency for level in levels),
        "",
        "Resident memory (VmRSS, MiB), sampled every 5 s:",
        "",
        "| moment | server | server + children |",
        "| --- | --- | --- |",
        f"| idle, before the first session | {idle[0]:.0f} | {idle[1]:.0f} |",
        *(row for level in levels for row in level.memory),
        f"| idle, every session closed | {after[0]:.0f} | {after[1]:.0f} |",
        "",
        growth_line(levels, duration),
        "",
        f"CPU during each measured window, as a share of all {os.cpu_count()} cores (driver: Playwright's node "
        "process and this script; rest: everything else on the machine):",
        "",
        "| sessions | window s | server + children | chromium | driver | trainer | rest | server CPU ms per move |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *(level.cpu for level in levels),
        "",
    ]
    if found["training_alone"] is not None:
        lines += [
            f"One training run going (the Train page's recipe “{DEFAULT_RECIPE}”, CLI, {THREADS[found['threads']]}). "
            "images/s: metrics.jsonl's images_per_s (train steps only), and steps × batch / wall time:",
            "",
            "| run | images/s (images_per_s) | images/s (wall) | sessions' p95 ms |",
            "| --- | --- | --- | --- |",
            found["training_alone"],
            *(level.training for level in levels),
            "",
        ]
    return lines


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--driver", choices=list(DRIVERS), default="protocol", help="the websocket protocol or chromium")
    p.add_argument("--sessions", type=int, nargs="+", default=[5, 10, 20], help="K concurrent sessions, in turn")
    p.add_argument("--duration", type=float, default=60, help="seconds each level moves the sliders")
    p.add_argument("--with-training", action="store_true", help="one training run going during every level")
    p.add_argument("--torch-threads", choices=list(THREADS), default="one", help="one thread each, or torch's default")
    p.add_argument("--quick", action="store_true", help="2 sessions for 15 s (a smoke test)")
    p.add_argument("--write", action="store_true", help="append the tables to bench/RESULTS.md")
    args = p.parse_args()
    if args.quick:
        args.sessions, args.duration = [2], 15
    if args.torch_threads == "one":
        os.environ["OMP_NUM_THREADS"] = "1"  # the server and the trainer inherit it: one thread each
    else:
        os.environ.pop("OMP_NUM_THREADS", None)
    print(f"machine: {machine()}", flush=True)
    clock = time.perf_counter()
    found = asyncio.run(
        bench(args.driver, args.sessions, args.duration, args.with_training, 10 if args.quick else TRAIN_ALONE_S)
    )
    command = "python bench/bench_load.py " + " ".join(sys.argv[1:]).replace("--write", "").strip()
    found["threads"] = args.torch_threads
    lines = report(found, args.driver, command.strip(), time.perf_counter() - clock, args.duration)
    publish(lines, args.write)


if __name__ == "__main__":
    main()
