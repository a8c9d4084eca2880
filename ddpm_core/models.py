"""The noise predictors ε_θ(x_t, t): a compact UNet for images and a residual MLP for 2D points.

Both take x_t (B, C, H, W) or (B, D) and integer timesteps t (B,) and return ε̂ of x_t's shape. Both embed t with
the sinusoidal embedding of "Attention is all you need" (sin and cos halves, frequencies 1/10000^(2i/d)) followed
by a small MLP, and accept optional class labels y (B,) — label `num_classes` is the null class used for
classifier-free guidance. Normalisation is GroupNorm/LayerNorm, never BatchNorm: a denoiser sees batches that mix
every noise level, and BatchNorm's batch statistics would couple the samples and differ between train and sample.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ddpm_core.diffusion import PREDICTION_TYPES
from ddpm_core.model_limits import check_model_size

ModelKind = Literal["unet", "mlp"]


@dataclass(frozen=True)
class ModelConfig:
    kind: ModelKind = "unet"
    in_channels: int = 1  # image channels (unet) or point dimension (mlp)
    image_size: int = 8  # unet only: H = W
    base_channels: int = 32  # unet: width of the first level; mlp: hidden width
    channel_mults: tuple[int, ...] = (1, 2)  # unet: width multiplier per resolution level (each level halves H, W)
    num_res_blocks: int = 1  # unet: residual blocks per level
    attention_resolutions: tuple[int, ...] = ()  # unet: resolutions (in px) that get self-attention
    num_layers: int = 4  # mlp: residual blocks
    dropout: float = 0.0
    num_classes: int = 0  # > 0: class-conditional, with one extra null label for guidance
    patch_size: int = 1  # unet: > 1 folds each p×p patch into channels first (pixel-unshuffle), unfolds at the end
    prediction: str = "eps"  # what the output stands for: eps, x0 or v (ddpm_core.objectives); samplers read it

    def __post_init__(self):
        # JSON gives lists; keep tuples so the config stays hashable
        object.__setattr__(self, "channel_mults", tuple(self.channel_mults))
        object.__setattr__(self, "attention_resolutions", tuple(self.attention_resolutions))
        validate_model_config(self)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown model setting(s): {', '.join(sorted(unknown))}")
        return cls(**d)


# Presets: "tiny" trains in a minute on a laptop CPU (digits 8×8); "patch" is MNIST's 28×28 on a CPU: 2×2 patches
# folded into channels, so its 32 and 64 channels work at 14 and 7 px, where a CPU computes them more efficiently than
# tiny's 16 channels at 28 px (bench/RESULTS.md); "small" is for GPU runs on MNIST/CIFAR at 32×32.
PRESETS: dict[str, dict] = {
    "tiny": dict(base_channels=16, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=()),
    "patch": dict(base_channels=32, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(), patch_size=2),
    "small": dict(base_channels=64, channel_mults=(1, 2, 2), num_res_blocks=2, attention_resolutions=(8,), dropout=0.1),
    "mlp": dict(kind="mlp", base_channels=128, num_layers=3),
}


# Upper bounds on every field that scales memory or time: generous for real use (the presets, and all the Train page
# makes, lie well inside), small enough that a stranger's checkpoint cannot make the server build a network without
# end. check_model_size then bounds what the fields imply together (parameters, activations).
MAX_IN_CHANNELS, MAX_CLASSES, MAX_LAYERS, MAX_BLOCKS, MAX_LEVELS, MAX_MULT = 64, 1000, 64, 8, 6, 8


def _whole(name: str, value, lo: int, hi: int, check_range: bool = True) -> None:
    """A JSON number that is not a whole number (2.5, true) would fail deep inside the network, or loop forever."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a whole number in [{lo}, {hi}], got {value!r}")
    if check_range and value > hi:
        raise ValueError(f"{name} must lie in [{lo}, {hi}], got {value}")


