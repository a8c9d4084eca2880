"""Threads when the app samples while a run trains: a trainer process and the server's sampling share the CPU.

The case: the Train page's default recipe trains in its own process (as explorer.jobs starts it), and the server
samples for the Sample page (64 digits from the bundled checkpoint: DDPM with all 1000 steps, the page's default, and
DDIM-50). Both are PyTorch on the same cores, and GNU OpenMP's threads wait for each other by spinning: a waiting
thread takes the core that the other process's threads need. Each policy sets both processes' environment and the
server's torch threads; for each: the sampler alone, the trainer alone, then both at once (the trainer's images/s over
the sampling window). The server is a process of its own here, so that its environment is set before torch loads.
The app does what the "now" row does (explorer/cpu_share.py).

Usage: python bench/bench_threads.py [--window 20] [--write]
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

from bench.common import machine, publish  # noqa: E402
from ddpm_core.recipes import DEFAULT_RECIPE, RECIPES  # noqa: E402

CHECKPOINT = ROOT / "assets" / "checkpoints" / "digits.safetensors"
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--window", type=float, default=WINDOW_S, help="seconds of sampling per measurement")
    p.add_argument("--write", action="store_true", help="append the table to bench/RESULTS.md")
    args = p.parse_args(argv)
    began = time.time()
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
