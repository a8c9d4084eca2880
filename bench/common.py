"""What every bench script shares: the machine line of a results section, and appending a section to RESULTS.md."""

from __future__ import annotations

import platform
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"


def machine() -> str:
    """ "AMD EPYC …, 2 threads, torch 2.14.1" (or the GPU's name when CUDA is there)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}, {torch.get_num_threads()} threads{gpu}, torch {torch.__version__}"


def flags_line() -> str:
    """The CPU flags that decide the precision path: "avx2, avx512f, avx512_bf16" (or none of them)."""
    from ddpm_core.devices import cpu_flags

    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    return ", ".join(f for f in wanted if f in cpu_flags()) or "none of AVX2 / AVX-512"


def precision_path(bf16: bool) -> str:
    """The CPU class and precision a run computes in: "AVX2 fp32", "AVX-512 fp32", "AVX-512 BF16 bf16", "AMX bf16"."""
    from ddpm_core.devices import cpu_flags

    flags = cpu_flags()
    if bf16:
        return "AMX bf16" if "amx_bf16" in flags else "AVX-512 BF16 bf16"
    return "AVX-512 fp32" if "avx512f" in flags else "AVX2 fp32" if "avx2" in flags else "fp32"


def append_results(lines: list[str]) -> None:
    """Append one section (its lines) to bench/RESULTS.md, one blank line apart from the previous one."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    gap = "" if text.endswith("\n\n") else "\n"
    RESULTS.write_text(text + gap + "\n".join(lines).rstrip("\n") + "\n")


def publish(lines: list[str], write: bool) -> None:
    """Print a section, and with --write append it to bench/RESULTS.md."""
    print("\n".join(lines))
    if write:
        append_results(lines)
