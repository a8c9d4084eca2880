"""The noise predictors ε_θ: the timestep embedding against its formula, UNet and MLP shapes, gradients,
conditioning and batch independence, and ModelConfig validation."""

import functools
import json
import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ddpm_core.models import (
    PRESETS,
    Attention,
    MLPDenoiser,
    ModelConfig,
    ResBlock,
    UNet,
    build_model,
    count_parameters,
    describe_model,
    group_norm,
    timestep_embedding,
)

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def perturbed(model: nn.Module, scale: float = 0.1, seed: int = 0) -> nn.Module:
    """`model` with noise added to every parameter.

    The UNet zero-initialises the last conv of the output and of every residual branch, so a fresh UNet returns 0
    for any x, t and y, and the first backward reaches only the output conv (see test_fresh_unet_outputs_exactly_…).
    One optimiser step would make the output depend on x but still not on t or y; noise in every weight does.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return model


def unet(**settings) -> UNet:
    return build_model(ModelConfig(**{"base_channels": 16, **settings}))


@functools.cache
def preset_model(name: str, in_channels: int) -> nn.Module:
    """A freshly built preset, shared by the tests that only read it (points for mlp, 32×32 images otherwise)."""
    return build_model(ModelConfig(in_channels=in_channels, image_size=32, **PRESETS[name]))


def attention_resolutions_seen(model: UNet, x: torch.Tensor) -> list[int]:
    """The spatial size of the input of every Attention call during one forward pass."""
    seen = []
    hooks = [
        m.register_forward_hook(lambda _m, args, _out: seen.append(args[0].shape[-1]))
        for m in model.modules()
        if isinstance(m, Attention)
    ]
    with torch.no_grad():
        model(x, torch.zeros(len(x), dtype=torch.long))
    for h in hooks:
        h.remove()
    return seen


# ---------------------------------------------------------------------------------------------------------------
# The sinusoidal timestep embedding


def reference_embedding(t: list[int], dim: int) -> torch.Tensor:
    """[sin(t ω_0) … sin(t ω_{d/2−1}), cos(t ω_0) … cos(t ω_{d/2−1})], ω_i = 1/10000^(2i/d), for even d, in float64."""
    omegas = [1 / 10_000 ** (2 * i / dim) for i in range(dim // 2)]
    rows = [[math.sin(s * w) for w in omegas] + [math.cos(s * w) for w in omegas] for s in t]
    return torch.tensor(rows, dtype=torch.float64)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 999), min_size=1, max_size=8),
    st.integers(1, 64).map(lambda k: 2 * k),
)
def test_embedding_is_sin_then_cos_of_t_times_the_paper_frequencies(t, dim):
    emb = timestep_embedding(torch.tensor(t), dim)
    assert emb.shape == (len(t), dim) and emb.dtype == torch.float32
    # float32 arguments t·ω of up to 1000 rad are off by < 1e-4; a wrong frequency or order is off by O(1)
    torch.testing.assert_close(emb.double(), reference_embedding(t, dim), rtol=0, atol=2e-4)


@pytest.mark.parametrize("dim", [1, 3, 17, 33])
def test_odd_dim_is_the_even_embedding_padded_with_one_zero(dim):
    t = torch.tensor([0, 1, 500, 999])
    emb = timestep_embedding(t, dim)
    assert emb.shape == (4, dim)
    assert (emb[:, -1] == 0).all()
    torch.testing.assert_close(emb[:, :-1], timestep_embedding(t, dim - 1), rtol=0, atol=0)


def test_embedding_of_t_zero_is_sin_zero_and_cos_one():
    emb = timestep_embedding(torch.tensor([0]), 16)
    assert (emb[0, :8] == 0).all() and (emb[0, 8:] == 1).all()


def test_each_frequency_lies_on_the_unit_circle_and_values_in_minus_one_one():
    dim, half = 32, 16
    emb = timestep_embedding(torch.arange(1000), dim)
    assert emb.abs().max() <= 1
    torch.testing.assert_close(emb[:, :half] ** 2 + emb[:, half:] ** 2, torch.ones(1000, half))


def test_every_timestep_gets_its_own_embedding():
    dim = 32
    emb = timestep_embedding(torch.arange(1000), dim).double()
    dist = torch.cdist(emb, emb) + torch.eye(1000) * 10  # ignore each t's distance to itself
    # The slowest frequency ω_min keeps t·ω_min ≤ 0.18 rad, where sin is monotone with slope ≥ cos(0.18):
    # consecutive t alone are ≥ 0.98·ω_min apart in that one coordinate.
    omega_min = 1 / 10_000 ** (2 * (dim // 2 - 1) / dim)
    assert dist.min() > 0.9 * omega_min


def test_float_timesteps_embed_like_integer_ones():
    t = torch.tensor([0, 7, 999])
    torch.testing.assert_close(timestep_embedding(t.float(), 24), timestep_embedding(t, 24), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------------------
# UNet

UNET_SHAPES = [  # (image size, channel_mults): each size with mults that halve it evenly down to ≥ 2 px
    (8, (1, 2)),
    (16, (1, 2)),
    (28, (1, 2, 2)),
    (32, (1, 2, 2)),
    (64, (1, 2, 2, 2)),
]


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size, mults", UNET_SHAPES)
def test_unet_keeps_the_shape_and_every_parameter_gets_a_gradient(channels, size, mults):
    model = perturbed(unet(in_channels=channels, image_size=size, channel_mults=mults, base_channels=8))
    x = torch.randn(2, channels, size, size)
    out = model(x, torch.tensor([0, 999]))
    assert out.shape == x.shape and out.dtype == torch.float32
    ((out - torch.randn_like(out)) ** 2).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    dead = [n for n, p in model.named_parameters() if p.grad is not None and not p.grad.any()]
    assert missing == [] and dead == []


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size, mults", UNET_SHAPES)
def test_unet_output_depends_on_t_and_on_x(channels, size, mults):
    model = perturbed(unet(in_channels=channels, image_size=size, channel_mults=mults, base_channels=8)).eval()
    x, t = torch.randn(2, channels, size, size), torch.tensor([10, 500])
    with torch.no_grad():
        out = model(x, t)
        assert not torch.allclose(model(x, t + 1), out, atol=1e-4)
        assert not torch.allclose(model(x + 0.1 * torch.randn_like(x), t), out, atol=1e-4)


def test_fresh_unet_outputs_exactly_zero_and_only_the_output_conv_learns_first():
    # Documented: the output conv is zero-initialised, so ε̂ starts at 0, the mean of the noise it learns to predict.
    model = unet(in_channels=3, image_size=16)
    x = torch.randn(4, 3, 16, 16)
    out = model(x, torch.tensor([0, 1, 500, 999]))
    assert (out == 0).all()
    out.sub(torch.randn_like(out)).pow(2).mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    learning = {n for n, p in model.named_parameters() if p.grad.any()}
    output_conv = next(m for m in model.out.modules() if isinstance(m, nn.Conv2d))
    assert learning == {n for n, p in model.named_parameters() if any(p is q for q in output_conv.parameters())}


@pytest.mark.parametrize("levels", [(8,), (16,), (8, 16)])
def test_attention_runs_at_the_requested_resolutions_and_in_the_middle(levels):
    model = perturbed(unet(image_size=16, channel_mults=(1, 2), attention_resolutions=levels))
    x = torch.randn(2, 1, 16, 16)
    # The middle always has one Attention, at the lowest resolution (16 / 2 = 8 here), whatever the setting.
    assert sorted(set(attention_resolutions_seen(model, x))) == sorted({*levels, 8})
    out = model(x, torch.tensor([3, 4]))
    assert out.shape == x.shape and out.isfinite().all()


def test_without_attention_resolutions_only_the_middle_attends():
    model = unet(image_size=32, channel_mults=(1, 2, 2))
    assert sum(isinstance(m, Attention) for m in model.modules()) == 1
    assert sum(isinstance(m, Attention) for m in model.middle) == 1
    assert attention_resolutions_seen(model, torch.randn(1, 1, 32, 32)) == [32 // 4]


@settings(max_examples=12, deadline=None)
@given(st.integers(1, 12).map(lambda k: 8 * k))
def test_every_width_that_validates_builds_and_runs(base):
    # e.g. base 48 gives 144 channels on the up path and base 56 a 112-channel middle attention
    model = perturbed(unet(base_channels=base, image_size=8, channel_mults=(1, 2), attention_resolutions=(8, 4)))
    x = torch.randn(1, 1, 8, 8)
    with torch.no_grad():
        assert model(x, torch.tensor([5])).shape == x.shape


def test_group_norm_fits_every_multiple_of_eight():
    for channels in range(8, 2049, 8):
        norm = group_norm(channels)  # GroupNorm itself rejects a group count that does not divide the channels
        assert channels % norm.num_groups == 0 and 8 <= norm.num_groups <= 32, channels


@pytest.mark.parametrize("kind", ["unet", "mlp"])
def test_no_batch_norm_in_any_model(kind):
    names = [n for n, p in PRESETS.items() if p.get("kind", "unet") == kind]
    for name in names:
        model = preset_model(name, 2 if kind == "mlp" else 3)
        assert not [m for m in model.modules() if isinstance(m, BATCH_NORMS)], name
    assert names


def test_unet_treats_each_sample_on_its_own():
    # BatchNorm would normalise with the batch's statistics, so a sample's ε̂ would depend on its batch-mates.
    model = perturbed(unet(in_channels=3, image_size=16, attention_resolutions=(8,))).eval()
    x, t = torch.randn(4, 3, 16, 16), torch.tensor([0, 10, 500, 999])
    with torch.no_grad():
        together = model(x, t)
        alone = torch.cat([model(x[i : i + 1], t[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# Dropout


@pytest.mark.parametrize("name, in_channels", [("small", 3), ("tiny", 1), ("mlp", 2)])
def test_every_dropout_uses_the_configured_rate(name, in_channels):
    model = preset_model(name, in_channels)
    expected = PRESETS[name].get("dropout", 0.0)
    rates = [m.p for m in model.modules() if isinstance(m, nn.Dropout)]
    assert rates and set(rates) == {expected}
    # One dropout per residual block, the middle blocks included.
    blocks = [m for m in model.modules() if isinstance(m, ResBlock)] if name != "mlp" else model.blocks
    assert len(rates) == len(blocks)


@pytest.mark.parametrize("kind", ["unet", "mlp"])
def test_dropout_is_random_in_training_and_off_in_eval(kind):
    config = ModelConfig(kind=kind, in_channels=2 if kind == "mlp" else 1, base_channels=16, dropout=0.5)
    model = perturbed(build_model(config))
    x = torch.randn(4, 2) if kind == "mlp" else torch.randn(4, 1, 8, 8)
    t = torch.tensor([1, 2, 3, 4])
    with torch.no_grad():
        assert not torch.equal(model.train()(x, t), model(x, t))
        model.eval()
        assert torch.equal(model(x, t), model(x, t))


# ---------------------------------------------------------------------------------------------------------------
# MLP for 2D points


def test_mlp_maps_points_to_points_and_every_parameter_learns():
    model = perturbed(build_model(ModelConfig(kind="mlp", in_channels=2, base_channels=32, num_layers=3)))
    assert isinstance(model, MLPDenoiser)
    x = torch.randn(16, 2)
    out = model(x, torch.randint(0, 1000, (16,)))
    assert out.shape == (16, 2) and out.dtype == torch.float32
    ((out - torch.randn_like(out)) ** 2).mean().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()] == []


def test_mlp_treats_each_point_on_its_own_and_depends_on_t():
    model = perturbed(build_model(ModelConfig(kind="mlp", in_channels=2, base_channels=32))).eval()
    x, t = torch.randn(4, 2), torch.tensor([0, 10, 500, 999])
    with torch.no_grad():
        together = model(x, t)
        alone = torch.cat([model(x[i : i + 1], t[i : i + 1]) for i in range(4)])
        torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(model(x, t + 1), together, atol=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# Class conditioning


@pytest.mark.parametrize("kind", ["unet", "mlp"])
def test_labels_condition_the_output_and_none_means_the_null_label(kind):
    n_classes = 3
    config = ModelConfig(kind=kind, in_channels=2 if kind == "mlp" else 1, base_channels=16, num_classes=n_classes)
    model = perturbed(build_model(config)).eval()
    x = torch.randn(2, 2) if kind == "mlp" else torch.randn(2, 1, 8, 8)
    t = torch.tensor([100, 200])
    with torch.no_grad():
        null = torch.full((2,), n_classes)
        torch.testing.assert_close(model(x, t), model(x, t, null), rtol=0, atol=0)
        outs = [model(x, t, torch.full((2,), label)) for label in range(n_classes + 1)]
    for i in range(len(outs)):
        for j in range(i):
            assert not torch.allclose(outs[i], outs[j], atol=1e-4), (i, j)


# ---------------------------------------------------------------------------------------------------------------
# ModelConfig


@pytest.mark.parametrize(
    "settings, match",
    [
        (dict(kind="transformer"), "unknown model kind 'transformer'; valid values: unet, mlp"),
        (dict(base_channels=4), r"base_channels must lie in \[8, 1024\], got 4"),
        (dict(base_channels=2048), r"base_channels must lie in \[8, 1024\], got 2048"),
        (dict(dropout=1.0), r"dropout must lie in \[0, 1\), got 1.0"),
        (dict(dropout=-0.1), r"dropout must lie in \[0, 1\), got -0.1"),
        (dict(num_classes=-1), "num_classes must be ≥ 0, got -1"),
        (dict(kind="mlp", num_layers=0), "num_layers must be ≥ 1, got 0"),
        (dict(in_channels=2), "the UNet takes 1 or 3 image channels, got 2"),
        (dict(in_channels=4), "the UNet takes 1 or 3 image channels, got 4"),
        (dict(image_size=4), "the UNet takes images of 8×8 up to 64×64, got 4×4"),
        (dict(image_size=128, channel_mults=(1, 2, 2, 2)), "8×8 up to 64×64, got 128×128"),
        (dict(channel_mults=()), "channel_mults must be positive"),
        (dict(channel_mults=(1, 0)), "channel_mults must be positive"),
        (dict(num_res_blocks=0), "num_res_blocks ≥ 1"),
        (dict(base_channels=20), "base_channels must be a multiple of 8 .*got 20"),
        (
            dict(image_size=28, channel_mults=(1, 2, 2, 2)),
            "image size 28 cannot be halved 3 times.*pad the images \\(e.g. MNIST's 28 to 32\\)",
        ),
        (dict(image_size=8, channel_mults=(1, 2, 2, 2)), "image size 8 cannot be halved 3 times down to ≥ 2 px"),
    ],
)
def test_invalid_model_configs_say_what_is_wrong(settings, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig(**settings)


def test_mlp_ignores_the_unet_only_settings():
    # in_channels is the point dimension and image_size is unused, so neither is held to the UNet's limits
    assert ModelConfig(kind="mlp", in_channels=2, image_size=0, channel_mults=()).in_channels == 2


@st.composite
def unet_configs(draw):
    levels = draw(st.integers(1, 3))
    size = draw(st.sampled_from([s for s in range(8, 65) if s % 2 ** (levels - 1) == 0 and s >> (levels - 1) >= 2]))
    return ModelConfig(
        in_channels=draw(st.sampled_from([1, 3])),
        image_size=size,
        base_channels=8 * draw(st.integers(1, 16)),
        channel_mults=tuple(draw(st.lists(st.integers(1, 4), min_size=levels, max_size=levels))),
        num_res_blocks=draw(st.integers(1, 3)),
        attention_resolutions=tuple(draw(st.lists(st.sampled_from([size >> k for k in range(levels)]), max_size=2))),
        dropout=draw(st.floats(0.0, 0.99)),
        num_classes=draw(st.integers(0, 10)),
    )


@settings(max_examples=100, deadline=None)
@given(unet_configs())
def test_model_config_survives_a_json_round_trip_and_stays_hashable(config):
    as_json = json.loads(json.dumps(config.to_dict()))
    assert isinstance(as_json["channel_mults"], list)  # JSON has no tuples
    again = ModelConfig.from_dict(as_json)
    assert again == config and ModelConfig.from_dict(config.to_dict()) == config
    assert isinstance(again.channel_mults, tuple) and isinstance(again.attention_resolutions, tuple)
    assert hash(again) == hash(config) and {again: 1}[config] == 1


def test_model_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown model setting\\(s\\): depth, width"):
        ModelConfig.from_dict({**ModelConfig().to_dict(), "width": 3, "depth": 2})


# ---------------------------------------------------------------------------------------------------------------
# Presets and the summary line


@pytest.mark.parametrize("name, in_channels", [("tiny", 1), ("tiny", 3), ("small", 1), ("small", 3), ("mlp", 2)])
def test_presets_build_and_run(name, in_channels):
    model = preset_model(name, in_channels)
    x = torch.randn(2, 2) if name == "mlp" else torch.randn(2, in_channels, 32, 32)
    with torch.no_grad():
        assert model.eval()(x, torch.tensor([0, 999])).shape == x.shape


def test_tiny_is_smaller_than_small():
    for channels in (1, 3):
        assert count_parameters(preset_model("tiny", channels)) < count_parameters(preset_model("small", channels))


@pytest.mark.parametrize("name, in_channels", [("tiny", 1), ("small", 3), ("mlp", 2)])
def test_describe_model_gives_the_parameter_count_with_thousands_separators(name, in_channels):
    model = preset_model(name, in_channels)
    config = model.config
    for line in (describe_model(config), describe_model(config, model)):
        number = re.fullmatch(r".* — (\d{1,3}(?:,\d{3})*) parameters", line)
        assert number, line
        assert int(number[1].replace(",", "")) == count_parameters(model) == sum(p.numel() for p in model.parameters())
    if name == "small":
        assert "attention at 8 px" in describe_model(config)


def test_count_parameters_follows_the_widths():
    # A 1×1 conv has c_in·c_out + c_out parameters: nothing else is counted.
    assert count_parameters(nn.Conv2d(3, 5, 1)) == 3 * 5 + 5