def validate_model_config(c: ModelConfig) -> None:
    """ValueError naming the first field out of range, or a network too large to build (nothing is built)."""
    if c.kind not in ("unet", "mlp"):
        raise ValueError(f"unknown model kind {c.kind!r}; valid values: unet, mlp")
    _whole("in_channels", c.in_channels, 1, MAX_IN_CHANNELS)
    _whole("base_channels", c.base_channels, 8, 1024)
    _whole("num_classes", c.num_classes, 0, MAX_CLASSES)
    if isinstance(c.dropout, bool) or not isinstance(c.dropout, int | float):
        raise ValueError(f"dropout must be a number in [0, 1), got {c.dropout!r}")
    if c.in_channels < 1:
        raise ValueError(f"in_channels must lie in [1, {MAX_IN_CHANNELS}], got {c.in_channels}")
    if c.base_channels < 8 or c.base_channels > 1024:
        raise ValueError(f"base_channels must lie in [8, 1024], got {c.base_channels}")
    if not 0.0 <= c.dropout < 1.0:
        raise ValueError(f"dropout must lie in [0, 1), got {c.dropout}")
    if c.num_classes < 0:
        raise ValueError(f"num_classes must be ≥ 0, got {c.num_classes}")
    if c.prediction not in PREDICTION_TYPES:
        raise ValueError(f"unknown prediction type {c.prediction!r}; valid values: {', '.join(PREDICTION_TYPES)}")
    if c.kind == "mlp":
        _whole("num_layers", c.num_layers, 1, MAX_LAYERS)
        if c.num_layers < 1:
            raise ValueError(f"num_layers must be ≥ 1, got {c.num_layers}")
        check_model_size(c)
        return
    _whole("image_size", c.image_size, 8, 64, check_range=False)  # ranges checked below, with their own messages
    _whole("patch_size", c.patch_size, 1, 4, check_range=False)
    _whole("num_res_blocks", c.num_res_blocks, 1, MAX_BLOCKS)
    if c.in_channels not in (1, 3):
        raise ValueError(f"the UNet takes 1 or 3 image channels, got {c.in_channels}")
    if not 8 <= c.image_size <= 64:
        raise ValueError(f"the UNet takes images of 8×8 up to 64×64, got {c.image_size}×{c.image_size}")
    if len(c.channel_mults) > MAX_LEVELS:
        raise ValueError(f"channel_mults must have 1 to {MAX_LEVELS} levels, got {len(c.channel_mults)}")
    for m in c.channel_mults:
        _whole("each of channel_mults", m, 1, MAX_MULT)
    if not c.channel_mults or any(m < 1 for m in c.channel_mults) or c.num_res_blocks < 1:
        raise ValueError("channel_mults must be positive and num_res_blocks ≥ 1")
    if len(c.attention_resolutions) > MAX_LEVELS:
        raise ValueError(f"attention_resolutions may list at most {MAX_LEVELS} sizes, got {c.attention_resolutions}")
    for r in c.attention_resolutions:
        _whole("each of attention_resolutions", r, 1, 64)
    if c.base_channels % 8:
        raise ValueError(f"base_channels must be a multiple of 8 (GroupNorm groups), got {c.base_channels}")
    if c.patch_size not in (1, 2, 4) or c.image_size % c.patch_size:
        raise ValueError(f"patch_size must be 1, 2 or 4 and divide the image size {c.image_size}, got {c.patch_size}")
    factor = 2 ** (len(c.channel_mults) - 1) * c.patch_size
    if c.image_size % factor or c.image_size // factor < 2:
        raise ValueError(
            f"image size {c.image_size} cannot be halved {len(c.channel_mults) - 1} times"
            f"{f' after {c.patch_size}×{c.patch_size} patches' if c.patch_size > 1 else ''} down to ≥ 2 px; "
            f"use fewer channel_mults or pad the images (e.g. MNIST's 28 to 32)"
        )
    check_model_size(c)


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal embedding of integer timesteps: [sin(t ω_i), cos(t ω_i)], ω_i = 1/max_period^(2i/dim).

    t: (B,) int or float. Returns (B, dim) float32 (zero-padded when dim is odd).
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


class TimeEmbedding(nn.Module):
    """t (and an optional label y) → a (B, dim) conditioning vector: sinusoidal features through a 2-layer MLP."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.freq_dim = dim // 4 if dim >= 64 else dim
        self.mlp = nn.Sequential(nn.Linear(self.freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.num_classes = num_classes
        self.label = nn.Embedding(num_classes + 1, dim) if num_classes else None

    def forward(self, t: Tensor, y: Tensor | None = None) -> Tensor:
        emb = self.mlp(timestep_embedding(t, self.freq_dim))
        if self.label is not None:
            if y is None:
                y = torch.full_like(t, self.num_classes)  # unconditional: the null label
            emb = emb + self.label(y)
        return emb


def group_norm(channels: int) -> nn.GroupNorm:
    """About 4 channels per group and at most 32 groups, in a count that divides `channels` (144 → 24, not 32)."""
    target = min(32, channels // 4) if channels >= 32 else 8 if channels % 8 == 0 else 1
    return nn.GroupNorm(max(g for g in range(1, target + 1) if channels % g == 0), channels)


def zero(module: nn.Module) -> nn.Module:
    """Zero-initialise the last layer of a residual branch, so each block starts as the identity."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """GroupNorm → SiLU → conv, plus the time embedding, then GroupNorm → SiLU → dropout → conv, plus a skip."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float):
        super().__init__()
        self.in_layers = nn.Sequential(group_norm(c_in), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, padding=1))
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, c_out))
        self.out_layers = nn.Sequential(
            group_norm(c_out), nn.SiLU(), nn.Dropout(dropout), zero(nn.Conv2d(c_out, c_out, 3, padding=1))
        )
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.in_layers(x) + self.emb(emb)[:, :, None, None]  # (B, C_out, H, W)
        return self.skip(x) + self.out_layers(h)


