"""Peak memory of decoding one upload (ddpm_core.images.decode_image), the worst files it lets through and the old way.

Each case runs in a process of its own (this file with --child), which reads its file, decodes it at the page's
largest size (256 px, RGB) and reports its peak resident size (VmHWM from /proc/self/status) and its resident size
after the call returned (VmRSS), each against its value just before the call.
"old way" is what decode_image did before the decoded-size cap: Image.open + load + image_to_tensor at full size, with
only the 40 MP limit on the header. The worst allowed files are real pictures (a dark/bright split with a gradient,
so that they compress under the 10 MB upload cap), just under MAX_DECODED_BYTES (RGBA: 4 bytes a pixel) or
MAX_PIXELS (16-bit gray, 2 bytes a pixel, and baseline JPEG, whose decoder scales down by 8), or for a progressive
JPEG, whose decoder keeps every coefficient (2 bytes each), just under MAX_DECODED_BYTES of them.

Usage: python bench/bench_upload_memory.py [--write]   (Linux: it reads /proc)
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIZE = 256  # the Forward process page's largest resolution
CHILD = """
import io, json, sys, threading, time
from pathlib import Path
import torch
from PIL import Image
from ddpm_core.images import decode_image, image_to_tensor, ImageError

def status(key):
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(key))
    return int(line.split()[1]) * 1024

def old_way(data, size, channels):
    img = Image.open(io.BytesIO(data), formats=("PNG", "JPEG"))
    img.draft(None, (size, size))
    img.load()
    return image_to_tensor(img, size, channels)

def decode():
    try:
        (old_way if how == "old" else decode_image)(data, size, 3)
        result["outcome"] = "decoded"
    except ImageError as err:
        result["outcome"] = f"refused: {err}"

