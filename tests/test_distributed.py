"""Data-parallel training under torchrun, on the CPU with the gloo backend and two processes: one run folder written
once by rank 0, every step counted once, resume and STOP working across ranks; and the per-rank data split."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from ddpm_core import runs
from ddpm_core.distributed import World, epoch_indices, per_rank_batch
from tests.runs_helpers import ROOT, TINY, cli_env, flags, wait_until

TWO = {**TINY, "warmup": 5, "log_every": 10, "checkpoint_every": 20, "preview_every": 0}


def torchrun(*args, runs_root, wait: bool = True):
    """`torchrun --standalone --nproc_per_node=2 -m ddpm_core.train args…`, as the README shows it."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "ddpm_core.train", *map(str, args)]  # fmt: skip
    if not wait:
        return subprocess.Popen(cmd, cwd=ROOT, env=cli_env(runs_root), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
    return subprocess.run(cmd, cwd=ROOT, env=cli_env(runs_root), capture_output=True, text=True, timeout=240)


def steps(run) -> list[int]:
    return [r["step"] for r in runs.read_metrics(run)]


def test_two_processes_train_one_run_folder_and_resume_it(tmp_path):
    run = tmp_path / "ddp"
    result = torchrun(*flags(TWO), "--steps", 40, "--evaluate-n", 20, "--out", run, runs_root=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("done at step 40") == 1  # rank 0 reports, once
    assert steps(run) == [10, 20, 30, 40]  # each step logged once, not once per rank
    status = runs.read_status(run)
    assert status["state"] == "done" and status["device"] == "cpu × 2 processes"
    losses = [r["loss"] for r in runs.read_metrics(run)]
    assert losses[-1] < losses[0]
    assert runs.load_checkpoint(run).step == 40 and runs.read_json(run / runs.EVALUATION)["n"] == 20
    again = torchrun("--out", run, "--resume", "--steps", 60, runs_root=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert steps(run) == [10, 20, 30, 40, 50, 60] and runs.load_checkpoint(run).step == 60


def test_a_stop_file_stops_every_rank_with_a_checkpoint(tmp_path):
    run = tmp_path / "stop"
    proc = torchrun(*flags(TWO), "--steps", 100_000, "--log-every", 5, "--out", run, runs_root=tmp_path, wait=False)
    try:
        wait_until(lambda: len(steps(run)) >= 2, proc, 120, "two log lines")
        (run / runs.STOP).touch()
        _, err = proc.communicate(timeout=120)  # no rank left waiting for the other
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    status = runs.read_status(run)
    assert status["state"] == "stopped" and runs.load_checkpoint(run).step == status["step"] == steps(run)[-1]


def test_the_ranks_split_each_epoch_between_them():
    gen = torch.Generator()
    parts = [epoch_indices(101, World(rank, rank, 2), seed=7, epoch=3, generator=gen) for rank in (0, 1)]
    assert len(parts[0]) == len(parts[1]) == 50 and not set(parts[0].tolist()) & set(parts[1].tolist())
    assert torch.equal(parts[0], epoch_indices(101, World(0, 0, 2), seed=7, epoch=3, generator=gen))
    assert not torch.equal(parts[0], epoch_indices(101, World(0, 0, 2), seed=7, epoch=4, generator=gen))
    alone = epoch_indices(101, World(), seed=7, epoch=0, generator=torch.Generator().manual_seed(0))
    assert sorted(alone.tolist()) == list(range(101))
    assert per_rank_batch(128, World(0, 0, 4)) == 32
    with pytest.raises(ValueError, match=r"batch_size \(30\) must divide evenly among the 4 processes"):
        per_rank_batch(30, World(0, 0, 4))
