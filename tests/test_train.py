"""Training end to end on tiny digits runs: the loss goes down, the run folder holds what the app reads, and a run
survives what users do to it — kill -9, STOP, SIGTERM, a diverging learning rate, a full disk — then resumes."""

from __future__ import annotations

import errno
import math
import os
import re
import signal
import stat
import threading
import time

import pytest
import torch
from PIL import Image

from ddpm_core import run_history as rh
from ddpm_core import runs, train
from ddpm_core.config import TrainConfig
from ddpm_core.diffusion import Diffusion
from ddpm_core.evaluate import evaluate_model
from ddpm_core.sample import sample
from ddpm_core.trainer import N_BUCKETS, Trainer
from tests.runs_helpers import POLL_S, TINY, copy_run, flags, run_cli, start, wait_until

CHECKPOINT_FILES = (runs.MODEL, runs.EMA, runs.STATE)
DIVERGE = ["--lr", "1", "--weight-decay", "1e30", "--grad-clip", "0"]  # AdamW's decay turns every weight into ±inf


def run_main(argv, capsys) -> tuple[int, str, str]:
    rc = train.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def checkpoint_bytes(run) -> dict[str, bytes]:
    return {name: (run / name).read_bytes() for name in CHECKPOINT_FILES}


def all_finite(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


# ----------------------------------------------------------------------------------------------------------------
# The shared 60-step run


def test_a_short_run_lowers_the_loss(shared):
    losses = [r["loss"] for r in runs.read_metrics(shared.path)]
    early, late = sum(losses[:2]) / 2, sum(losses[-2:]) / 2
    assert late < 0.85 * early, losses


def test_config_json_is_the_train_config(shared):
    assert TrainConfig.from_json_file(shared.path / runs.CONFIG) == shared.config


def test_metrics_lines_hold_every_field(shared):
    records = runs.read_metrics(shared.path)
    assert [r["step"] for r in records] == list(range(5, 61, 5))
    for r in records:
        assert math.isfinite(r["loss"]) and r["loss"] > 0
        assert len(r["loss_buckets"]) == N_BUCKETS
        assert all(b is None or (math.isfinite(b) and b > 0) for b in r["loss_buckets"])
        assert any(b is not None for b in r["loss_buckets"])
        assert r["images_per_s"] > 0 and r["elapsed"] > 0
    assert [r["elapsed"] for r in records] == sorted(r["elapsed"] for r in records)


def test_lr_warms_up_then_holds(shared):
    lr, warmup = shared.config.lr, shared.config.warmup
    records = runs.read_metrics(shared.path)
    warming = [r["lr"] for r in records if r["step"] < warmup - 1]
    assert len(warming) >= 3 and warming == sorted(set(warming)) and warming[0] < lr / 2
    assert all(r["lr"] == pytest.approx(lr) for r in records if r["step"] >= warmup)


def test_status_goes_running_then_done(shared):
    running = shared.running
    assert running["state"] == "running" and running["pid"] == shared.pid
    assert running["total_steps"] == 60 and 0 <= running["step"] <= 60 and running["error"] is None
    done = runs.read_status(shared.path)
    assert done["state"] == "done" and done["pid"] == shared.pid
    assert done["step"] == done["total_steps"] == done["checkpoint_step"] == 60 and done["error"] is None
    assert done["data"]["shape"] == [1, 8, 8]


def test_previews_are_readable_pngs(shared):
    expected = {f"step_{s:06d}_{tag}.png" for s in (30, 60) for tag in ("raw", "ema")}
    assert {p.name for p in (shared.path / runs.PREVIEWS).iterdir()} == expected
    for name in expected:
        with Image.open(shared.path / runs.PREVIEWS / name) as im:
            assert im.format == "PNG" and min(im.size) >= 8
            im.load()


def test_checkpoint_files_exist_with_the_permissions_open_would_give(shared):
    previews = [p.relative_to(shared.path) for p in (shared.path / runs.PREVIEWS).iterdir()]
    for name in (*CHECKPOINT_FILES, runs.CONFIG, runs.STATUS, runs.METRICS, *previews):
        mode = stat.S_IMODE((shared.path / name).stat().st_mode)
        assert mode == 0o666 & ~umask(), f"{name}: {oct(mode)}"
    assert not [p for p in shared.path.rglob("*") if p.name.endswith(".tmp")]


# ----------------------------------------------------------------------------------------------------------------
# Resume, stop, kill


def test_resume_applies_a_new_learning_rate(shared, tmp_path, capsys):
    """After a NaN the message says "lower the learning rate": a resume with --lr must use it, not the saved one."""
    run = copy_run(shared.path, tmp_path / "run")
    rc, _, err = run_main(["--out", run, "--resume", "--steps", 65, "--lr", "1e-4"], capsys)
    assert rc == 0, err
    records = runs.read_metrics(run)
    assert records[:-1] == runs.read_metrics(shared.path)
    assert records[-1]["step"] == 65 and records[-1]["lr"] == pytest.approx(1e-4)
    assert TrainConfig.from_json_file(run / runs.CONFIG).lr == 1e-4


def test_kill_9_keeps_the_last_checkpoint_and_resume_continues_from_it(tmp_path):
    run = tmp_path / "killed"
    proc = start("train", *flags(TINY), "--steps", 3000, "--log-every", 1, "--checkpoint-every", 5, "--preview-every",
                 0, "--out", run, runs_root=tmp_path)  # fmt: skip

    def past_a_checkpoint():  # kill between checkpoints (steps logged that no checkpoint holds), as a crash would
        steps = [r["step"] for r in runs.read_metrics(run)]
        return runs.read_status(run).get("checkpoint_step", 0) >= 10 and steps and steps[-1] % 5 in (2, 3)

    try:
        wait_until(past_a_checkpoint, proc, 120, "a checkpoint at step ≥ 10 and two more steps")
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    status = runs.read_status(run)
    assert status["state"] == "running" and status["pid"] == proc.pid  # the killed process could not say otherwise
    raw, ema = runs.load_checkpoint(run, prefer_ema=False), runs.load_checkpoint(run)
    assert raw.step >= 10 and raw.step % 5 == 0 and ema.step % 5 == 0
    assert all_finite(raw.model) and all_finite(ema.model)
    assert runs.read_metrics(run)[-1]["step"] > raw.step

    total = raw.step + 15
    resumed = run_cli("train", "--out", run, "--resume", "--steps", total, runs_root=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"done at step {total}" in resumed.stdout
    steps = [r["step"] for r in runs.read_metrics(run)]
    assert steps == list(range(1, total + 1))  # the first run's records up to the checkpoint, then the resumed ones
    status = runs.read_status(run)
    assert status["state"] == "done" and status["step"] == status["total_steps"] == total
    assert status["pid"] != proc.pid
    assert runs.load_checkpoint(run).step == total


def test_stop_file_stops_cleanly_with_a_checkpoint(tmp_path, capsys):
    run, finished = tmp_path / "stopped", threading.Event()

    def ask_to_stop():  # what the app's Stop button does, once the run has really started
        deadline = time.monotonic() + 120
        while not finished.is_set() and time.monotonic() < deadline:
            if any(r["step"] >= 8 for r in runs.read_metrics(run)):
                (run / runs.STOP).touch()
                return
            finished.wait(POLL_S)

    helper = threading.Thread(target=ask_to_stop)
    helper.start()
    try:
        argv = [*flags(TINY), "--steps", 600, "--log-every", 1, "--checkpoint-every", 0, "--preview-every", 0]
        rc, out, err = run_main([*argv, "--out", run], capsys)
    finally:
        finished.set()
        helper.join()
    assert rc == 0, err
    status = runs.read_status(run)
    step = status["step"]
    assert status["state"] == "stopped" and 8 <= step < 600 and status["checkpoint_step"] == step
    assert f"stopped at step {step}" in out
    assert runs.load_checkpoint(run).step == runs.load_checkpoint(run, prefer_ema=False).step == step
    assert runs.read_metrics(run)[-1]["step"] == step
    assert status["evaluation"] == "skipped: the run was stopped"
    assert not (run / runs.PREVIEWS / f"step_{step:06d}_ema.png").exists()  # a stop is a checkpoint and an exit


class SlowTrainer(Trainer):
    """A trainer whose steps are slow (a sleep in each, as on a busy laptop) and which asks itself to stop, through
    the STOP file the app writes, during step `stop_at` — with log intervals far away."""

    def __init__(self, *args, stop_at: int, step_s: float = 0.05, **kwargs):
        super().__init__(*args, **kwargs)
        self.stop_at, self.step_s = stop_at, step_s

    def train_step(self, batch):
        time.sleep(self.step_s)
        out = super().train_step(batch)
        if self.step == self.stop_at:
            (self.run_dir / runs.STOP).touch()
        return out


def test_a_stop_takes_effect_after_the_current_step_not_at_the_next_log(tmp_path):
    run = tmp_path / "slow"
    config = TrainConfig(**{**TINY, "steps": 10_000, "log_every": 1000, "preview_every": 0, "checkpoint_every": 0,
                            "evaluate_n": 100, "out": str(run)})  # fmt: skip
    status = SlowTrainer(config, run, stop_at=3, log=lambda _: None).train()
    assert status["state"] == "stopped" and status["step"] == status["checkpoint_step"] == 3
    assert runs.load_checkpoint(run).step == 3
    assert [r["step"] for r in runs.read_metrics(run)] == [3]  # the partial interval is logged: resume starts there
    assert status["evaluation"] == "skipped: the run was stopped" and not (run / runs.EVALUATION).exists()
    assert list((run / runs.PREVIEWS).iterdir()) == []  # no preview on the way out either


def test_a_stop_during_the_final_evaluation_drops_it(tmp_path):
    class StopWhileEvaluating(Trainer):
        def preview(self):  # the run's last preview, just before its evaluation: the user presses Stop now
            super().preview()
            (self.run_dir / runs.STOP).touch()

    run = tmp_path / "evaluating"
    config = TrainConfig(**{**TINY, "steps": 4, "log_every": 2, "preview_every": 0, "evaluate_n": 200,
                            "out": str(run)})  # fmt: skip
    status = StopWhileEvaluating(config, run, log=lambda _: None).train()
    assert status["state"] == "done" and status["step"] == 4  # every step was trained and saved
    assert status["evaluation"] == "skipped: a stop was asked for during the evaluation"
    assert not (run / runs.EVALUATION).exists() and status.get("phase") is None


def test_sigterm_stops_cleanly_after_the_current_step_long_before_the_next_log(tmp_path):
    """Log lines a million steps apart: SIGTERM is still answered after the current step, with a checkpoint."""
    run = tmp_path / "term-now"
    proc = start("train", *flags(TINY), "--steps", 1_000_000, "--log-every", 1_000_000, "--preview-every", 0,
                 "--checkpoint-every", 0, "--out", run, runs_root=tmp_path)  # fmt: skip
    try:
        wait_until(lambda: runs.read_status(run).get("state") == "running", proc, 120, "training to start")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    status = runs.read_status(run)
    assert status["state"] == "stopped" and status["checkpoint_step"] == status["step"] < 1_000_000
    assert runs.read_metrics(run)[-1]["step"] == status["step"] and f"stopped at step {status['step']}" in out
    assert runs.load_checkpoint(run).step == status["step"]


# ----------------------------------------------------------------------------------------------------------------
# Failures


def test_diverging_run_fails_with_a_clear_message(tmp_path, capsys):
    run = tmp_path / "nan"
    argv = [*flags(TINY), "--steps", 50, "--log-every", 1, "--warmup", 0, *DIVERGE, "--out", run]
    rc, _, err = run_main(argv, capsys)
    assert rc == 1
    assert err.startswith("error: ") and "Traceback" not in err
    assert re.search(r"the loss became (nan|inf)", err) and "Lower the learning rate" in err
    status = runs.read_status(run)
    assert status["state"] == "failed" and status["step"] < 50
    assert re.search(r"became (nan|inf)", status["error"]) and "learning rate" in status["error"]


def test_divergence_never_overwrites_the_last_good_checkpoint(shared, tmp_path, capsys):
    """Checkpoints every 2 steps but the loss is only checked every 3: the NaN weights of step 62 must not be saved."""
    run = copy_run(shared.path, tmp_path / "run")
    before = checkpoint_bytes(run)
    argv = ["--out", run, "--resume", "--steps", 100, "--log-every", 3, "--checkpoint-every", 2, "--preview-every", 0]
    rc, _, err = run_main([*argv, *DIVERGE], capsys)
    assert rc == 1 and err.startswith("error: ") and "Traceback" not in err
    assert re.search(r"became (nan|inf)", err) and "Lower the learning rate" in err
    assert runs.read_status(run)["state"] == "failed"
    assert checkpoint_bytes(run) == before
    ckpt = runs.load_checkpoint(run)
    assert ckpt.step == 60 and all_finite(ckpt.model)
    diffusion = Diffusion(ckpt.config.make_schedule())
    assert torch.isfinite(sample(ckpt.model, diffusion, 4, ckpt.sample_shape, sampler="ddim", steps=5).samples).all()


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(shared, tmp_path, monkeypatch):
    run = copy_run(shared.path, tmp_path / "run")
    before = checkpoint_bytes(run)
    trainer = Trainer(shared.config.replace(steps=62, out=str(run)), run, resume=True, log=lambda *_: None)
    real_replace = os.replace

    def full_disk(src, dst, *args, **kwargs):
        if os.path.basename(dst) in CHECKPOINT_FILES:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError) as failure:
        trainer.train()
    monkeypatch.undo()
    assert failure.value.errno == errno.ENOSPC
    assert checkpoint_bytes(run) == before
    assert runs.load_checkpoint(run).step == runs.load_checkpoint(run, prefer_ema=False).step == 60
    assert runs.load_training_state(run / runs.STATE)["step"] == 60
    assert not [p.name for p in run.rglob("*") if p.name.endswith(".tmp")]
    status = runs.read_status(run)
    assert status["state"] == "failed" and os.strerror(errno.ENOSPC) in status["error"]


# ----------------------------------------------------------------------------------------------------------------
# The end-of-run evaluation (evaluation.json, the history's metric column)


def test_the_end_of_a_run_scores_its_ema_weights_into_evaluation_json(shared):
    report = runs.read_json(shared.path / runs.EVALUATION)
    assert (report["step"], report["n"], report["sampler"], report["steps"]) == (60, 100, "ddim", 50)
    assert report["dataset"] == "digits" and sum(report["class_histogram"]) == 100
    # the same score again from the saved EMA checkpoint, with the run's seed: it scored exactly those weights
    ema = runs.load_checkpoint(shared.path)
    again = evaluate_model(ema.model, Diffusion(ema.config.make_schedule()), ema.config, ema.sample_shape, 100, seed=0)
    assert again["pixel_fd"] == pytest.approx(report["pixel_fd"], rel=1e-6)
    assert rh.headline_metric(shared.path) == f"pixel FD {report['pixel_fd']:.3g}"
    assert rh.evaluation_summary(shared.path) == "100 DDIM-50 samples at step 60"
    assert runs.read_status(shared.path).get("phase") is None


def test_resuming_drops_the_evaluation_of_the_old_weights(shared, tmp_path):
    run = copy_run(shared.path, tmp_path / "run")
    assert (run / runs.EVALUATION).exists()
    config = shared.config.replace(steps=62, evaluate_n=0, out=str(run))
    assert Trainer(config, run, resume=True, log=lambda *_: None).train()["state"] == "done"
    assert not (run / runs.EVALUATION).exists() and rh.headline_metric(run) == ""


def test_a_failed_evaluation_is_recorded_and_the_run_still_ends_done(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(8):
        Image.fromarray((torch.rand(8, 8) * 255).byte().numpy(), mode="L").save(folder / f"{i}.png")
    settings = {**TINY, "dataset": "folder", "folder": str(folder), "image_size": 8, "channels": 1, "evaluate_n": 10}
    config = TrainConfig(**settings, steps=2, warmup=0, log_every=1, preview_every=0)
    lines = []
    trainer = Trainer(config, tmp_path / "run", log=lines.append)
    for image in folder.iterdir():  # the reference images vanish between training and scoring
        image.unlink()
    assert trainer.train()["state"] == "done"
    report = runs.read_json(tmp_path / "run" / runs.EVALUATION)
    assert report["step"] == 2 and "DatasetError" in report["error"] and str(folder) in report["error"]
    assert any(line.startswith("evaluation failed:") for line in lines)
    assert rh.headline_metric(tmp_path / "run") == ""


@pytest.mark.parametrize(
    ("dataset", "device", "evaluate_n", "expected"),
    [("digits", "cpu", -1, 1000), ("moons", "cpu", -1, 1000), ("mnist", "cpu", -1, 0), ("mnist", "cuda", -1, 1000),
     ("cifar10", "cuda:1", -1, 1000), ("mnist", "cpu", 200, 200), ("digits", "cpu", 0, 0)],
)  # fmt: skip
def test_auto_evaluation_scores_1000_samples_only_where_that_is_cheap(dataset, device, evaluate_n, expected):
    assert TrainConfig(dataset=dataset, evaluate_n=evaluate_n).evaluation_samples(device) == expected


@pytest.mark.parametrize("evaluate_n", [-2, 1, 10_001])
def test_evaluate_n_outside_its_range_is_refused(evaluate_n):
    with pytest.raises(ValueError, match=f"evaluate_n must be -1 .auto., 0 .off. or 2 to 10000, got {evaluate_n}"):
        TrainConfig(evaluate_n=evaluate_n)
