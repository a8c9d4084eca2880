"""The DDPM-vs-DDIM grid without Streamlit: one cell per setting, a shared x_T, steps, timing, metrics, and DDIM's
determinism. Models are the bundled checkpoints (a digits UNet and a moons MLP), sampled for real on the CPU."""

from __future__ import annotations

import pytest
import torch

from ddpm_core.compare import SamplerSetting, cheap_settings, compare_samplers, standard_settings
from ddpm_core.diffusion import Diffusion
from ddpm_core.evaluate import quality_metrics
from ddpm_core.runs import load_checkpoint
from tests.conftest import ROOT

BUNDLED = ROOT / "assets" / "checkpoints"


def loaded(name: str):
    ckpt = load_checkpoint(BUNDLED / f"{name}.safetensors")
    return ckpt, Diffusion(ckpt.config.make_schedule())


@pytest.fixture(scope="module")
def digits():
    return loaded("digits")


@pytest.fixture(scope="module")
def moons():
    return loaded("moons")


def grid(pair, settings, n=4, seed=0, **kwargs):
    ckpt, diffusion = pair
    return compare_samplers(ckpt.model, diffusion, ckpt.sample_shape, settings, n, seed, **kwargs)


def test_one_cell_per_setting_from_the_same_noise(digits):
    settings = [SamplerSetting("ddim", 10), SamplerSetting("ddim", 4), SamplerSetting("ddpm", 12)]
    cells = grid(digits, settings, n=6, seed=3)
    assert [c.setting for c in cells] == settings
    assert [c.steps for c in cells] == [10, 4, 12]
    for c in cells:
        assert c.samples.shape == (6, 1, 8, 8) and c.x_T.shape == (6, 1, 8, 8)
        assert torch.isfinite(c.samples).all() and c.wall_time > 0 and c.metric is None
        assert torch.equal(c.x_T, cells[0].x_T)
    assert not torch.equal(cells[0].samples, cells[1].samples)  # the step count matters
    other = grid(digits, settings[:1], n=6, seed=4)[0]
    assert not torch.equal(other.x_T, cells[0].x_T)  # the seed draws x_T


def test_the_metric_is_computed_on_each_cells_samples(digits):
    seen = []

    def metric(samples):
        seen.append(samples)
        return quality_metrics(samples, digits[0].config)

    cells = grid(digits, [SamplerSetting("ddim", 10), SamplerSetting("ddim", 3)], n=8, metric=metric)
    assert len(seen) == 2 and all(s is c.samples for s, c in zip(seen, cells, strict=True))
    for c in cells:
        assert c.metric["dataset"] == "digits" and c.metric["n"] == 8
        assert c.metric["pixel_fd"] > 0 and 0 < c.metric["confidence"] <= 1
        assert sum(c.metric["class_histogram"]) == 8
    assert cells[0].metric["pixel_fd"] != cells[1].metric["pixel_fd"]


def test_2d_cells_get_points_and_their_metric(moons):
    cells = grid(moons, cheap_settings(1000), n=50, metric=lambda s: quality_metrics(s, moons[0].config))
    assert [c.setting.label for c in cells] == ["DDIM-50", "DDIM-20", "DDIM-10"]
    assert all(c.samples.shape == (50, 2) for c in cells)
    assert all({"mmd", "sliced_wasserstein"} <= set(c.metric) for c in cells)


def test_ddim_with_eta_0_over_all_1000_steps_is_deterministic(moons):
    ckpt, diffusion = moons
    a, b = grid(moons, [SamplerSetting("ddim", 1000)] * 2, n=8, seed=1, eta=0.0, clip_x0=False)
    assert torch.equal(a.samples, b.samples)
    # the samples are a function of x_T alone: the same steps, by hand and with no random generator, agree
    x = a.x_T.clone()
    with torch.inference_mode():
        for t in range(999, -1, -1):
            eps = ckpt.model(x, torch.full((len(x),), t))
            x = diffusion.ddim_step(eps, t, x, t - 1, eta=0.0).x_prev
    torch.testing.assert_close(x, a.samples)
    noisy = grid(moons, [SamplerSetting("ddim", 1000)], n=8, seed=1, eta=1.0, clip_x0=False)[0]
    assert torch.equal(noisy.x_T, a.x_T) and not torch.allclose(noisy.samples, a.samples)


def test_progress_counts_the_steps_of_the_whole_grid(moons):
    calls = []
    grid(moons, [SamplerSetting("ddim", 5), SamplerSetting("ddim", 3)], progress=lambda d, t: calls.append((d, t)))
    assert calls == [(k, 8) for k in range(1, 9)]


def test_a_bad_setting_raises_before_any_sampling(moons):
    calls = []
    with pytest.raises(ValueError, match="steps must lie in"):
        grid(moons, [SamplerSetting("ddim", 5), SamplerSetting("ddim", 2000)], progress=lambda d, t: calls.append(d))
    assert calls == []
    with pytest.raises(ValueError, match="at least one"):
        grid(moons, [])
    with pytest.raises(ValueError, match="unknown sampler"):
        SamplerSetting("euler", 10)


def test_labels_and_the_offered_settings():
    assert SamplerSetting.from_label("DDIM-50") == SamplerSetting("ddim", 50)
    assert SamplerSetting("ddpm", 1000).label == "DDPM-1000"
    with pytest.raises(ValueError, match="DDPM-1000 or DDIM-50"):
        SamplerSetting.from_label("DDIM fifty")
    assert [s.label for s in standard_settings(1000)] == [
        "DDPM-1000", "DDIM-250", "DDIM-100", "DDIM-50", "DDIM-20", "DDIM-10",
    ]  # fmt: skip
    assert [s.label for s in standard_settings(100)] == ["DDPM-100", "DDIM-50", "DDIM-20", "DDIM-10"]
    assert [s.label for s in cheap_settings(20)] == ["DDIM-10"]
