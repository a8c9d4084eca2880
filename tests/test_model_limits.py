"""ddpm_core.model_limits: the size of a network, computed from its config before anything is built."""

from __future__ import annotations

import random
import time

import pytest
import torch

from ddpm_core.config import TrainConfig
from ddpm_core.model_limits import MAX_ACTIVATIONS, MAX_PARAMETERS, estimate_model_size
from ddpm_core.models import PRESETS, Attention, ModelConfig, build_model, count_parameters
from ddpm_core.recipes import RECIPES, recipe_config

PRESET_CONFIGS = {
    "tiny": ModelConfig(**PRESETS["tiny"]),
    "patch": ModelConfig(image_size=28, **PRESETS["patch"]),
    "small": ModelConfig(image_size=32, in_channels=3, num_classes=10, **PRESETS["small"]),
    "mlp": ModelConfig(in_channels=2, **PRESETS["mlp"]),
}


def random_small_configs(n: int, seed: int = 0) -> list[ModelConfig]:
    rng, out = random.Random(seed), []
    while len(out) < n:
        if rng.random() < 0.25:
            out.append(ModelConfig(kind="mlp", in_channels=rng.choice([2, 3]), base_channels=rng.choice([16, 48, 96]),
                                   num_layers=rng.randint(1, 4), num_classes=rng.choice([0, 3])))  # fmt: skip
            continue
        levels, size = rng.randint(1, 3), rng.choice([8, 16])
        out.append(ModelConfig(
            in_channels=rng.choice([1, 3]), image_size=size, base_channels=rng.choice([8, 16, 24, 40]),
            channel_mults=tuple(rng.randint(1, 3) for _ in range(levels)), num_res_blocks=rng.randint(1, 2),
            attention_resolutions=tuple(r for r in (16, 8, 4) if rng.random() < 0.4), num_classes=rng.choice([0, 10]),
            patch_size=rng.choice([1, 2]) if levels < 3 else 1,
        ))  # fmt: skip
    return out


def measured_activations(c: ModelConfig) -> int:
    """The outputs of every leaf module in one forward pass of one sample, and the attention scores (heads × (H·W)²,
    which scaled_dot_product_attention keeps without a module of their own)."""
    model, total = build_model(c).eval(), [0]

    def scores(mod, inp, out):
        total[0] += mod.heads * (out.shape[-1] * out.shape[-2]) ** 2

    for m in model.modules():
        if isinstance(m, Attention):
            m.register_forward_hook(scores)
        if not list(m.children()):
            m.register_forward_hook(lambda mod, inp, out: total.__setitem__(0, total[0] + out.numel()))
    shape = (1, c.in_channels) if c.kind == "mlp" else (1, c.in_channels, c.image_size, c.image_size)
    with torch.no_grad():
        model(torch.randn(shape), torch.tensor([7]))
    return total[0]


@pytest.mark.parametrize("config", [*PRESET_CONFIGS.values(), *random_small_configs(12)], ids=str)
def test_the_arithmetic_matches_the_built_network(config):
    params, acts = estimate_model_size(config)
    assert params == count_parameters(build_model(config))  # exact, not a bound
    # an estimate of what one forward pass holds, within a factor of 2 (either way) of the tensors measured
    measured = measured_activations(config)
    assert measured / 2 <= acts <= 2 * measured


def test_presets_recipes_and_the_widest_train_page_widths_pass():
    for c in PRESET_CONFIGS.values():
        assert estimate_model_size(c)[0] < MAX_PARAMETERS / 10
    for slug in RECIPES:
        recipe_config(slug)
    for size in (32, 64):  # the small preset at 256 channels: the widest sensible GPU run
        c = TrainConfig(model="small", base_channels=256, image_size=size).model_config(3, size, 10)
        params, acts = estimate_model_size(c)
        assert params <= MAX_PARAMETERS and acts <= MAX_ACTIVATIONS


def test_an_unbounded_config_is_refused_in_microseconds():
    start = time.perf_counter()
    for change in (
        dict(num_res_blocks=10**6),
        dict(channel_mults=(1,) * 10**6),
        dict(base_channels=1024, channel_mults=(8, 8)),
    ):
        with pytest.raises(ValueError, match=r"must|would"):
            ModelConfig(**change)
    assert time.perf_counter() - start < 0.5  # nothing was built or looped over a million times
