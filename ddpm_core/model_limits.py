"""What a ModelConfig will cost, computed from the config alone, before a single tensor is allocated.

A checkpoint's metadata or a config file is untrusted on a shared server: num_res_blocks = 10**6 would build (and
allocate) a network without end. `check_model_size` walks the same structure as models.UNet / MLPDenoiser with
integers only, and refuses a network over MAX_PARAMETERS or MAX_ACTIVATIONS.

Limits, and why:
- MAX_PARAMETERS = 256 M: the "small" GPU preset has 6.5 M, small at 256 channels (the widest sensible Train page
  choice) 103 M, and the widest UNets this repository's own tests build (tests/test_models.py: 512 channels, three
  levels of three blocks) 171 M. 256 M float32 weights are 1 GB; with the EMA copy, gradients and AdamW's two moments
  a trainer holds ~5 GB: a GPU's share, not a server's memory.
- MAX_ACTIVATIONS = 640 M values per sample (2.5 GB in float32) for one forward pass: the tensors a pass keeps (for
  the backward pass), plus the largest attention score matrix, heads × (H·W)², as the math kernel of
  scaled_dot_product_attention builds it one layer at a time. Small at 256 channels on 64 px needs ~94 M; the widest
  tests above ~560 M; attention at 64 px on 1024 channels (~800 M) is refused.
The parameter count is exact (tested against count_parameters(build_model(c))); the activation count is an upper
estimate of the tensors one forward pass holds, tested within a factor of 2 of those measured by hooks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ddpm_core.models import ModelConfig

MAX_PARAMETERS = 256_000_000
MAX_ACTIVATIONS = 640_000_000


def _linear(i: int, o: int) -> int:
    return i * o + o


def _conv(i: int, o: int, k: int) -> int:
    return i * o * k * k + o


def _heads(channels: int, head_dim: int = 32) -> int:
    return max(h for h in range(1, max(1, channels // head_dim) + 1) if channels % h == 0)


def estimate_model_size(c: ModelConfig) -> tuple[int, int]:
    """(parameters, activation floats per sample of one forward pass) of the network `c` describes.

    Assumes the fields were range-checked first (validate_model_config): loops run over levels and blocks only.
    """
    emb = 4 * c.base_channels if c.kind == "unet" else c.base_channels
    freq = emb // 4 if emb >= 64 else emb
    params = _linear(freq, emb) + _linear(emb, emb) + ((c.num_classes + 1) * emb if c.num_classes else 0)
    if c.kind == "mlp":
        w = c.base_channels
        params += _linear(c.in_channels, w) + 2 * w  # input; the final LayerNorm's weight and bias
        params += c.num_layers * (_linear(w, w) + 2 * w + 2 * _linear(w, w)) + _linear(w, c.in_channels)
        return params, (6 * c.num_layers + 4) * w + 2 * emb

    p, b = c.patch_size, c.base_channels
    acts = scores = 0

    def resblock(ci: int, co: int, res: int) -> int:
        nonlocal acts
        acts += (2 * ci + 5 * co) * res * res  # norm, act in; conv, +emb, norm, act, conv out
        return (
            2 * ci
            + _conv(ci, co, 3)
            + _linear(emb, co)
            + 2 * co
            + _conv(co, co, 3)
            + (_linear(ci, co) if ci != co else 0)
        )

    def attention(ch: int, res: int) -> int:
        nonlocal acts, scores
        acts += 6 * ch * res * res  # norm, qkv, out, proj
        scores = max(scores, _heads(ch) * (res * res) ** 2)  # the H·W × H·W scores: one layer's at a time
        return 2 * ch + _conv(ch, 3 * ch, 1) + _conv(ch, ch, 1)

    res = c.image_size // p
    params += _conv(c.in_channels * p * p, b, 3)
    acts += 2 * c.in_channels * c.image_size**2 + b * res * res
    skips, ch = [b], b
    for level, mult in enumerate(c.channel_mults):
        for _ in range(c.num_res_blocks):
            params += resblock(ch, mult * b, res)
            ch = mult * b
            if res in c.attention_resolutions:
                params += attention(ch, res)
            skips.append(ch)
        if level < len(c.channel_mults) - 1:
            params += _conv(ch, ch, 3)
            res //= 2
            acts += ch * res * res
            skips.append(ch)
    params += 2 * resblock(ch, ch, res) + attention(ch, res)
    for level, mult in reversed(list(enumerate(c.channel_mults))):
        for i in range(c.num_res_blocks + 1):
            skip = skips.pop()
            acts += (ch + skip) * res * res  # the concatenation
            params += resblock(ch + skip, mult * b, res)
            ch = mult * b
            if res in c.attention_resolutions:
                params += attention(ch, res)
            if level > 0 and i == c.num_res_blocks:
                params += _conv(ch, ch, 3)
                res *= 2
                acts += 2 * ch * res * res
    params += 2 * ch + _conv(ch, c.in_channels * p * p, 3)
    acts += 2 * ch * res * res + 2 * c.in_channels * c.image_size**2
    return params, acts + scores


def check_model_size(c: ModelConfig) -> None:
    """ValueError when the network `c` describes is over MAX_PARAMETERS or MAX_ACTIVATIONS (nothing is built)."""
    params, acts = estimate_model_size(c)
    if params > MAX_PARAMETERS:
        raise ValueError(
            f"this model would have {params:,} parameters; at most {MAX_PARAMETERS:,} are allowed "
            f"(use fewer or narrower levels: base_channels, channel_mults, num_res_blocks, num_layers)"
        )
    if acts > MAX_ACTIVATIONS:
        raise ValueError(
            f"one forward pass of this model would hold {acts:,} values per sample; at most {MAX_ACTIVATIONS:,} are "
            f"allowed (attention at high resolutions and wide early levels cost the most)"
        )
