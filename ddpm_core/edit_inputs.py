"""What the editing methods (ddpm_core.edit) take in: one sample's shape for a network, an input batch checked against
it, binary masks (1 = regenerate, 0 = keep) and their presets, and inputs read from .npy or .png files.
Every check raises ValueError with a message meant to be shown as it is (the CLI's error line, the Edit page).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ddpm_core.images import decode_image

IMAGE_PRESETS = ("left", "right", "top", "bottom", "center", "random")
POINT_PRESETS = ("x", "y")  # regenerate one coordinate of 2D points
MASK_PRESETS = IMAGE_PRESETS + POINT_PRESETS
PAINT_COVER = 0.5  # a pixel is regenerated when at least half of its cell is painted over


def sample_shape_of(model: nn.Module) -> tuple[int, ...]:
    """One sample's shape for a network of ddpm_core.models: (C, H, W) for a UNet, (D,) for the points' MLP."""
    c = model.config
    return (c.in_channels, c.image_size, c.image_size) if c.kind == "unet" else (c.in_channels,)


def check_input(x0: Tensor, shape: tuple[int, ...]) -> Tensor:
    """x0 as an (N, *shape) float batch (one sample of `shape` gets a batch axis); ValueError saying what is wrong."""
    if not isinstance(x0, Tensor) or not x0.dtype.is_floating_point:
        raise ValueError("the input must be a floating-point tensor")
    if tuple(x0.shape) == tuple(shape):
        x0 = x0.unsqueeze(0)
    if tuple(x0.shape[1:]) != tuple(shape) or len(x0) == 0:
        want = "×".join(map(str, shape)) if len(shape) > 1 else f"{shape[0]}-coordinate"
        raise ValueError(f"the input must be one {want} sample or a batch (N, {want}); got {tuple(x0.shape)}")
    if not torch.isfinite(x0).all():
        raise ValueError("the input holds NaN or infinite values")
    return x0


def check_mask(mask: Tensor, x0: Tensor) -> Tensor:
    """A binary mask (1 = regenerate, 0 = keep) that broadcasts against x0 (N, ...): one sample's shape, (H, W) for
    every channel, or a whole batch. Returned as x0's dtype; ValueError if it is not binary or not the right size."""
    mask = torch.as_tensor(mask)
    if mask.dim() == x0.dim() - 2 and x0.dim() == 4:
        mask = mask.unsqueeze(0)  # (H, W): every channel
    if mask.dim() == x0.dim() - 1:
        mask = mask.unsqueeze(0)
    fits = mask.dim() == x0.dim() and all(m in (1, s) for m, s in zip(mask.shape[1:], x0.shape[1:], strict=True))
    if not fits or mask.shape[0] not in (1, len(x0)):
        raise ValueError(f"the mask must match the input's shape {tuple(x0.shape[1:])}; got {tuple(mask.shape)}")
    if not ((mask == 0) | (mask == 1)).all():
        raise ValueError("the mask must be binary: 1 where to regenerate, 0 where to keep the input")
    if not mask.any():
        raise ValueError("the mask regenerates nothing: mark at least one pixel (or coordinate) with 1")
    return mask.to(x0.dtype)


def mask_preset(name: str, shape: tuple[int, ...], seed: int = 0) -> Tensor:
    """A mask of one sample's shape (1 = regenerate): left, right, top or bottom half, the center square (half the
    side), random (half the pixels, from seed) for images; x or y (one coordinate) for 2D points."""
    presets = POINT_PRESETS if len(shape) == 1 else IMAGE_PRESETS
    if name not in presets:
        raise ValueError(f"unknown mask preset {name!r} for this model; valid values: {', '.join(presets)}")
    mask = torch.zeros(shape)
    if len(shape) == 1:
        mask[POINT_PRESETS.index(name)] = 1
        return mask
    h, w = shape[-2:]
    if name == "left":
        mask[..., : w // 2] = 1
    elif name == "right":
        mask[..., w // 2 :] = 1
    elif name == "top":
        mask[..., : h // 2, :] = 1
    elif name == "bottom":
        mask[..., h // 2 :, :] = 1
    elif name == "center":
        mask[..., h // 4 : h - h // 4, w // 4 : w - w // 4] = 1
    else:
        pixels = torch.rand((h, w), generator=torch.Generator().manual_seed(seed)) < 0.5
        mask[..., pixels] = 1
    return mask


def mask_from_painting(alpha, shape: tuple[int, ...], cover: float = PAINT_COVER) -> Tensor:
    """A mask of one image's shape (C, H, W) from a painting over it: `alpha` (H', W'), the painted layer's opacity
    (0 = not painted) on a canvas of any size over the image. A pixel is regenerated (1) when at least `cover` of
    its cell of the canvas is painted. An unpainted canvas gives all zeros (check_mask then refuses it)."""
    if len(shape) != 3:
        raise ValueError("a painted mask is for images; a 2D points model regenerates a coordinate (x or y)")
    alpha = torch.as_tensor(np.asarray(alpha), dtype=torch.float64)
    if alpha.dim() != 2 or min(alpha.shape) < 1:
        raise ValueError(f"the painting must be one (height, width) layer; got {tuple(alpha.shape)}")
    if not 0 < cover <= 1:
        raise ValueError(f"cover must lie in (0, 1], got {cover}")
    painted = (alpha > 0).double()[None, None]
    share = torch.nn.functional.adaptive_avg_pool2d(painted, shape[-2:])[0, 0]  # the painted share of each cell
    return (share >= cover - 1e-9).float().expand(shape).clone()


def load_array(path: Path, shape: tuple[int, ...], what: str = "input") -> Tensor:
    """A .npy array or a .png/.jpg picture as a tensor for a model whose samples have `shape`: an image file is
    read as grayscale or RGB per the model's channels, resized to its size and scaled to [-1, 1] (for a mask, kept
    in [0, 1]: white = 1). ValueError naming the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} file {path} does not exist")
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise ValueError(f"{what} file {path} is not a readable .npy array: {e}") from None
        if not np.issubdtype(array.dtype, np.number) and array.dtype != bool:
            raise ValueError(f"{what} file {path} holds {array.dtype} values, not numbers")
        return torch.from_numpy(array.astype(np.float32))
    if len(shape) != 3:
        raise ValueError(f"this model's samples are {shape[0]}D points: give the {what} as a .npy array")
    image = decode_image(path.read_bytes(), size=shape[-1], channels=shape[0])  # ImageError is a ValueError
    return (image + 1) / 2 if what == "mask" else image
