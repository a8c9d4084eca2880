"""Which torch device to run on: ``auto`` picks CUDA, then Apple's MPS, then the CPU."""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Literal, get_args

import torch
from torch import nn

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


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (avx2, avx512f, avx512_bf16, amx_bf16, …); empty elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    flags = next((line.split(":", 1)[1] for line in text.splitlines() if line.startswith("flags")), "")
    return frozenset(flags.split())


def cpu_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX-512 BF16 or AMX), where bf16 autocast pays
    (bench/RESULTS.md); on an AVX2-only CPU it would be emulated, and slower."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def uses_bf16(device: torch.device, mixed_precision: bool, cpu_bf16: bool) -> bool:
    """Whether a run trains in bf16 autocast on device: on CUDA when mixed_precision, on a CPU with native bf16 when
    cpu_bf16; float32 everywhere else."""
    if device.type == "cuda":
        return mixed_precision
    return device.type == "cpu" and cpu_bf16 and cpu_native_bf16()


def precision(device: torch.device, config) -> contextlib.AbstractContextManager:
    """The autocast context a TrainConfig trains its network in on device (uses_bf16); a no-op for float32."""
    if not uses_bf16(device, config.mixed_precision, config.cpu_bf16):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


class BF16Network(nn.Module):
    """A network run in bf16 autocast, its output returned as float32: the samplers' arithmetic, guidance's
    difference of two outputs and any scoring stay in float32. Keeps the network's config (what it predicts)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.config = model, getattr(model, "config", None)

    def forward(self, *args, **kwargs):
        device = next(self.model.parameters()).device
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return self.model(*args, **kwargs).float()


def for_sampling(model: nn.Module, config) -> nn.Module:
    """The network to sample a checkpoint of config with: in bf16 on a CPU with native bf16 when it was trained so
    (cpu_bf16), else as it is (float32; CUDA samples in float32 as before)."""
    device = next(model.parameters()).device
    return BF16Network(model) if device.type == "cpu" and config.cpu_bf16 and cpu_native_bf16() else model
