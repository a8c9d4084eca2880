"""Editing (ddpm_core.edit): SDEdit, RePaint inpainting, DDIM inversion and interpolation, on the bundled digits and
moons models, and on an exact ε for Gaussian data, where DDIM inversion has a closed-form answer."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from ddpm_core import edit
from ddpm_core.data import load_dataset, make_toy
from ddpm_core.diffusion import Diffusion
from ddpm_core.edit_inputs import check_input, check_mask, mask_from_painting, mask_preset
from ddpm_core.models import ModelConfig
from ddpm_core.runs import load_checkpoint
from ddpm_core.sample import SamplingConfig, sample
from ddpm_core.schedules import make_schedule
from tests.conftest import ROOT

CHECKPOINTS = ROOT / "assets" / "checkpoints"


@pytest.fixture(scope="module")
def digits():
    ckpt = load_checkpoint(CHECKPOINTS / "digits.safetensors")
    return ckpt.model, Diffusion(ckpt.config.make_schedule()), load_dataset("digits").x[:8]


@pytest.fixture(scope="module")
def moons():
    ckpt = load_checkpoint(CHECKPOINTS / "moons.safetensors")
    return ckpt.model, Diffusion(ckpt.config.make_schedule()), make_toy("moons", 32, seed=1)


class GaussianEps(nn.Module):
    """The exact ε(x_t, t) for data x_0 ~ N(μ, s² I): x_t ~ N(√ᾱ μ, (ᾱ s² + 1 − ᾱ) I), so
    ε = √(1 − ᾱ) (x_t − √ᾱ μ) / (ᾱ s² + 1 − ᾱ)."""

    def __init__(self, diffusion: Diffusion, mu: torch.Tensor, s: float):
        super().__init__()
        self.config = ModelConfig(kind="mlp", in_channels=len(mu))
        self.anchor = nn.Parameter(torch.zeros(()))  # a device for the samplers
        self.alpha_bars, self.mu, self.s = diffusion.alpha_bars, mu.double(), s

    def forward(self, x, t, y=None):
        ab = self.alpha_bars[t].unsqueeze(1)
        eps = (1 - ab).sqrt() * (x.double() - ab.sqrt() * self.mu) / (ab * self.s**2 + 1 - ab)
        return eps.to(x.dtype)


def test_inpainting_keeps_the_known_pixels_exactly_and_fills_the_rest(digits):
    model, diffusion, x0 = digits
    mask = mask_preset("left", (1, 8, 8))
    for config, resample, jump in ((SamplingConfig("ddim", 10), 3, 2), (SamplingConfig("ddpm", 20), 2, 1)):
        out = edit.inpaint(model, diffusion, x0, mask, config, resample=resample, jump=jump, seed=4).samples
        assert torch.equal(out[..., 4:], x0[..., 4:])
        assert (out[..., :4] - x0[..., :4]).abs().max() > 0.1  # the left half was regenerated, not copied
        assert out.abs().max() <= 1.0


def test_inpainting_one_coordinate_of_2d_points(moons):
    model, diffusion, x0 = moons
    out = edit.inpaint(model, diffusion, x0, mask_preset("y", (2,)), SamplingConfig("ddim", 20, clip_x0=False))
    assert torch.equal(out.samples[:, 0], x0[:, 0])
    assert not torch.allclose(out.samples[:, 1], x0[:, 1])


def test_inpainting_a_point_mass_gives_the_point(digits):
    """For data that is one point c, the exact ε makes x̂₀ = c at every step: the regenerated pixels must be c."""
    _, diffusion, _ = digits
    c = torch.linspace(-0.8, 0.8, 4)
    oracle = GaussianEps(diffusion, c, 0.0)
    x0 = torch.zeros(3, 4)
    out = edit.inpaint(oracle, diffusion, x0, torch.tensor([0, 1, 1, 0]), SamplingConfig("ddim", 10, clip_x0=False))
    assert torch.allclose(out.samples[:, 1:3], c[1:3].expand(3, 2), atol=1e-4)
    assert torch.equal(out.samples[:, [0, 3]], x0[:, [0, 3]])


def test_repaint_path_goes_down_with_resampling_jumps():
    assert edit.repaint_path(3) == [0, 1, 2, 3]
    assert edit.repaint_path(3, jump=1, resample=2) == [0, 1, 0, 1, 2, 1, 2, 3]
    path = edit.repaint_path(10, jump=5, resample=3)
    assert path[0] == 0 and path[-1] == 10 and all(abs(b - a) in (1, 5) for a, b in itertools.pairwise(path))
    assert sum(b > a for a, b in itertools.pairwise(path)) == 10 + 2 * 5  # two jumps back of 5 steps from position 5


def test_sdedit_at_zero_returns_the_input_and_at_T_samples_from_the_same_noise(digits):
    model, diffusion, x0 = digits
    config = SamplingConfig("ddpm", 50)
    assert torch.equal(edit.sdedit(model, diffusion, x0, 0, config).samples, x0)
    T = diffusion.num_timesteps
    edited = edit.sdedit(model, diffusion, x0, T, config, seed=7).samples
    sampled = sample(model, diffusion, len(x0), (1, 8, 8), config, seed=7).samples
    # x_T differs from sample()'s by √ᾱ_T x_0 + (√(1 − ᾱ_T) − 1) ε, about 0.006 here
    assert (edited - sampled).abs().max() < 0.02


def test_sdedit_keeps_more_of_the_input_at_lower_t_start(digits):
    model, diffusion, x0 = digits
    config = SamplingConfig("ddim", 20)
    distance = [edit.sdedit(model, diffusion, x0, t, config, seed=1).samples.sub(x0).pow(2).mean() for t in (50, 900)]
    assert distance[0] < distance[1] / 3


def test_ddim_inversion_error_shrinks_with_steps_and_is_small_at_100(digits):
    model, diffusion, x0 = digits
    errors = edit.round_trip_errors(model, diffusion, x0, [5, 20, 100])
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.04  # measured 0.018 on 16 digits (bench/bench_edit.py)


def test_ddim_inversion_matches_the_closed_form_flow_for_gaussian_data():
    """For x_0 ~ N(μ, s² I) the probability-flow ODE maps x_0 to x_T = √ᾱ_T μ + √(ᾱ_T s² + 1 − ᾱ_T) (x_0 − μ)/s."""
    diffusion = Diffusion(make_schedule("linear", 1000))
    mu, s = torch.tensor([0.5, -0.3]), 0.2
    oracle = GaussianEps(diffusion, mu, s).double()
    x0 = (mu + s * torch.randn(16, 2, generator=torch.Generator().manual_seed(0))).double()
    ab = diffusion.alpha_bars[-1].item()
    expected = ab**0.5 * mu + (ab * s**2 + 1 - ab) ** 0.5 * (x0 - mu) / s
    gaps = []
    for steps in (200, 1000):
        inv = edit.invert(oracle, diffusion, x0, SamplingConfig("ddim", steps))
        gaps.append((inv.x_T - expected).abs().max().item())
    assert gaps[1] < 0.015  # measured 0.0079 (max over 32 values of order 1)
    assert 3 < gaps[0] / gaps[1] < 7  # first order in the step, as an Euler step of the flow: 5× the steps, 1/5
    assert inv.error < 0.005  # the round trip back to x_0 at 1000 steps: measured 0.002


def test_interpolation_endpoints_are_the_two_samples(digits):
    model, diffusion, _ = digits
    config = SamplingConfig("ddim", 10)
    row = edit.interpolate(model, diffusion, 3, 11, 5, config).samples
    for end, seed in ((row[0], 3), (row[-1], 11)):
        alone = sample(model, diffusion, 1, (1, 8, 8), config, seed=seed).samples[0]
        assert torch.allclose(end, alone, atol=1e-4)
    assert not torch.allclose(row[2], row[0], atol=0.1)


def test_slerp_keeps_the_norm_between_orthogonal_noises():
    a, b = torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 3.0]])
    mid = edit.slerp(a, b, 0.5)
    assert torch.allclose(mid.norm(), torch.tensor(3.0)) and torch.allclose(
        mid, torch.tensor([[1.0, 1.0]]) * 3 / 2**0.5
    )
    assert torch.equal(edit.slerp(a, a, 0.3), a)


def test_class_and_guidance_reach_the_edits():
    ckpt = load_checkpoint(CHECKPOINTS / "digits_cond.safetensors")
    diffusion = Diffusion(ckpt.config.make_schedule())
    config = SamplingConfig("ddim", 10)
    rows = [
        edit.interpolate(ckpt.model, diffusion, 0, 1, 3, c).samples
        for c in (config, SamplingConfig("ddim", 10, class_label=7, guidance=3.0))
    ]
    assert not torch.allclose(rows[0], rows[1], atol=1e-3)
    with pytest.raises(ValueError, match="not a class"):
        edit.interpolate(ckpt.model, diffusion, 0, 1, 3, SamplingConfig("ddim", 10, class_label=99))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m, d, x: edit.sdedit(m, d, x, -1), "t_start must be"),
        (lambda m, d, x: edit.sdedit(m, d, x, 1001), "t_start must be"),
        (lambda m, d, x: edit.sdedit(m, d, x[:, :, :4], 10), "input must be one 1×8×8"),
        (lambda m, d, x: edit.inpaint(m, d, x, torch.full((8, 8), 0.5)), "binary"),
        (lambda m, d, x: edit.inpaint(m, d, x, torch.ones(4, 4)), "match the input's shape"),
        (lambda m, d, x: edit.inpaint(m, d, x, torch.zeros(8, 8)), "regenerates nothing"),
        (lambda m, d, x: edit.inpaint(m, d, x, torch.ones(8, 8), resample=0), "resample must lie"),
        (lambda m, d, x: edit.interpolate(m, d, 0, 1, 1), "n must be"),
        (lambda m, d, x: mask_preset("x", (1, 8, 8)), "unknown mask preset"),
        (lambda m, d, x: edit.invert(m, d, torch.full_like(x, float("nan"))), "NaN"),
    ],
)
def test_bad_inputs_get_clear_errors(digits, call, message):
    model, diffusion, x0 = digits
    with pytest.raises(ValueError, match=message):
        call(model, diffusion, x0)


def test_masks_broadcast_over_channels_and_batches():
    x = torch.zeros(2, 3, 4, 4)
    assert check_mask(torch.ones(4, 4), x).shape == (1, 1, 4, 4)
    assert check_mask(torch.ones(2, 3, 4, 4), x).shape == (2, 3, 4, 4)
    assert check_input(torch.zeros(3, 4, 4), (3, 4, 4)).shape == (1, 3, 4, 4)
    presets = {name: mask_preset(name, (1, 8, 8)) for name in ("left", "top", "center", "random")}
    assert presets["left"][0, :, :4].all() and not presets["left"][0, :, 4:].any()
    assert presets["top"][0, :4].all() and presets["center"].sum() == 16
    assert 16 < presets["random"].sum() < 48 and np.isin(presets["random"].numpy(), (0, 1)).all()


def test_a_painted_mask_marks_the_pixels_painted_over_by_half_or_more():
    alpha = np.zeros((224, 224), np.uint8)  # 28 canvas pixels per image pixel of an 8×8 model
    alpha[0:28, 0:28] = 153  # pixel (0, 0) painted in full, at the brush's opacity
    alpha[28:42, 28:56] = 255  # pixel (1, 1): its top half
    alpha[56:60, 56:84] = 255  # pixel (2, 2): a thin line, a seventh of it
    mask = mask_from_painting(alpha, (3, 8, 8))
    assert mask.shape == (3, 8, 8) and (mask[0] == mask[2]).all()
    assert mask[0].nonzero().tolist() == [[0, 0], [1, 1]]
    assert mask_from_painting(alpha, (1, 8, 8), cover=0.1)[0, 2, 2] == 1
    uneven = mask_from_painting(np.ones((100, 61)), (1, 28, 28))  # a canvas that is no multiple of the image
    assert uneven.shape == (1, 28, 28) and uneven.all()
    with pytest.raises(ValueError, match="regenerates nothing"):
        check_mask(mask_from_painting(np.zeros((64, 64)), (1, 8, 8)), torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="for images"):
        mask_from_painting(alpha, (2,))
    with pytest.raises(ValueError, match="one \\(height, width\\) layer"):
        mask_from_painting(np.zeros((4, 4, 4)), (1, 8, 8))
