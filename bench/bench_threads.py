"""Threads when the app samples while a run trains: a trainer process and the server's sampling share the CPU.

The case: the Train page's default recipe trains in its own process (as explorer.jobs starts it), and the server
samples for the Sample page (64 digits from the bundled checkpoint: DDPM with all 1000 steps, the page's default, and
DDIM-50). Both are PyTorch on the same cores, and GNU OpenMP's threads wait for each other by spinning: a waiting
thread takes the core that the other process's threads need. Each policy sets both processes' environment and the
server's torch threads; for each: the sampler alone, the trainer alone, then both at once (the trainer's images/s over
the sampling window). The server is a process of its own here, so that its environment is set before torch loads.
The app does what the "now" row does (explorer/cpu_share.py).

--case busy-core: one core busy with an unrelated process (a pure-Python loop, as a browser tab or another program
keeps a laptop's core busy). The trainer (images/s over a window) and the server's sampling (64 MNIST digits from
the bundled model, DDIM-50, the median of 3) at torch's default threads, at 1 thread, and choosing by measurement
(ddpm_core.threads, what the trainer and the app do now); quiet, busy from the start, and (the trainer) busy from
the middle of its run on.

Usage: python bench/bench_threads.py [--window 20] [--case sharing|busy-core] [--write]
"""

from __future__ import annotations

import argparse
import json
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

from bench.bench_throughput import matmul_peak  # noqa: E402
from bench.common import flags_line, machine, publish  # noqa: E402
from ddpm_core.recipes import DEFAULT_RECIPE, RECIPES  # noqa: E402

CHECKPOINT = ROOT / "assets" / "checkpoints" / "digits.safetensors"
MNIST_CHECKPOINT = ROOT / "assets" / "checkpoints" / "mnist.safetensors"  # the Sample page's default
ALONE_S = 10  # the trainer's images/s with nothing else running
WINDOW_S = 20  # how long the sampler samples again and again, alone and beside the trainer
MAX_WAIT_S = 120  # for the trainer's next log record after a window
SAMPLER = """
import json, sys, time
import torch
from ddpm_core import Diffusion, make_schedule
from ddpm_core.runs import load_checkpoint
from ddpm_core.sample import sample
threads, window, sampler, steps = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], int(sys.argv[4])
if threads:
    torch.set_num_threads(threads)
app = sys.argv[6] if len(sys.argv) > 6 else ""  # the runs root: share the CPU as the app does
if app:
    from pathlib import Path
    from explorer.cpu_share import share_cpu
ckpt = load_checkpoint(sys.argv[5])
diffusion = Diffusion(make_schedule(ckpt.config.schedule, ckpt.config.T))
class Late(Exception):
    pass
def give_up(done, total):
    if app:
        share_cpu(Path(app), busy=True)  # what the Sample page's progress callback does
    if time.time() - began > window:
        raise Late(done / total)
runs, start = [], time.time()  # sample again and again until the window is over; at least once
while not runs or time.time() - start < window:
    began = time.time()
    try:
        sample(ckpt.model, diffusion, 64, ckpt.sample_shape, sampler=sampler, steps=steps, progress=give_up)
        runs.append((began, time.time(), 1.0))
    except Late as late:  # far slower than the window: its time from the share of the steps done
        runs.append((began, time.time(), late.args[0]))
print(json.dumps(runs))
"""


@dataclass(frozen=True)
class Policy:
    name: str
    server_env: dict  # the sampling process's environment (the server's)
    trainer_env: dict
    sampler_threads: int = 0  # 0: torch's default
    app: bool = False  # the server shares the CPU as the app does (explorer/cpu_share.py)


PASSIVE = {"OMP_WAIT_POLICY": "PASSIVE"}
POLICIES = [
    Policy("before: both at torch's defaults", {}, {}),
    Policy("now: the app's sharing (server 1 thread, trainer 1 fewer while the server samples)", {}, {}, app=True),
    Policy("rejected: OMP_WAIT_POLICY=PASSIVE in both", PASSIVE, PASSIVE),
    Policy("rejected: both at 1 thread", {}, {"OMP_NUM_THREADS": "1"}, 1),
]
WORKLOADS = [("ddim", 50, "DDIM-50"), ("ddpm", 1000, "DDPM-1000")]