how, path, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = Path(path).read_bytes()
result = {"hwm_before": status("VmHWM"), "rss_before": status("VmRSS")}
start = time.perf_counter()
worker = threading.Thread(target=decode)  # as Streamlit runs a page: its own thread, so its own malloc arena
worker.start()
worker.join()
result.update(seconds=time.perf_counter() - start, peak=status("VmHWM"), after=status("VmRSS"))
print(json.dumps(result))
"""


def _split_picture(width: int, height: int, mode: str):
    """Left dark, right bright, a vertical gradient on top: real pixels that compress well."""
    import numpy as np
    from PIL import Image

    ramp = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    value = np.where(np.arange(width) < width // 2, 0.1, 0.8)[None, :] + 0.15 * ramp  # (H, W) in [0.1, 0.95]
    if mode == "I;16":
        return Image.fromarray((value * 65535).astype(np.uint16))
    gray = (value * 255).astype(np.uint8)
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    pixels = np.repeat(gray[:, :, None], channels, axis=2)
    if mode == "RGBA":
        pixels[:, :, 3] = 255 - pixels[:, :, 0] // 2  # partly transparent: compositing is part of the work
    return Image.fromarray(pixels.squeeze(2) if channels == 1 else pixels, mode)


def _encode(img, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def cases() -> list[tuple[str, str, str, bytes]]:
    """(name, how: "new" or "old", declared W × H mode, file bytes)."""
    from ddpm_core.images import MAX_DECODED_BYTES, MAX_PIXELS
    from tests.test_forward import _png, _png_claiming

    rgba = math.isqrt(MAX_DECODED_BYTES // 4)  # the largest square RGBA PNG allowed now
    old = math.isqrt(MAX_PIXELS)  # the largest allowed before: 40 MP whatever the mode
    prog = math.isqrt(MAX_DECODED_BYTES // 3) - 64  # 4:2:0: 1.5 coefficients a pixel, 2 bytes each; the draft's room
    files = {
        "tiny": ("8 × 8 RGB", _png(_split_picture(8, 8, "RGB"))),
        "rgba": (f"{rgba:,} × {rgba:,} RGBA", _png(_split_picture(rgba, rgba, "RGBA"), compress_level=9)),
        "old rgba": (f"{old:,} × {old:,} RGBA", _png(_split_picture(old, old, "RGBA"), compress_level=9)),
        "16-bit": (f"{old:,} × {old:,} 16-bit gray", _png(_split_picture(old, old, "I;16"), compress_level=9)),
        "jpeg": (f"{old:,} × {old:,} RGB", _encode(_split_picture(old, old, "RGB"), "JPEG", quality=90)),
        "old progressive": (f"{old:,} × {old:,} RGB",
                            _encode(_split_picture(old, old, "RGB"), "JPEG", quality=90, progressive=True)),
        "progressive": (f"{prog:,} × {prog:,} RGB",
                        _encode(_split_picture(prog, prog, "RGB"), "JPEG", quality=90, progressive=True)),
        "bomb": ("6,000 × 6,000 RGBA", _png_claiming(6000, 6000, colour_type=6)),
    }  # fmt: skip
    plan = [
        ("baseline: tiny PNG", "new", "tiny"),
        ("worst allowed RGBA PNG", "new", "rgba"),
        ("  the same, old way", "old", "rgba"),
        ("old worst RGBA PNG (40 MP), now refused", "new", "old rgba"),
        ("  the same, old way", "old", "old rgba"),
        ("worst allowed 16-bit PNG (40 MP)", "new", "16-bit"),
        ("  the same, old way", "old", "16-bit"),
        ("worst allowed JPEG (40 MP, baseline)", "new", "jpeg"),
        ("worst allowed progressive JPEG (4:2:0)", "new", "progressive"),
        ("  the same, old way", "old", "progressive"),
        ("old worst progressive JPEG (40 MP), now refused", "new", "old progressive"),
        ("  the same, old way", "old", "old progressive"),
        ("refused header (a 200-byte PNG)", "new", "bomb"),
    ]
    return [(name, how, files[key][0], files[key][1]) for name, how, key in plan]


def run_case(how: str, data: bytes, folder: Path) -> dict:
    path = folder / "upload"
    path.write_bytes(data)
    cmd = [sys.executable, "-c", CHILD, how, str(path), str(SIZE)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--write", action="store_true", help="append the table to bench/RESULTS.md")
    args = p.parse_args()
    import PIL
    import torch

    from bench.bench_throughput import matmul_peak
    from bench.common import flags_line, machine, publish
    from ddpm_core.images import MAX_DECODED_BYTES, MAX_PIXELS

    peak = matmul_peak(torch.get_num_threads(), 2048, 5)
    print(f"{machine()}; CPU flags: {flags_line()}; matmul peak {peak:,.0f} GFLOP/s fp32; Pillow {PIL.__version__}",
          flush=True)  # fmt: skip
    mb = lambda n: f"{n / 1e6:,.0f} MB"  # noqa: E731
    rows, refusals = [], []
    with tempfile.TemporaryDirectory() as folder:
        for name, how, declared, data in cases():
            r = run_case(how, data, Path(folder))
            outcome = r["outcome"] if r["outcome"] == "decoded" else "refused"
            rows.append(f"| {name} | {how} | {len(data) / 1e6:,.2f} MB | {declared} | {outcome} | {mb(r['peak'])} | "
                        f"{mb(r['peak'] - r['hwm_before'])} | {mb(r['after'])} | {mb(r['after'] - r['rss_before'])} | "
                        f"{r['seconds']:.2f} |")  # fmt: skip
            refusals += [] if outcome == "decoded" else [f"- {name}: {r['outcome'].removeprefix('refused: ')}"]
            print(rows[-1], flush=True)
    lines = [
        f"## Upload memory — {time.strftime('%Y-%m-%d')} — {machine()}",
        "",
        f"`python bench/bench_upload_memory.py`: one process per case decodes one file at {SIZE} px, RGB "
        f"(decode_image, or the old way: full-size load + image_to_tensor). Limits now: {MAX_PIXELS / 1e6:.0f} MP "
        f"and {MAX_DECODED_BYTES / 1e6:.0f} MB to decode, from the header. The decode runs in a thread, as a Streamlit "
        "page does. Peak: VmHWM; Δ peak: over the process's VmHWM before the call (imports + the file read); after: "
        f"VmRSS once the call returned, and its Δ over VmRSS before the call. CPU flags: {flags_line()}; matmul "
        f"peak {peak:,.0f} GFLOP/s fp32 (2048², {torch.get_num_threads()} threads); Pillow {PIL.__version__}.",
        "",
        "| case | code | file | declared | outcome | peak RSS | Δ peak | RSS after | Δ after | decode s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        "Refusals, as the page shows them:",
        *refusals,
    ]
    publish(lines, args.write)


if __name__ == "__main__":
    main()
