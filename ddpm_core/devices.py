"""Which torch device to run on: ``auto`` picks CUDA, then Apple's MPS, then the CPU."""

from __future__ import annotations

from typing import Literal, get_args

import torch

DeviceName = Literal["auto", "cpu", "cuda", "mps"]


def mps_available() -> bool:
    return hasattr(torch.backends, "mps") and torch.backends.mps.is_available()


def resolve_device(name: str = "auto") -> torch.device:
    """The torch.device for ``name``; raises ValueError when it is unknown or not present on this machine."""
    if name not in get_args(DeviceName):
        raise ValueError(f"unknown device {name!r}; valid values: {', '.join(get_args(DeviceName))}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device 'cuda' was asked for, but torch finds no CUDA GPU on this machine; use 'cpu' or 'auto'"
        )
    if name == "mps" and not mps_available():
        raise ValueError("device 'mps' was asked for, but this machine has no Apple GPU; use 'cpu' or 'auto'")
    return torch.device(name)


def describe_device(device: torch.device) -> str:
    """A one-line, human description: the GPU's name and memory, or the CPU's thread count."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"CUDA GPU: {props.name} ({props.total_memory / 2**30:.0f} GiB)"
    if device.type == "mps":
        return "Apple GPU (MPS)"
    return f"CPU ({torch.get_num_threads()} threads) — no GPU found"
