"""The sampler as its callers use it: seeds, trajectories, frame thinning, x̂₀ clipping, 2D points and bad settings.
The update equations themselves are checked against diffusers in test_diffusion.py; here the model is a tiny
trained digits UNet (the shared run) or a freshly built MLP for points."""

from __future__ import annotations

import pytest
import torch

from ddpm_core import runs
from ddpm_core.diffusion import Diffusion
from ddpm_core.models import ModelConfig, build_model
from ddpm_core.sample import sample, sample_progressive
from ddpm_core.schedules import make_schedule
from tests.runs_helpers import digits_run

SAMPLERS = ["ddpm", "ddim"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return runs.load_checkpoint(digits_run(tmp_path_factory).path)


@pytest.fixture(scope="module")
def diffusion(ckpt):
    return Diffusion(ckpt.config.make_schedule())


def draw(ckpt, diffusion, n=16, **settings):
    return sample(ckpt.model, diffusion, n, ckpt.sample_shape, **settings)


@pytest.mark.parametrize("settings", [{"sampler": "ddpm"}, {"sampler": "ddim"}, {"sampler": "ddim", "eta": 0.5}])
def test_a_seed_fixes_the_samples(ckpt, diffusion, settings):
    a = draw(ckpt, diffusion, steps=10, seed=3, **settings)
    b = draw(ckpt, diffusion, steps=10, seed=3, **settings)
    c = draw(ckpt, diffusion, steps=10, seed=4, **settings)
    assert a.samples.shape == (16, 1, 8, 8) and a.samples.dtype == torch.float32
    assert torch.isfinite(a.samples).all()
    assert torch.equal(a.samples, b.samples)
    assert not torch.allclose(a.samples, c.samples)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_the_trajectory_runs_from_noise_at_T_to_the_samples_at_0(ckpt, diffusion, sampler):
    result = draw(ckpt, diffusion, n=64, sampler=sampler, steps=10, record_every=1)
    ts = [r.t for r in result.trajectory]
    assert len(ts) == 11 and ts[0] == diffusion.num_timesteps and ts[-1] == 0
    assert ts == sorted(set(ts), reverse=True)
    x_T = result.trajectory[0].x_t
    assert abs(x_T.mean().item()) < 0.05 and abs(x_T.std().item() - 1) < 0.05
    assert torch.equal(result.trajectory[-1].x_t, result.samples)
    assert result.timesteps == [t - 1 for t in ts[:-1]]
    assert result.wall_time > 0


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_default_step_counts(ckpt, diffusion, sampler):
    result = draw(ckpt, diffusion, n=2, sampler=sampler)
    assert len(result.timesteps) == (diffusion.num_timesteps if sampler == "ddpm" else 50)


@pytest.mark.parametrize("every", [3, 7, 19, 20, 1000])
def test_record_every_thins_frames_but_keeps_the_first_and_last(ckpt, diffusion, every):
    full = draw(ckpt, diffusion, sampler="ddpm", steps=20, record_every=1)
    thin = draw(ckpt, diffusion, sampler="ddpm", steps=20, record_every=every)
    kept = [*full.trajectory[:-1:every], full.trajectory[-1]]
    assert [r.t for r in thin.trajectory] == [r.t for r in kept]
    assert thin.trajectory[0].t == diffusion.num_timesteps and thin.trajectory[-1].t == 0
    for a, b in zip(thin.trajectory, kept, strict=True):
        assert torch.equal(a.x_t, b.x_t) and torch.equal(a.x0_pred, b.x0_pred)
    assert torch.equal(thin.samples, full.samples)


def test_progress_is_reported_after_every_step(ckpt, diffusion):
    calls = []
    draw(ckpt, diffusion, n=2, sampler="ddim", steps=7, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(k, 7) for k in range(1, 8)]


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_clip_x0_keeps_the_prediction_in_range(ckpt, diffusion, sampler):
    clipped = draw(ckpt, diffusion, sampler=sampler, steps=10, record_every=1, clip_x0=True)
    free = draw(ckpt, diffusion, sampler=sampler, steps=10, record_every=1, clip_x0=False)
    assert all(r.x0_pred.abs().max() <= 1 for r in clipped.trajectory if r.t > 0)
    assert clipped.samples.abs().max() <= 1
    assert any(r.x0_pred.abs().max() > 1 for r in free.trajectory if r.t > 0)  # so clipping did something


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_points_sample_as_n_by_2(sampler):
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="mlp", in_channels=2, base_channels=32, num_layers=2)).eval()
    diffusion = Diffusion(make_schedule("linear", 50))
    a = sample(model, diffusion, 100, (2,), sampler=sampler, steps=10, clip_x0=False, seed=1)
    b = sample(model, diffusion, 100, (2,), sampler=sampler, steps=10, clip_x0=False, seed=1)
    assert a.samples.shape == (100, 2) and torch.isfinite(a.samples).all()
    assert all(r.x_t.shape == r.x0_pred.shape == (100, 2) for r in a.trajectory)
    assert torch.equal(a.samples, b.samples)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"sampler": "euler"}, r"unknown sampler 'euler'; valid values: ddpm, ddim"),
        ({"sampler": "ddpm", "steps": -1}, r"steps must lie in \[1, T = 100\], got -1"),
        ({"sampler": "ddim", "steps": 101}, r"steps must lie in \[1, T = 100\], got 101"),
        ({"sampler": "ddim", "eta": 1.5}, r"eta must lie in \[0, 1\], got 1.5"),
        ({"sampler": "ddim", "eta": -0.1}, r"eta must lie in \[0, 1\], got -0.1"),
    ],
)
def test_bad_settings_raise_value_error(ckpt, diffusion, settings, message):
    with pytest.raises(ValueError, match=message):
        draw(ckpt, diffusion, n=2, **settings)
    with pytest.raises(ValueError, match=message):
        next(sample_progressive(ckpt.model, diffusion, 2, ckpt.sample_shape, **settings))
