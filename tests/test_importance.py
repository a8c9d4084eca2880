"""The time-step importance view: the density of log-SNR a schedule gives uniform t, and a model's ε-error across
the whole range of t."""

from __future__ import annotations

import json

import pytest
import torch

from ddpm_core import runs
from ddpm_core.data import load_dataset
from ddpm_core.diffusion import Diffusion
from ddpm_core.importance import log_snr_density, loss_profile
from ddpm_core.schedules import make_schedule
from tests.runs_helpers import call_cli

BUNDLED = "assets/checkpoints/digits.safetensors"


@pytest.mark.parametrize("name", ["linear", "cosine", "sigmoid"])
def test_the_density_of_log_snr_is_a_density_that_matches_the_steps(name):
    s = make_schedule(name, 1000)
    lam, density = s.log_snr, log_snr_density(s)
    inner = slice(1, -1)  # the clipped ends of cosine have kinks
    total = torch.trapezoid(density[inner].flip(0), lam[inner].flip(0))
    assert total == pytest.approx(1.0, abs=0.02)
    low = lam < -5  # the share of uniform t's with λ < −5, counted and integrated
    integrated = torch.trapezoid(
        density[low & (torch.arange(1000) > 0)].flip(0), lam[low & (torch.arange(1000) > 0)].flip(0)
    )
    assert float(integrated) == pytest.approx(float(low.double().mean()), abs=0.02)


def test_linear_spends_more_steps_near_pure_noise_than_cosine():
    share = {n: float((make_schedule(n, 1000).log_snr < -5).double().mean()) for n in ("linear", "cosine")}
    assert share["linear"] > share["cosine"] + 0.1


def test_a_trained_models_error_falls_as_the_noise_grows():
    ckpt = runs.load_checkpoint(BUNDLED)
    x0 = load_dataset("digits").x[:128]
    profile = loss_profile(ckpt.model, Diffusion(ckpt.config.make_schedule()), x0, n_t=20)
    assert profile.t[0] == 0 and profile.t[-1] == 999 and len(profile.t) == 20
    assert profile.log_snr == sorted(profile.log_snr, reverse=True)
    assert profile.loss[0] > 5 * profile.loss[-1]  # ε is hardest to see when x_t is nearly clean
    assert all(d > 0 for d in profile.density)


def test_the_cli_prints_the_profile_and_refuses_bad_settings(tmp_path):
    result = call_cli("importance", "--checkpoint", BUNDLED, "--n-t", 10, "--batch", 32, runs_root=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert len(report["t"]) == len(report["loss"]) == len(report["log_snr"]) == len(report["density"]) == 10
    bad = call_cli("importance", "--checkpoint", BUNDLED, "--n-t", 1, runs_root=tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith("error: n_t must lie in [2, T = 1000], got 1")
