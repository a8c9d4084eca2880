"""python -m ddpm_core.edit end to end: each method writes its .npy, PNG and GIF from a .npy or a real PNG input, and
every bad call exits 2 with one `error:` line."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from ddpm_core import edit
from ddpm_core.data import load_dataset
from tests.conftest import ROOT

DIGITS = str(ROOT / "assets" / "checkpoints" / "digits.safetensors")
MOONS = str(ROOT / "assets" / "checkpoints" / "moons.safetensors")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("edit")
    x = load_dataset("digits").x[:3].numpy()
    np.save(folder / "digits.npy", x)
    Image.fromarray(((x[0, 0] + 1) * 127.5).round().astype(np.uint8)).resize((32, 32)).save(folder / "digit.png")
    mask = np.zeros((8, 8), np.float32)
    mask[:, :3] = 1
    np.save(folder / "mask.npy", mask)
    np.save(folder / "half.npy", mask * 0.5)
    np.save(folder / "points.npy", np.array([[0.5, 0.2], [-0.3, 0.8]], np.float32))
    return folder


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = edit.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_inpaint_from_npy_with_a_mask_file_keeps_the_rest(inputs, tmp_path, capsys):
    out = tmp_path / "new" / "inpainted.npy"
    argv = ["inpaint", "--checkpoint", DIGITS, "--input", inputs / "digits.npy", "--mask", inputs / "mask.npy"]
    rc, stdout, err = run([*argv, "--steps", "10", "--resample", "2", "--out", out, "--png", tmp_path / "a.png",
                           "--gif", tmp_path / "a.gif"], capsys)  # fmt: skip
    assert rc == 0, err
    result, x = np.load(out), np.load(inputs / "digits.npy")
    assert result.shape == x.shape and np.array_equal(result[..., 3:], x[..., 3:])
    assert Image.open(tmp_path / "a.png").size[0] > 8 and Image.open(tmp_path / "a.gif").n_frames > 1
    assert "inpaint: 3 result(s)" in stdout


def test_each_method_from_a_png(inputs, tmp_path, capsys):
    said = []
    for method, extra in (("sdedit", ["--t-start", "200"]), ("invert", []), ("inpaint", ["--mask-preset", "center"])):
        rc, stdout, err = run([method, "--checkpoint", DIGITS, "--input", inputs / "digit.png", "--steps", "10",
                               "--out", tmp_path / f"{method}.npy", *extra], capsys)  # fmt: skip
        assert rc == 0, (method, err)
        assert np.load(tmp_path / f"{method}.npy").shape == (1, 1, 8, 8)
        said.append(stdout)
    assert "round-trip RMS error" in said[1]


def test_interpolate_and_points(inputs, tmp_path, capsys):
    rc, _, err = run(["interpolate", "--checkpoint", DIGITS, "--n", "4", "--steps", "5", "--out", tmp_path / "r.npy"],
                     capsys)  # fmt: skip
    assert rc == 0, err
    assert np.load(tmp_path / "r.npy").shape == (4, 1, 8, 8)
    rc, _, err = run(["inpaint", "--checkpoint", MOONS, "--input", inputs / "points.npy", "--mask-preset", "x",
                      "--steps", "10", "--out", tmp_path / "p.npy", "--png", tmp_path / "p.png"], capsys)  # fmt: skip
    assert rc == 0, err
    assert np.array_equal(np.load(tmp_path / "p.npy")[:, 1], np.load(inputs / "points.npy")[:, 1])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["inpaint", "--input", "digits.npy"], "needs one of --mask FILE or --mask-preset"),
        (["inpaint", "--input", "digits.npy", "--mask", "half.npy"], "binary"),
        (["inpaint", "--input", "digits.npy", "--mask-preset", "x"], "unknown mask preset"),
        (["sdedit", "--input", "missing.npy"], "does not exist"),
        (["sdedit", "--input", "mask.npy"], "the input must be one 1×8×8 sample"),
        (["sdedit", "--input", "digits.npy", "--t-start", "5000"], "t_start must be"),
        (["sdedit"], "sdedit needs --input"),
        (["sdedit", "--input", "digits.npy", "--steps", "5000"], "steps must lie"),
        (["invert", "--input", "points.npy"], "the input must be one 1×8×8 sample"),
        (["interpolate", "--n", "1"], "n must be"),
        (["interpolate", "--class-label", "3"], "not class-conditional"),
    ],
)
def test_bad_calls_exit_2_with_one_error_line(inputs, capsys, argv, message):
    argv = [str(inputs / a) if a.endswith(".npy") else a for a in argv]
    rc, _, err = run([*argv, "--checkpoint", DIGITS], capsys)
    assert rc == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_a_process_call_on_a_text_file(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    argv = [sys.executable, "-m", "ddpm_core.edit", "sdedit", "--checkpoint", DIGITS, "--input", str(text)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "Traceback" not in done.stderr
