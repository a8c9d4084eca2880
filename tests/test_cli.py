"""The three CLIs end to end, as subprocesses from the repo root, and every way a user can call them wrongly: exit
code 2 and an `error: …` line (argparse's `usage:` too for malformed flags), never a traceback."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from PIL import Image

from ddpm_core import runs
from ddpm_core.diffusion import Diffusion
from ddpm_core.gif import MAX_GIF_WIDTH
from ddpm_core.sample import sample
from tests.runs_helpers import call_cli, flags, run_cli, start

MOONS = {"dataset": "moons", "n_points": 500, "steps": 40, "batch_size": 64, "T": 100, "preview_steps": 5,
         "preview_n": 8, "log_every": 10, "device": "cpu"}  # fmt: skip


@pytest.fixture(scope="module")
def moons(tmp_path_factory):
    """A 2D toy trained through the CLI with --name (not --out): it lands in $DDPM_EXPLORER_RUNS/<safe name>."""
    root = tmp_path_factory.mktemp("moons-runs")
    result = run_cli("train", *flags(MOONS), "--name", "../moons run", runs_root=root)
    return root, result


def read_image(path):
    with Image.open(path) as im:
        im.load()
        return im.format, im.size, getattr(im, "n_frames", 1)


def no_traceback(result) -> bool:
    return "Traceback" not in result.stderr and "Traceback" not in result.stdout


# ----------------------------------------------------------------------------------------------------------------
# End to end on digits


def test_train_cli_trains_digits(shared):
    assert shared.returncode == 0 and "Traceback" not in shared.stderr
    first, scoring, bound, last = shared.stdout.strip().splitlines()
    assert first.startswith("digits: 1797 samples of shape (1, 8, 8); UNet")
    assert scoring == "evaluating 100 samples of the EMA weights (DDIM-50)…"
    assert re.fullmatch(r"bound: \d+\.\d{3} ± \d\.\d{3} bits/dim \(σ_t² = β_t, 50 strata, 100 samples\)", bound)
    score = r"pixel FD [\d.]+, bound [\d.]+ ± [\d.]+ bits/dim"
    done = rf"done at step 60, final loss \d+\.\d{{4}}, {score}; [\d,]+ parameters; run folder {shared.path}"
    assert re.fullmatch(done, last)


def test_sample_cli_writes_gif_png_and_npy(shared, tmp_path):
    out = tmp_path / "out" / "nested"  # folders that do not exist yet
    result = run_cli("sample", "--checkpoint", shared.path, "--sampler", "ddim", "--steps", 10, "--n", 16, "--gif",
                     out / "t.gif", "--png", out / "grid.png", "--npy", out / "x.npy", "--device", "cpu",
                     runs_root=tmp_path)  # fmt: skip
    assert result.returncode == 0 and no_traceback(result), result.stderr
    assert re.fullmatch(rf"16 samples in [\d.]+ s \(10 ddim steps\) from {shared.path / runs.EMA}\n", result.stdout)

    ckpt = runs.load_checkpoint(shared.path)
    expected = sample(ckpt.model, Diffusion(ckpt.config.make_schedule()), 16, (1, 8, 8), sampler="ddim", steps=10)
    samples = np.load(out / "x.npy")
    assert samples.dtype == np.float32 and samples.shape == (16, 1, 8, 8)
    np.testing.assert_allclose(samples, expected.samples.numpy(), atol=1e-5)

    fmt, (width, _), frames = read_image(out / "t.gif")
    assert fmt == "GIF" and frames == len(expected.trajectory) == 11 and width <= MAX_GIF_WIDTH
    fmt, (width, height), _ = read_image(out / "grid.png")
    assert fmt == "PNG" and width >= 4 * 8 and height >= 4 * 8


def test_evaluate_cli_scores_digits(shared, tmp_path):
    result = run_cli("evaluate", "--checkpoint", shared.path, "--n", 50, "--device", "cpu", runs_root=tmp_path)
    assert result.returncode == 0 and no_traceback(result), result.stderr
    report = json.loads(result.stdout)
    assert report["checkpoint"] == str(shared.path / runs.EMA) and report["step"] == 60
    assert report["dataset"] == "digits" and report["sampler"] == "ddim" and report["steps"] == 50
    assert math.isfinite(report["pixel_fd"]) and report["pixel_fd"] >= 0
    assert 0.1 <= report["confidence"] <= 1  # ten classes: a classifier's top probability is at least 1/10
    histogram = report["class_histogram"]
    assert len(histogram) == 10 and all(isinstance(c, int) and c >= 0 for c in histogram) and sum(histogram) == 50
    assert report["n"] == 50


# ----------------------------------------------------------------------------------------------------------------
# End to end on a 2D toy


def test_train_cli_trains_moons_under_a_safe_name(moons):
    root, result = moons
    assert result.returncode == 0 and no_traceback(result), result.stderr
    run = root / "moons-run"
    assert "done at step 40" in result.stdout and str(run) in result.stdout
    assert runs.read_status(run)["state"] == "done" and runs.load_checkpoint(run).sample_shape == (2,)
    assert [p.name for p in root.iterdir()] == ["moons-run"]


def test_sample_cli_on_points(moons, tmp_path):
    root, _ = moons
    result = run_cli("sample", "--checkpoint", root / "moons-run", "--raw", "--sampler", "ddpm", "--steps", 20,
                     "--n", 200, "--record-every", 3, "--gif", tmp_path / "t.gif", "--png", tmp_path / "p.png",
                     "--npy", tmp_path / "x.npy", "--device", "cpu", runs_root=root)  # fmt: skip
    assert result.returncode == 0 and no_traceback(result), result.stderr
    assert result.stdout.rstrip().endswith(str(root / "moons-run" / runs.MODEL))
    samples = np.load(tmp_path / "x.npy")
    assert samples.dtype == np.float32 and samples.shape == (200, 2) and np.isfinite(samples).all()
    fmt, (width, _), frames = read_image(tmp_path / "t.gif")
    assert fmt == "GIF" and frames == len(range(0, 20, 3)) + 1 and width <= MAX_GIF_WIDTH
    assert read_image(tmp_path / "p.png")[0] == "PNG"


def test_evaluate_cli_on_points(moons):
    root, _ = moons
    result = run_cli("evaluate", "--checkpoint", root / "moons-run", "--n", 200, "--steps", 20, "--device", "cpu",
                     runs_root=root)  # fmt: skip
    assert result.returncode == 0 and no_traceback(result), result.stderr
    report = json.loads(result.stdout)
    assert report["dataset"] == "moons" and report["n"] == 200 and report["steps"] == 20
    assert math.isfinite(report["mmd"]) and math.isfinite(report["sliced_wasserstein"])
    assert report["sliced_wasserstein"] > 0


# ----------------------------------------------------------------------------------------------------------------
# Wrong calls, in process (fast): (module, argv, what the message says, argparse usage error?)

BAD_CALLS = [
    ("train", ["--batch-size", "0"], "batch_size must be positive, got 0", False),
    ("train", ["--lr", "-1"], "lr must be positive, got -1", False),
    ("train", ["--steps", "0"], "steps must be positive", False),
    ("train", ["--dataset", "nope"], "unknown dataset 'nope'; valid: digits, ", False),
    ("train", ["--schedule", "nope"], "unknown schedule 'nope'; valid names: ", False),
    ("train", ["--classes", "42"], "class 42 is not one of digits's classes", False),
    ("train", ["--classes", "seven"], "unknown class 'seven' for digits", False),
    ("train", ["--T", "1"], "T (number of timesteps) must be at least 2, got 1", False),
    ("train", ["--T", "20", "--preview-steps", "50"], "preview_steps (50) cannot exceed T (20)", False),
    ("train", ["--dataset", "mnist", "--data-root", "{empty}"], "Re-run with --download", False),
    ("train", ["--config", "{missing}"], "does not exist", False),
    ("train", ["--no-such-flag"], "unrecognized arguments: --no-such-flag", True),
    ("train", ["--steps", "ten"], "argument --steps: invalid int value: 'ten'", True),
    ("train", ["--schedule-params", "[1]"], "expected a JSON object", True),
    ("sample", [], "the following arguments are required: --checkpoint", True),
    ("sample", ["--checkpoint", "{missing}"], "does not exist", False),
    ("sample", ["--checkpoint", "{text}"], "is not a readable safetensors checkpoint", False),
    ("sample", ["--checkpoint", "{run}", "--sampler", "nope"], "argument --sampler: invalid choice: 'nope'", True),
    ("sample", ["--checkpoint", "{run}", "--n", "0"], "--n must lie in [1, 10000], got 0", True),
    ("sample", ["--checkpoint", "{run}", "--steps", "101"], "steps must lie in [1, T = 100], got 101", False),
    ("sample", ["--checkpoint", "{run}", "--sampler", "ddim", "--eta", "2"], "eta must lie in [0, 1], got 2", False),
    ("evaluate", ["--checkpoint", "{run}", "--n", "1"], "--n must lie in [2, 10000], got 1", True),
    ("evaluate", ["--checkpoint", "{missing}"], "does not exist", False),
    ("evaluate", ["--checkpoint", "{run}", "--steps", "500"], "steps must lie in [1, T = 100], got 500", False),
]


def call_main(module: str, argv: list[str]) -> tuple[int, str, str]:
    result = call_cli(module, *argv)
    return result.returncode, result.stdout, result.stderr


def fill(argv: list[str], shared, tmp_path) -> list[str]:
    (tmp_path / "empty").mkdir(exist_ok=True)
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    places = {"run": shared.path, "missing": tmp_path / "missing", "empty": tmp_path / "empty",
              "text": tmp_path / "notes.txt"}  # fmt: skip
    return [str(places[a[1:-1]]) if a.startswith("{") else a for a in argv]


@pytest.mark.parametrize(("module", "argv", "message", "usage"), BAD_CALLS)
def test_bad_calls_exit_2_with_a_message(shared, tmp_path, module, argv, message, usage):
    out_dir = tmp_path / "never-made"
    extra = ["--out", out_dir] if module == "train" else []
    rc, _, err = call_main(module, [*fill(argv, shared, tmp_path), *extra])
    assert rc == 2
    assert message in err
    if usage:
        assert err.startswith(f"usage: python -m ddpm_core.{module}") and "\npython -m ddpm_core" in err
    else:
        assert err.startswith("error: ") and err.count("\n") == 1  # one line, nothing before it
    assert not out_dir.exists()  # a run that cannot start leaves no folder behind


def test_training_over_a_trained_model_needs_resume(shared):
    before = (shared.path / runs.METRICS).read_bytes()
    rc, _, err = call_main("train", [*flags({"steps": 10}), "--out", shared.path])
    assert rc == 2 and err.startswith("error: ") and "already holds a trained model; pass --resume" in err
    assert (shared.path / runs.METRICS).read_bytes() == before


def test_resume_without_a_run_says_there_is_nothing(shared, tmp_path):
    rc, _, err = call_main("train", ["--resume", "--out", tmp_path / "nothing-here"])
    assert rc == 2 and err.startswith("error: nothing to resume: ") and "config.json is missing" in err
    (tmp_path / "started").mkdir()
    (tmp_path / "started" / runs.CONFIG).write_bytes((shared.path / runs.CONFIG).read_bytes())
    rc, _, err = call_main("train", ["--resume", "--out", tmp_path / "started"])
    assert rc == 2 and "has the run saved a checkpoint yet?" in err


# ----------------------------------------------------------------------------------------------------------------
# Wrong calls as real processes: what the user's terminal shows (the cases above, in process, cover the rest)

PROCESS_CALLS = {
    "train-batch-size": ("train", ["--batch-size", "0"], "batch_size must be positive", False),
    "train-unknown-flag": ("train", ["--no-such-flag"], "unrecognized arguments: --no-such-flag", True),
    "sample-missing-checkpoint": ("sample", ["--checkpoint", "{missing}"], "does not exist", False),
}


@pytest.fixture(scope="module")
def process_results(shared, tmp_path_factory):
    """All the processes at once: each spends its seconds importing torch, and they overlap well."""
    tmp = tmp_path_factory.mktemp("bad-calls")
    procs = {}
    for key, (module, argv, _, _) in PROCESS_CALLS.items():
        extra = ["--out", tmp / key] if module == "train" else []
        procs[key] = start(module, *fill(argv, shared, tmp), *extra, runs_root=tmp)
    results = {}
    for key, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        results[key] = (proc.returncode, out, err, (tmp / key).exists())
    return results


@pytest.mark.parametrize("key", PROCESS_CALLS)
def test_bad_calls_as_processes(process_results, key):
    module, _, message, usage = PROCESS_CALLS[key]
    rc, out, err, made_folder = process_results[key]
    assert rc == 2 and "Traceback" not in err + out and message in err
    assert err.startswith(f"usage: python -m ddpm_core.{module}" if usage else "error: ")
    assert not made_folder