class Attention(nn.Module):
    """Multi-head self-attention over the H·W positions, as a residual block."""

    def __init__(self, channels: int, head_dim: int = 32):
        super().__init__()
        # about head_dim channels per head, in a head count that divides channels (112 → 2 heads of 56, not 3)
        self.heads = max(h for h in range(1, max(1, channels // head_dim) + 1) if channels % h == 0)
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W).transpose(-1, -2).unbind(1)
        h = F.scaled_dot_product_attention(q, k, v)  # (B, heads, H·W, C/heads)
        return x + self.proj(h.transpose(-1, -2).reshape(B, C, H, W))


class UNet(nn.Module):
    """ε_θ for images: (B, C, H, W), t (B,) → (B, C, H, W). Levels halve H and W; skips join the up path."""

    def __init__(self, c: ModelConfig):
        super().__init__()
        self.config = c
        emb_dim = 4 * c.base_channels
        self.time_embed = TimeEmbedding(emb_dim, c.num_classes)
        p = c.patch_size  # the network sees (B, C·p², H/p, W/p): a p× smaller grid, p² × the channels
        self.unshuffle = nn.PixelUnshuffle(p)  # no weights: checkpoints without patches load unchanged
        self.input = nn.Conv2d(c.in_channels * p * p, c.base_channels, 3, padding=1)

        def block(c_in: int, c_out: int, res: int) -> nn.ModuleList:
            layers = [ResBlock(c_in, c_out, emb_dim, c.dropout)]
            if res in c.attention_resolutions:
                layers.append(Attention(c_out))
            return nn.ModuleList(layers)

        self.down, skips, ch, res = nn.ModuleList(), [c.base_channels], c.base_channels, c.image_size // p
        for level, mult in enumerate(c.channel_mults):
            for _ in range(c.num_res_blocks):
                self.down.append(block(ch, mult * c.base_channels, res))
                ch = mult * c.base_channels
                skips.append(ch)
            if level < len(c.channel_mults) - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(ch, ch, 3, stride=2, padding=1)]))
                skips.append(ch)
                res //= 2
        self.middle = nn.ModuleList(
            [ResBlock(ch, ch, emb_dim, c.dropout), Attention(ch), ResBlock(ch, ch, emb_dim, c.dropout)]
        )
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(c.channel_mults))):
            for i in range(c.num_res_blocks + 1):
                self.up.append(block(ch + skips.pop(), mult * c.base_channels, res))
                ch = mult * c.base_channels
                if level > 0 and i == c.num_res_blocks:
                    upsample = nn.Sequential(
                        nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, ch, 3, padding=1)
                    )
                    self.up[-1].append(upsample)
                    res *= 2
        self.out = nn.Sequential(
            group_norm(ch), nn.SiLU(), zero(nn.Conv2d(ch, c.in_channels * p * p, 3, padding=1)), nn.PixelShuffle(p)
        )

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        emb = self.time_embed(t, y)  # (B, 4·base)
        h = self.input(self.unshuffle(x))
        hs = [h]
        for layers in self.down:
            h = _apply(layers, h, emb)
            hs.append(h)
        for layer in self.middle:
            h = layer(h, emb)
        for layers in self.up:
            h = _apply(layers, torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h)


def _apply(layers: nn.ModuleList, h: Tensor, emb: Tensor) -> Tensor:
    for layer in layers:
        h = layer(h, emb) if isinstance(layer, ResBlock | Attention) else layer(h)
    return h


class MLPDenoiser(nn.Module):
    """ε_θ for points: (B, D), t (B,) → (B, D); residual blocks LayerNorm → Linear → SiLU → Linear, plus t."""

    def __init__(self, c: ModelConfig):
        super().__init__()
        self.config = c
        width = c.base_channels
        self.time_embed = TimeEmbedding(width, c.num_classes)
        self.input = nn.Linear(c.in_channels, width)
        self.blocks = nn.ModuleList(
            nn.ModuleDict(
                {
                    "emb": nn.Linear(width, width),
                    "mlp": nn.Sequential(
                        nn.LayerNorm(width),
                        nn.Linear(width, width),
                        nn.SiLU(),
                        nn.Dropout(c.dropout),
                        zero(nn.Linear(width, width)),
                    ),
                }
            )
            for _ in range(c.num_layers)
        )
        self.out = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, c.in_channels))

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        emb = F.silu(self.time_embed(t, y))  # (B, width)
        h = self.input(x)
        for block in self.blocks:
            h = h + block["mlp"](h + block["emb"](emb))
        return self.out(h)


def build_model(config: ModelConfig) -> nn.Module:
    """The network a ModelConfig describes, freshly initialised."""
    return UNet(config) if config.kind == "unet" else MLPDenoiser(config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def describe_model(config: ModelConfig, model: nn.Module | None = None) -> str:
    """One line for the config summary: the architecture and its parameter count."""
    n = count_parameters(model if model is not None else build_model(config))
    if config.kind == "mlp":
        shape = f"residual MLP, {config.num_layers} blocks × {config.base_channels} wide"
    else:
        at = config.attention_resolutions
        attn = f", attention at {', '.join(map(str, at))} px" if at else ""
        p = config.patch_size
        patches = f" on {p}×{p} patches" if p > 1 else ""
        shape = (
            f"UNet{patches} for {config.image_size}×{config.image_size}×{config.in_channels}, widths "
            f"{', '.join(str(m * config.base_channels) for m in config.channel_mults)}, "
            f"{config.num_res_blocks} block(s)/level{attn}"
        )
    return f"{shape} — {n:,} parameters"
