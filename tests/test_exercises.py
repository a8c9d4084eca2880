"""The exercise grader (ddpm_core.exercises): it passes the solution (the one in notebooks/make_notebooks.py, which
writes both notebooks), names each planted mistake in the course's notation, calls missing functions "not done yet",
and its CLI exits 0 / 1 / 2."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from ddpm_core.exercises import EXERCISES, check_all, main
from tests.conftest import ROOT


def _make_notebooks():
    spec = importlib.util.spec_from_file_location("make_notebooks", ROOT / "notebooks" / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SOLUTION = _make_notebooks().solution_source()


def _results(source: str) -> dict:
    namespace: dict = {}
    exec(compile(source, "student.py", "exec"), namespace)
    return {r.name: r for r in check_all(namespace, show=False)}


def test_the_solution_passes_every_exercise(capsys):
    namespace: dict = {}
    exec(compile(SOLUTION, "solution.py", "exec"), namespace)
    results = check_all(namespace)
    assert [r.name for r in results] == [e.name for e in EXERCISES]
    assert all(r.passed for r in results), [(r.name, r.message) for r in results if not r.passed]
    table = capsys.readouterr().out
    assert len([line for line in table.splitlines() if "✓ passed" in line]) == len(EXERCISES)
    assert "6 of 6 passed" in table


# (exercise that must fail, the solution's text, the mistake, a fragment of the diagnosis)
PLANTED = [
    ("to_model_range", "return 2 * pixels - 1", "return pixels", "still in [0, 1]"),
    ("to_model_range", "return 2 * pixels - 1", "return pixels - 0.5", "[−0.5, 0.5]"),
    ("make_schedule", "T, dtype=torch.float64)", "T, dtype=torch.float32)", "float64"),
    ("make_schedule", "beta_end, T, dtype=torch.float64)", "beta_end, T + 1, dtype=torch.float64)[1:]", "off by one"),
    ("make_schedule", "torch.cumprod(alphas, dim=0)", "torch.cumsum(alphas, dim=0)", "product"),
    ("make_schedule", "torch.cumprod(alphas, dim=0)", "torch.cumprod(betas, dim=0)", "not of the β_s"),
    ("make_schedule", "return betas, alphas, alpha_bars", "return betas, alphas", "(betas, alphas, alpha_bars)"),
    ("add_noise", "extract(alpha_bars.sqrt(), t, x0)", "extract(alpha_bars, t, x0)", "ᾱ_t where √ᾱ_t belongs"),
    ("add_noise", "extract((1 - alpha_bars).sqrt(), t, x0)", "extract(1 - alpha_bars, t, x0)",
     "(1 − ᾱ_t) where √(1 − ᾱ_t) belongs"),
    ("add_noise", "sqrt(), t, x0)", "sqrt(), t - 1, x0)", "alpha_bars[t − 1]"),
    ("add_noise", "extract(alpha_bars.sqrt(), t, x0)", "alpha_bars.sqrt()[t]", "(B, 1, 1, 1)"),
    ("add_noise", "return sqrt_alpha_bar * x0 + sqrt_one_minus_alpha_bar * noise",
     "return (sqrt_alpha_bar * x0 + sqrt_one_minus_alpha_bar * noise).double()", "dtype torch.float64"),
    ("add_noise", "def add_noise(", "def add_noise_(", "not done yet"),
    ("training_loss", "model(x_t, t)) ** 2", "model(x_t, t + 1)) ** 2", "given t + 1"),
    ("training_loss", "model(x_t, t)) ** 2", "model(x0, t)) ** 2", "given x_0"),
    ("training_loss", "** 2).mean()", "** 2).sum()", "is a sum"),
    ("training_loss", "** 2).mean()", "** 2).mean().detach()", "no gradient"),
    ("training_loss", "((noise - model(x_t, t)) ** 2).mean()", "(noise - model(x_t, t)).abs().mean()", "not squared"),
    ("training_loss", "((noise - model(x_t, t)) ** 2).mean()", "((x0 - model(x_t, t)) ** 2).mean()", "target is x_0"),
    ("training_loss", "((noise - model(x_t, t)) ** 2).mean()", "((noise - model(x_t, t)) ** 2).flatten(1).mean(1)",
     "not one value per image"),
    ("training_loss", "extract(alpha_bars.sqrt(), t, x0)", "extract(alpha_bars, t, x0)", "fix that first"),
    ("reverse_step", "return mean + sigma2**0.5 * z", "return mean + sigma2 * z", "σ_t², not σ_t"),
    ("reverse_step", "return mean + sigma2**0.5 * z", "return mean", "σ_t z is missing"),
    ("reverse_step", "        return mean  # x_0: no noise on the last step",
     "        return mean + beta**0.5 * z", "noise is added on the last step"),
    ("reverse_step", 'sigma2 = beta if variance == "beta"', 'sigma2 = beta if variance != "beta"',
     "σ_t² = β_t was asked (variance='beta'), you used β̃_t"),
    ("reverse_step", 'sigma2 = beta if variance == "beta" else (1 - alpha_bar_prev) / (1 - alpha_bar) * beta',
     "sigma2 = beta", "you used β_t"),
    ("reverse_step", "(x_t - beta / (1 - alpha_bar) ** 0.5 * eps)", "(x_t - beta / (1 - alpha_bar) * eps)",
     "(1 − ᾱ_t) where √(1 − ᾱ_t) belongs"),
    ("reverse_step", "* eps) / alpha**0.5", "* eps) / alpha", "α_t where √α_t belongs"),
    ("reverse_step", "* eps) / alpha**0.5", "* eps) / alpha_bar**0.5", "1/√α_t, not 1/√ᾱ_t"),
    ("reverse_step", "    if clip:\n", "    if False:\n", "clip x̂₀ to [−1, 1]"),
    ("reverse_step", "float(betas[t]), float(alphas[t]), float(alpha_bars[t])",
     "float(betas[t - 1]), float(alphas[t - 1]), float(alpha_bars[t - 1])", "off by one"),
    ("reverse_step", "(x_t.shape[0],), t, device", "(x_t.shape[0],), t + 1, device", "ε_θ was given t + 1"),
    ("reverse_step", "    beta, alpha, alpha_bar = ",
     '    raise NotImplementedError("TODO")\n    beta, alpha, alpha_bar = ', "not done yet"),
    ("sample", "x = torch.randn(shape, generator=generator, device=generator.device)\n", "x = torch.zeros(shape)\n",
     "start from x_T = torch.randn(shape, generator=generator)"),
    ("sample", "for t in reversed(range(len(betas))):", "for t in reversed(range(1, len(betas))):",
     "expected T + 1"),
    ("sample", "for t in reversed(range(len(betas))):", "for t in reversed(range(1, len(betas) + 1)):",
     "indices run 0 … T−1"),
    ("sample", "alpha_bars, variance, clip)", "alpha_bars)", "not passed on"),
    ("sample", "alpha_bars, variance, clip)", "alpha_bars, variance)", "does not follow `clip`"),
    ("sample", "return xs", "return x", "must return the list"),
    ("sample", "z = torch.randn(shape, generator=generator, device=generator.device) if t > 0",
     "z = torch.randn(shape) if t > 0", "replay your noise"),
    ("sample", "return mean + sigma2**0.5 * z", "return mean + sigma2 * z", "fix that first"),
]  # fmt: skip


@pytest.mark.parametrize(("exercise", "old", "new", "fragment"), PLANTED)
def test_each_planted_mistake_is_named(exercise, old, new, fragment):
    assert old in SOLUTION, f"the solution no longer contains {old!r}"
    result = _results(SOLUTION.replace(old, new))[exercise]
    assert not result.passed
    assert fragment in result.message or fragment in result.status, result.message


def test_an_empty_namespace_is_not_done_yet():
    results = check_all({}, show=False)
    assert [r.status for r in results] == ["not done yet"] * len(EXERCISES)
    assert all(r.message == f"no function named {r.name}" for r in results)


def test_a_function_waiting_for_an_unwritten_one_says_so():
    source = SOLUTION.replace(
        "    sqrt_alpha_bar = extract(", '    raise NotImplementedError("TODO: x_t")\n    s = extract('
    )
    results = _results(source)
    assert results["add_noise"].message == "TODO: x_t"
    assert results["training_loss"].status == "not done yet"
    assert results["training_loss"].message == "it calls add_noise, which is not done yet"


def test_another_exception_is_reported_in_one_line():
    source = SOLUTION.replace("return 2 * pixels - 1", "raise KeyError('oops\\nsecond line')")
    result = _results(source)["to_model_range"]
    assert result.status == "failed" and result.message == "raised KeyError: 'oops\\nsecond line'"


# ----------------------------------------------------------------------------------------------------------------
# CLI


def test_cli_passes_the_solution(tmp_path, capsys):
    path = tmp_path / "my_ddpm.py"
    path.write_text(SOLUTION)
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.count("✓ passed") == len(EXERCISES)


def test_cli_on_a_mistake_exits_1_with_the_diagnosis(tmp_path):
    path = tmp_path / "my_ddpm.py"
    path.write_text(SOLUTION.replace("extract(alpha_bars.sqrt(), t, x0)", "extract(alpha_bars, t, x0)"))
    run = subprocess.run(
        [sys.executable, "-m", "ddpm_core.exercises", "check", str(path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 1, run.stderr
    assert "ᾱ_t where √ᾱ_t belongs" in run.stdout


def test_cli_on_a_file_that_does_not_import_exits_1(tmp_path, capsys):
    path = tmp_path / "broken.py"
    path.write_text("import torch\ndef add_noise(:\n")
    assert main(["check", str(path)]) == 1
    assert "does not import: SyntaxError" in capsys.readouterr().err


def test_cli_bad_usage_exits_2(tmp_path, capsys):
    assert main(["check", str(tmp_path / "missing.py")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {tmp_path / 'missing.py'} is not a file"]
    assert main(["grade"]) == 2
    assert sum("error:" in line for line in capsys.readouterr().err.splitlines()) == 1
