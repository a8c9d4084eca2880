"""A newcomer's first Generate, in a real browser: start the app (`streamlit run explorer/app.py`), open the Sample
page in Chromium, press Generate with the page's defaults (the bundled MNIST model, DDIM-50, 64 samples) and wait
for the trajectory GIF. Goal (issue 28): the result within 30 s on a 2-core AVX2 CPU.

Each row starts a fresh server (so the first Generate is the server's first sampling, kernels not yet built): on a
quiet machine, and with one core busy with an unrelated process (a pure-Python loop), with the server choosing its
threads by measuring (ddpm_core.threads, now) and at torch's default threads (before).

Usage: python bench/bench_first_generate.py [--write]   (needs chromium at /usr/bin/chromium and Playwright)
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_threads import busy_core  # noqa: E402
from bench.bench_throughput import matmul_peak  # noqa: E402
from bench.bench_ui import Server, show  # noqa: E402
from bench.common import flags_line, machine, publish  # noqa: E402
from tests.conftest import CHROMIUM, CHROMIUM_FLAGS  # noqa: E402
from tests.test_browser import wait_for_app  # noqa: E402

CASES = [  # (label, an unrelated process busy on one core, the server's environment)
    ("quiet, threads by measuring (now)", False, {}),
    ("one core busy, threads by measuring (now)", True, {}),
    ("one core busy, torch's default threads (before)", True, {"DDPM_EXPLORER_TUNE_THREADS": "0"}),
]


def first_generate(browser, busy: bool, env: dict, tmp: Path, i: int) -> dict:
    os.environ.update(env)
    load = busy_core() if busy else None
    server = Server(tmp / f"runs{i}", tmp / f"server{i}.log")
    try:
        server.wait_healthy()
        page = browser.new_context(viewport={"width": 1400, "height": 2400}).new_page()
        opened = show(page, server.url, "sample.py")
        expected = page.get_by_text("Expected time: about", exact=False).first
        expected.wait_for(timeout=60_000)
        estimate = re.search(r"about ([\d.]+) (s|min)", expected.inner_text())
        start = time.perf_counter()
        page.get_by_role("button", name="Generate").click()
        page.locator("img[src^='data:image/gif']").wait_for(timeout=600_000)
        shown = time.perf_counter() - start
        wait_for_app(page)
        text = page.get_by_text(re.compile(r"64 samples \(DDIM, 50 steps")).first.inner_text()
        sampling = float(re.search(r"in ([\d.]+) s", text)[1])
        page.context.close()
    finally:
        server.stop()
        if load is not None:
            load.kill()
            load.wait()
        for key in env:
            os.environ.pop(key, None)
    factor = 60 if estimate and estimate[2] == "min" else 1
    return {"opened": opened, "expected": float(estimate[1]) * factor if estimate else float("nan"),
            "shown": shown, "sampling": sampling}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--write", action="store_true", help="append the table to bench/RESULTS.md")
    args = p.parse_args()
    import torch
    from playwright.sync_api import sync_playwright

    peak = matmul_peak(torch.get_num_threads(), 2048, 5)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            for i, (label, busy, env) in enumerate(CASES):
                rows.append((label, first_generate(browser, busy, env, Path(tmp), i)))
                print(rows[-1], flush=True)
        finally:
            browser.close()
    lines = [
        f"## The first Generate — {time.strftime('%Y-%m-%d')} — {machine()}",
        "",
        f"`python bench/bench_first_generate.py` — CPU flags: {flags_line()}; matmul peak {peak:.0f} GFLOP/s fp32 "
        "(2048², 2 threads). A fresh `streamlit run explorer/app.py` per row; Chromium opens the Sample page and "
        "presses Generate with its defaults (bundled MNIST model, DDIM-50, 64 samples); the time from the click "
        "until the trajectory GIF is on the page (sampling, the GIF, the grid and the metric), the page's own "
        "sampling time, and the expected time it showed before the click.",
        "",
        "| case | page opened | expected (shown before) | sampling (the page's) | click → result shown |",
        "| --- | --- | --- | --- | --- |",
    ]
    for label, r in rows:
        lines.append(f"| {label} | {r['opened']:.1f} s | {r['expected']:.1f} s | {r['sampling']:.1f} s "
                     f"| **{r['shown']:.1f} s** |")  # fmt: skip
    worst = max(r["shown"] for label, r in rows if "now" in label)
    lines += ["", f"- Goal ≤ 30 s: {'met' if worst <= 30 else 'missed'} ({worst:.1f} s at worst, now)."]
    publish(lines, args.write)


if __name__ == "__main__":
    main()
