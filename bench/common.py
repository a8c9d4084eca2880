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