def start_trainer(folder: Path, env: dict) -> subprocess.Popen:
    """The default recipe for long enough, as the Train page starts it (its own process, its own session)."""
    recipe = {**RECIPES[DEFAULT_RECIPE].overlay, "steps": 1_000_000, "preview_every": 0, "evaluate_n": 0}
    args = [sys.executable, "-m", "ddpm_core.train", "--out", str(folder), "--checkpoint-every", "0"]
    args += ["--log-every", "25"]
    for key in ("dataset", "steps", "batch_size", "lr", "warmup", "ema_decay", "preview_every", "evaluate_n"):
        args += [f"--{key.replace('_', '-')}", str(recipe[key])]
    process = subprocess.Popen(args, cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    while not (folder / "metrics.jsonl").is_file() or len(records(folder)) < 2:  # torch loaded, steps running
        if process.poll() is not None:
            raise RuntimeError(f"the trainer stopped: {process.returncode}")
        time.sleep(0.5)
    return process


def records(folder: Path) -> list[dict]:
    path = folder / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    return [r for r in map(json.loads, lines) if "images_per_s" in r]


def images_per_s(folder: Path, start: float, end: float) -> float:
    """The trainer's images/s over [start, end], from the log records around it: the last one before start and the
    first one after end (waited for, up to MAX_WAIT_S: a crawling trainer logs rarely)."""
    waited = time.time()
    while not any(r["time"] >= end for r in records(folder)) and time.time() - waited < MAX_WAIT_S:
        time.sleep(0.5)
    rows = records(folder)
    before = [r for r in rows if r["time"] <= start] or rows[:1]
    after = [r for r in rows if r["time"] >= end] or rows[-1:]
    first, last = before[-1], after[0]
    if last["time"] <= first["time"]:
        return float("nan")
    batch = RECIPES[DEFAULT_RECIPE].overlay["batch_size"]
    return (last["step"] - first["step"]) * batch / (last["time"] - first["time"])


def run_sampler(policy: Policy, workload: tuple, window: float, root: Path) -> list[tuple[float, float, float]]:
    """(start, end, share of the steps done) of each sampling in a window of about `window` s."""
    sampler, steps, _ = workload
    args = [
        sys.executable,
        "-c",
        SAMPLER,
        str(policy.sampler_threads),
        str(window),
        sampler,
        str(steps),
        str(CHECKPOINT),
        str(root) if policy.app else "",
    ]
    out = subprocess.run(args, cwd=ROOT, env={**os.environ, **policy.server_env}, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.splitlines()[-1])


def median_s(runs: list) -> float:
    """The median time of one sampling (one stopped early counts at its pace: its time over the share it did)."""
    return statistics.median((end - start) / done for start, end, done in runs)


def measure(policy: Policy, window: float, tmp: Path) -> list[dict]:
    rows = []
    folder = tmp / f"policy{POLICIES.index(policy)}" / "run"
    folder.parent.mkdir(parents=True)
    alone = {w[2]: median_s(run_sampler(policy, w, window, folder.parent)) for w in WORKLOADS}
    trainer = start_trainer(folder, policy.trainer_env)
    try:
        start = time.time()
        time.sleep(ALONE_S)
        train_alone = images_per_s(folder, start, time.time())
        for workload in WORKLOADS:
            runs = run_sampler(policy, workload, window, folder.parent)
            rows.append(dict(policy=policy.name, workload=workload[2], sample_alone=alone[workload[2]],
                             sample_with=median_s(runs), train_alone=train_alone,
                             train_with=images_per_s(folder, runs[0][0], runs[-1][1])))  # fmt: skip
    finally:
        trainer.kill()
        trainer.wait()
    return rows


# ----------------------------------------------------------------------------------------------------------------
# One core busy with an unrelated process

BUSY_LOOP = "while True: pass"  # one core's worth of an unrelated program
THREAD_MODES = {  # name: (environment, what it is)
    "default": ({"DDPM_EXPLORER_TUNE_THREADS": "0"}, "torch's default (2 threads), before"),
    "one": ({"DDPM_EXPLORER_TUNE_THREADS": "0", "OMP_NUM_THREADS": "1"}, "1 thread"),
    "tuned": ({}, "chosen by measuring (ddpm_core.threads), now"),
}
TUNED_SAMPLER = """
import json, statistics, sys, time
import torch
from ddpm_core import Diffusion, make_schedule
from ddpm_core.runs import load_checkpoint
from ddpm_core.sample import sample
from explorer.sampling_progress import progress_callback
class Bar:  # the Sample page's progress bar, minus the browser
    def progress(self, value, text=""):
        pass
ckpt = load_checkpoint(sys.argv[1])
diffusion = Diffusion(make_schedule(ckpt.config.schedule, ckpt.config.T))
times, threads = [], []
for _ in range(int(sys.argv[2])):
    progress = progress_callback(Bar())  # the Sample page's: it sets the threads step by step
    start = time.perf_counter()
    sample(ckpt.model, diffusion, 64, ckpt.sample_shape, sampler="ddim", steps=50, progress=progress)
    times.append(time.perf_counter() - start)
    threads.append(torch.get_num_threads())
print(json.dumps({"seconds": statistics.median(times), "threads": threads}))
"""


def busy_core() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", BUSY_LOOP], start_new_session=True)


def trainer_speed(folder: Path, env: dict, window: float, busy_from: float | None) -> tuple[float, list[int]]:
    """The default recipe's images/s over `window` s once it trains; with busy_from, an unrelated busy process
    starts that many seconds into the window and the images/s are those after it. Also the thread counts logged."""
    trainer = start_trainer(folder, env)
    busy = None
    try:
        if busy_from is not None and busy_from <= 0:
            busy = busy_core()
        start = time.time()
        if busy_from is not None and busy_from > 0:
            time.sleep(busy_from)
            busy, start = busy_core(), time.time()
        time.sleep(window)
        speed = images_per_s(folder, start, time.time())
        threads = [r["cpu_threads"] for r in records(folder) if r["time"] >= start]
    finally:
        for proc in (trainer, busy):
            if proc is not None:
                proc.kill()
                proc.wait()
    return speed, threads


def sampler_speed(env: dict, busy: bool, repeats: int = 3) -> dict:
    load = busy_core() if busy else None
    try:
        out = subprocess.run([sys.executable, "-c", TUNED_SAMPLER, str(MNIST_CHECKPOINT), str(repeats)], cwd=ROOT,
                             env={**os.environ, **env}, capture_output=True, text=True, check=True)  # fmt: skip
    finally:
        if load is not None:
            load.kill()
            load.wait()
    return json.loads(out.stdout.splitlines()[-1])


def cpu_line() -> str:
    return f"CPU flags: {flags_line()}; matmul peak {matmul_peak(2, 2048, 5):.0f} GFLOP/s fp32 (2048², 2 threads)"


def busy_sampling_case() -> list[str]:
    """The server's sampling at each thread mode, quiet and with a core busy, side by side."""
    sampling = {}
    for mode, (env, _) in THREAD_MODES.items():
        for busy in (False, True):
            sampling[mode, busy] = sampler_speed(env, busy)
            print(mode, busy, sampling[mode, busy], flush=True)
    lines = [
        f"## Threads: sampling with one core busy — {time.strftime('%Y-%m-%d')} — {machine()}",
        "",
        f"`python bench/bench_threads.py --case busy-sampling` — {cpu_line()}. An unrelated process spins on one "
        f"core (`python -c '{BUSY_LOOP}'`); 64 MNIST digits sampled with DDIM-50 from the bundled model, the median "
        "of 3 in one process, through the Sample page's progress callback (which sets the threads).",
        "",
        "| threads | quiet | one core busy | threads at the end, busy |",
        "| --- | --- | --- | --- |",
    ]
    for mode, (_, what) in THREAD_MODES.items():
        quiet, busy = sampling[mode, False], sampling[mode, True]
        lines.append(f"| {what} | {quiet['seconds']:.2f} s | {busy['seconds']:.2f} s "
                     f"| {', '.join(map(str, busy['threads']))} |")  # fmt: skip
    return lines


def busy_training_case(window: float, tmp: Path) -> list[str]:
    """The trainer at each thread mode: quiet, a core busy from the window's start, and from its middle."""
    loads = {"quiet": None, "busy from the start": 0.0, f"busy from {window / 2:g} s in": window / 2}
    train = {}
    for mode, (env, _) in THREAD_MODES.items():
        for load, busy_from in loads.items():
            folder = tmp / f"{mode}-{len(train)}" / "run"
            folder.parent.mkdir(parents=True)
            train[mode, load] = trainer_speed(folder, env, window, busy_from)
            print(mode, load, train[mode, load], flush=True)
    lines = [
        f"## Threads: one core busy with an unrelated process — {time.strftime('%Y-%m-%d')} — {machine()}",
        "",
        f"`python bench/bench_threads.py --case busy-core --window {window:g}` — {cpu_line()}. An unrelated process "
        f"spins on one core (`python -c '{BUSY_LOOP}'`). The Train page's default recipe in its own process: "
        f"images/s over {window:g} s once the busy process started (so the trainer must notice the change).",
        "",
        "| threads | trainer quiet (img/s) | core busy from the start | of 1 thread's | busy from the middle "
        "| of 1 thread's | threads logged while busy |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    busy_keys = list(loads)[1:]
    one = {load: train["one", load][0] for load in busy_keys}
    for mode, (_, what) in THREAD_MODES.items():
        quiet, busy, middle = (train[mode, load] for load in loads)
        logged = sorted(set(busy[1] + middle[1]))
        lines.append(
            f"| {what} | {quiet[0]:,.0f} | {busy[0]:,.0f} | {busy[0] / one[busy_keys[0]]:.2f}× | {middle[0]:,.0f} "
            f"| {middle[0] / one[busy_keys[1]]:.2f}× | {', '.join(map(str, logged))} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--window", type=float, default=WINDOW_S, help="seconds of sampling per measurement")
    p.add_argument("--case", choices=["sharing", "busy-core", "busy-sampling"], default="sharing",
                   help="sharing: the app samples while a run trains; busy-core: an unrelated process busy on one "
                   "core, the trainer and the sampling; busy-sampling: the sampling alone")  # fmt: skip
    p.add_argument("--write", action="store_true", help="append the table to bench/RESULTS.md")
    args = p.parse_args(argv)
    began = time.time()
    if args.case == "busy-sampling":
        publish([*busy_sampling_case(), "", f"- The whole run took {time.time() - began:.0f} s."], args.write)
        return 0
    if args.case == "busy-core":  # the trainer's table, then the sampling's
        with tempfile.TemporaryDirectory() as tmp:
            lines = [*busy_training_case(args.window, Path(tmp)), "", *busy_sampling_case()]
        lines += ["", f"- The whole run took {time.time() - began:.0f} s; nothing else ran."]
        publish(lines, args.write)
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for policy in POLICIES:
            rows += measure(policy, args.window, Path(tmp))
            print(rows[-2:], flush=True)
    lines = [
        f"## Threads: sampling while a run trains — {time.strftime('%Y-%m-%d')} — {machine()}",
        "",
        f"`python bench/bench_threads.py --window {args.window:g}` — the Train page's default recipe trains in its "
        "own process while another process, the server, samples 64 digits from the bundled checkpoint again and "
        f"again for {args.window:g} s (the Sample page's work; median time of one sampling; one that outlasts the "
        f"window is stopped there and timed by its share of the steps); the trainer's images/s alone ({ALONE_S} s) "
        "and over the sampling window (between the log records around it).",
        "",
        "| policy | sampler | sampling alone | sampling while training | slow-down | trainer alone (img/s) "
        "| trainer while sampling | trainer kept |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['policy']} | {r['workload']} | {r['sample_alone']:.2f} s | {r['sample_with']:.2f} s "
            f"| {r['sample_with'] / r['sample_alone']:.1f}× | {r['train_alone']:,.0f} | {r['train_with']:,.0f} "
            f"| {r['train_with'] / r['train_alone']:.0%} |"
        )
    lines += ["", f"- The whole run took {time.time() - began:.0f} s."]
    publish(lines, args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
