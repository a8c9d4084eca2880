"""The bound a run reports when it ends (ddpm_core.likelihood_run): in evaluation.json, the history and the CLI's last
line, for the digits and the 2D toys only, and exactly the bound of the saved EMA weights."""

from __future__ import annotations

import pytest
import torch

from ddpm_core import run_history as rh
from ddpm_core import runs
from ddpm_core.config import TrainConfig
from ddpm_core.data import make_toy
from ddpm_core.diffusion import Diffusion
from ddpm_core.evaluate import REFERENCE_SEED
from ddpm_core.likelihood_run import RUN_BOUND_MAX_N, bound_is_cheap, run_bound, run_bound_data
from ddpm_core.trainer import Trainer


@pytest.mark.parametrize(
    ("dataset", "shape", "cheap"),
    [("digits", (1, 8, 8), True), ("digits", (1, 16, 16), False), ("moons", (2,), True),
     ("swiss_roll", (2,), True), ("mnist", (1, 28, 28), False), ("cifar10", (3, 32, 32), False)],
)  # fmt: skip
def test_only_the_digits_at_8x8_and_the_2d_toys_report_a_bound(dataset, shape, cheap):
    assert bound_is_cheap(TrainConfig(dataset=dataset), shape) is cheap


def test_the_end_of_a_digits_run_reports_the_bound_of_its_saved_ema_weights(shared):
    report = runs.read_json(shared.path / runs.EVALUATION)["bound"]
    assert (report["n"], report["variance"], report["strata"], report["levels"]) == (100, "beta", 50, 17)
    parts = report["prior"] + report["kl"] + report["decoder"]
    assert report["bits_per_dim"] == pytest.approx(parts, abs=2e-4) and 0 < report["stderr"] < 1
    # the same bound again from the EMA checkpoint, the run's digits and its seed: it measured exactly those weights
    ema = runs.load_checkpoint(shared.path)
    x0, y = run_bound_data(ema.config, ema.config.load_data(), 100, seed=ema.config.seed)
    again = run_bound(ema.model, Diffusion(ema.config.make_schedule()), ema.config, x0, y, seed=ema.config.seed)
    assert again.bits_per_dim == pytest.approx(report["bits_per_dim"], abs=1e-4)
    shown = f"{report['bits_per_dim']:.3g} ± {report['stderr']:.2g} bits/dim"
    assert rh.history_row(shared.path).bound == shown
    assert f", bound {shown};" in shared.stdout


def test_a_2d_run_measures_its_bound_on_fresh_points_and_an_image_run_on_cpu_does_not(tmp_path):
    config = TrainConfig(dataset="moons", steps=3, warmup=0, log_every=1, preview_every=0, checkpoint_every=0,
                         evaluate_n=40, device="cpu")  # fmt: skip
    Trainer(config, tmp_path / "moons", log=lambda *_: None).train()
    report = runs.read_json(tmp_path / "moons" / runs.EVALUATION)
    assert "mmd" in report and report["bound"]["n"] == 40 and report["bound"]["levels"] is None
    x0, y = run_bound_data(config, config.load_data(), 40, seed=config.seed)
    assert y is None and torch.equal(x0, make_toy("moons", 40, seed=REFERENCE_SEED + config.seed))
    assert not any(torch.equal(x0[0], p) for p in config.load_data().x)  # held out: not the training points
    assert len(run_bound_data(config, config.load_data(), 5000, seed=0)[0]) == RUN_BOUND_MAX_N


def test_a_class_conditional_run_is_bounded_with_each_digits_own_label():
    config = TrainConfig(dataset="digits", class_conditional=True)
    data = config.load_data()
    x0, y = run_bound_data(config, data, 30, seed=3)
    same = (data.x[None] == x0[:, None]).flatten(2).all(2)  # (30, N): which of the data each sample is
    assert all(bool((data.y[row] == label).any()) for row, label in zip(same, y, strict=True))
    assert len(set(y.tolist())) > 1
    assert run_bound_data(TrainConfig(dataset="digits"), data, 30, seed=3)[1] is None
