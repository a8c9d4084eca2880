"""python -m ddpm_core.likelihood end to end on the bundled moons and digits models: the printed bound, its parts and
(2D) the ODE NLL, the JSON of the per-t terms, and one `error:` line with exit status 2 for every bad call."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from ddpm_core import likelihood
from tests.conftest import ROOT

CHECKPOINTS = ROOT / "assets" / "checkpoints"
DIGITS, MOONS = str(CHECKPOINTS / "digits.safetensors"), str(CHECKPOINTS / "moons.safetensors")


def run(argv: list, capsys) -> tuple[int, str, str]:
    rc = likelihood.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_moons_prints_the_bound_and_the_ode_and_writes_json(tmp_path, capsys):
    out = tmp_path / "new" / "moons.json"
    rc, stdout, err = run(["--checkpoint", MOONS, "--n", "16", "--ode-steps", "10", "--json", out], capsys)
    assert rc == 0, err
    for label in ("bound", "L_T", "Σ L_t−1", "L_0", "ODE NLL", "gap", "16 fresh moons points", "every t"):
        assert label in stdout
    report = json.loads(out.read_text())
    b = report["bound"]
    assert len(b["per_t"]) == 1000 and len(b["per_sample"]) == 16 and b["full"] and b["levels"] is None
    assert b["prior"] + sum(b["per_t"]) == pytest.approx(b["bits_per_dim"], rel=1e-9)
    assert report["ode"]["steps"] == 10 and len(report["ode"]["bits_per_dim"]) == 16
    assert report["gap"] == pytest.approx(b["bits_per_dim"] - report["ode"]["mean_bits_per_dim"])
    assert [p.name for p in out.parent.iterdir()] == ["moons.json"]  # written atomically: no temp file left


def test_digits_stratified_json_marks_the_undrawn_steps(tmp_path, capsys):
    out = tmp_path / "digits.json"
    rc, stdout, err = run(["--checkpoint", DIGITS, "--n", "4", "--strata", "10", "--variance", "beta", "--seed", "3",
                           "--json", out], capsys)  # fmt: skip
    assert rc == 0, err
    assert "one t in each of 10 strata" in stdout and "17 levels" in stdout and "ODE" not in stdout
    b = json.loads(out.read_text())["bound"]
    assert b["strata"] == 10 and b["variance"] == "beta" and b["levels"] == 17 and not b["full"]
    assert None in b["per_t"] and sum(b["draws"]) == 4 * 11 and math.isfinite(b["bits_per_dim"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--checkpoint", "missing.safetensors"], "does not exist"),
        (["--checkpoint", DIGITS, "--n", "0"], "--n must lie in [1, 10000]"),
        (["--checkpoint", DIGITS, "--full", "--strata", "5"], "not both"),
        (["--checkpoint", DIGITS, "--strata", "0"], "--strata must lie in [1, T − 1 = 999]"),
        (["--checkpoint", DIGITS, "--ode-steps", "10"], "--ode-steps is for 2D point models"),
        (["--checkpoint", MOONS, "--n", "2", "--ode-steps", "0"], "--ode-steps must be ≥ 1"),
        (["--checkpoint", MOONS, "--device", "tpu"], "unknown device 'tpu'"),
    ],
)
def test_bad_calls_exit_2_with_one_error_line(capsys, argv, message):
    rc, _, err = run(argv, capsys)
    assert rc == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_an_unknown_variance_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exit_info:
        likelihood.main(["--checkpoint", DIGITS, "--variance", "learned"])
    assert exit_info.value.code == 2 and "invalid choice: 'learned'" in capsys.readouterr().err


def test_a_process_call(tmp_path):
    argv = [sys.executable, "-m", "ddpm_core.likelihood", "--checkpoint", MOONS, "--n", "4", "--ode-steps", "4"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "bits/dim" in done.stdout and "ODE NLL" in done.stdout
    text = tmp_path / "notes.safetensors"
    text.write_text("not a checkpoint")
    done = subprocess.run([*argv[:4], str(text)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "Traceback" not in done.stderr
