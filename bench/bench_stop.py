"""How long a stop takes: the `cpu-mnist` recipe trains as the app starts it (its own process and session), then the
app's Stop (the run folder's STOP file) or SIGTERM asks it to stop; the time until the process has exited with its
checkpoint saved and its status "stopped". Goal (issue 28): ≤ 2 s whatever the speed of a step.

Before this was measured, a stop waited for the next log line: log_every (50) steps later, minutes on an AVX2 laptop.
The table shows that wait too (the log interval × the measured step time), next to the measured stop.

Usage: python bench/bench_stop.py --data-root ../shared/data/mnist [--no-cpu-bf16] [--repeats 3] [--write]
(the MNIST test set in torchvision's layout; split as ddpm_core.idx does, into a temporary folder)
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_throughput import matmul_peak  # noqa: E402
from bench.common import flags_line, machine, precision_path, publish  # noqa: E402
from ddpm_core import runs  # noqa: E402
from ddpm_core.devices import uses_bf16  # noqa: E402
from ddpm_core.idx import split_test_set  # noqa: E402
from ddpm_core.recipes import recipe_config  # noqa: E402

LOG_EVERY = 50  # the recipe's log interval (TrainConfig's default)
WARM_STEPS = 5  # steps trained before the stop is asked for


def train(data_root: Path, out: Path, bf16: bool) -> subprocess.Popen:
    """The recipe as the app starts it: its own process and session; a log line each step, so the bench knows the
    step time (the stop itself no longer waits for one)."""
    args = ["--recipe", "cpu-mnist", "--data-root", str(data_root), "--out", str(out), "--steps", "1000000",
            "--log-every", "1", "--cpu-bf16" if bf16 else "--no-cpu-bf16"]  # fmt: skip
    return subprocess.Popen([sys.executable, "-m", "ddpm_core.train", *args], cwd=ROOT, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip


def wait_for_step(proc: subprocess.Popen, run: Path, step: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while runs.read_status(run).get("step", 0) < step or runs.read_status(run).get("state") != "running":
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the trainer ended or stalled before step {step} ({proc.returncode})")
        time.sleep(0.05)


def stop_once(proc: subprocess.Popen, run: Path, how: str) -> tuple[float, dict]:
    """Ask for a stop; seconds until the process has exited, and its final status."""
    start = time.perf_counter()
    if how == "STOP file":
        (run / runs.STOP).write_text("stop requested by the bench\n")
    else:
        proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=600)
    return time.perf_counter() - start, runs.read_status(run)


def step_seconds(run: Path) -> float:
    records = [r for r in runs.read_metrics(run) if r.get("images_per_s")]
    batch = runs.read_json(run / runs.CONFIG)["batch_size"]
    return statistics.median(batch / r["images_per_s"] for r in records)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", type=Path, required=True, help="holds MNIST/raw/t10k-*-idx?-ubyte[.gz]")
    p.add_argument("--no-cpu-bf16", action="store_true", help="float32 on any CPU: an AVX2 laptop's path")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--write", action="store_true", help="append the table to bench/RESULTS.md")
    args = p.parse_args()
    import torch

    bf16 = not args.no_cpu_bf16
    path = precision_path(uses_bf16(torch.device("cpu"), True, bf16))
    peak = matmul_peak(torch.get_num_threads(), 2048, 5)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = split_test_set(args.data_root, Path(tmp) / "data")
        for how in ("STOP file", "SIGTERM"):
            for i in range(args.repeats):
                run = Path(tmp) / f"run-{how[:4]}-{i}"
                proc = train(root, run, bf16)
                try:
                    wait_for_step(proc, run, WARM_STEPS)
                    seconds, status = stop_once(proc, run, how)
                finally:
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
                step_s = step_seconds(run)
                ok = status.get("state") == "stopped" and status.get("checkpoint_step") == status.get("step")
                rows.append((how, seconds, step_s, status.get("step"), ok, proc.returncode))
                print(rows[-1], flush=True)
    config = recipe_config("cpu-mnist")
    lines = [
        f"## Stop — {time.strftime('%Y-%m-%d')} — {machine()}",
        "",
        f"`python bench/bench_stop.py --data-root <MNIST test set>{' --no-cpu-bf16' if args.no_cpu_bf16 else ''}` "
        f"— CPU flags: {flags_line()}; matmul peak {peak:.0f} GFLOP/s fp32 (2048², 2 threads); precision path: "
        f"**{path}**. The `cpu-mnist` recipe (batch {config.batch_size}) trains in its own process; after "
        f"{WARM_STEPS} steps the stop is asked for; the time until the process has exited (checkpoint written, "
        "status stopped). Nothing else ran.",
        "",
        "| asked by | stop took | one step | before: the wait for the next log (≤ 50 steps) | stopped at step "
        "| checkpoint = step, exit 0 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for how, seconds, step_s, step, ok, rc in rows:
        lines.append(f"| {how} | {seconds:.2f} s | {step_s:.2f} s | up to {LOG_EVERY * step_s:.0f} s | {step} "
                     f"| {'yes' if ok and rc == 0 else f'no ({rc})'} |")  # fmt: skip
    worst = max(r[1] for r in rows)
    lines += ["", f"- Slowest stop: {worst:.2f} s (goal ≤ 2 s: {'met' if worst <= 2 else 'missed'})."]
    publish(lines, args.write)


if __name__ == "__main__":
    main()
