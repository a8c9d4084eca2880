"""Choosing torch's thread count by measuring, for a loop of like steps (training steps, sampling steps).

On a 2-core laptop with another program busy on one core, torch at its default 2 threads ran 3–6× slower than at 1
thread (a tiny model's steps up to 35×): GNU OpenMP's threads spin at every barrier waiting for the one whose core
is taken. No setting is right for
every moment, so ThreadTuner measures: a few steps at one thread fewer than it may use, then at all of them, and
keeps the faster; it measures again when the step time jumps (slower on every thread: another program came; faster on
fewer: it left) and, while it runs on fewer threads than it may, now and then, less often each time the answer stays
the same. A probe of the slower count ends after its first step that is clearly slower. bench/bench_threads.py
measures it against a busy core.

    tuner = ThreadTuner()                       # at most torch's threads now
    for batch in batches:
        set_threads(tuner.threads)              # the count to measure or to keep, in the thread that computes
        tick = time.perf_counter()
        train_step(batch)
        tuner.observe(time.perf_counter() - tick)
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import torch

PROBE_STEPS = 3  # steps measured at each thread count (their median)
JUMP = 1.5  # a step-time median this far off the chosen count's makes it measure again
SPIKE = 4.0  # one step this much slower than usual on every thread: measure again at once
CLEARLY_SLOWER = 2.0  # a probe step this much slower than the best so far ends that count's probe
RECHECK_S = 60.0  # while on fewer threads than allowed: measure again after this long, doubling up to …
RECHECK_MAX_S = 480.0
WINDOW = 5  # recent steps whose median is watched for a jump
TUNE_ENV = "DDPM_EXPLORER_TUNE_THREADS"  # "0": keep torch's thread count as it is (OMP_NUM_THREADS or the cores)


def tuning_enabled() -> bool:
    """Whether the trainer and the server choose their threads by measuring (the default), not TUNE_ENV=0."""
    return os.environ.get(TUNE_ENV, "1").strip().lower() not in ("0", "off", "false", "no")


class ThreadTuner:
    """Feed it each step's seconds (observe); `threads` is the count to run the next step with. It decides and never
    sets: the caller applies the count (torch.set_num_threads) in the thread that computes, before each step.

    most: the most threads it may use (default: torch's count now); observe(seconds, most=…) can lower or raise it
    later (the app's sharing of the CPU with a run), which starts a new measurement. `choices` records each
    measurement's outcome: (threads, median seconds a step)."""

    def __init__(self, most: int | None = None, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.most = max(1, most or torch.get_num_threads())
        self.threads = self.most
        self.recheck_s = RECHECK_S
        self.choices: list[tuple[int, float]] = []
        self._start_probe()

    @property
    def probing(self) -> bool:
        return self._mode == "probe"

    def observe(self, seconds: float, most: int | None = None) -> int:
        """One step took `seconds` at the current count. Returns the count for the next step."""
        if most is not None and max(1, most) != self.most:
            self.most = max(1, most)
            self._start_probe()
        elif self._mode == "probe":
            self._probe_step(seconds)
        elif self._mode == "steady":
            self._steady_step(seconds)
        return self.threads

    # -- measuring: one thread fewer first (cheap when a core is taken), then all of them -------------------------

    def _start_probe(self) -> None:
        if self.most <= 1:  # nothing to choose
            self._mode, self.threads = "fixed", self.most
            return
        self._mode, self._measured, self._queue = "probe", {}, [self.most - 1, self.most]
        self._next_count()

    def _next_count(self) -> None:
        self._times = []
        self.threads = self._queue.pop(0)

    def _probe_step(self, seconds: float) -> None:
        self._times.append(seconds)
        best = min(self._measured.values(), default=None)
        if best is not None and seconds > CLEARLY_SLOWER * best:  # clearly slower: no need for more steps
            self._measured[self.threads] = seconds
        elif len(self._times) >= PROBE_STEPS:
            self._measured[self.threads] = statistics.median(self._times)
        else:
            return
        if self._queue:
            self._next_count()
            return
        fastest = min(self._measured, key=lambda n: (self._measured[n], n))  # ties: fewer, kinder to the machine
        same = bool(self.choices) and self.choices[-1][0] == fastest
        self.recheck_s = min(2 * self.recheck_s, RECHECK_MAX_S) if same else RECHECK_S
        self.choices.append((fastest, self._measured[fastest]))
        self.threads = fastest
        self._mode, self._recent, self._decided_at = "steady", [], self.clock()

    # -- running: watch for a jump in the step time, and look again now and then ----------------------------------

    def _steady_step(self, seconds: float) -> None:
        """On every thread, a slower step time may mean another program took a core: measure again (at once after
        a step SPIKE times the usual). On fewer threads, a faster one may mean it left: measure again, and anyway
        every recheck_s. A slower step on fewer threads asks nothing: more threads would only wait more."""
        reference = self.choices[-1][1]
        self._recent = [*self._recent[-(WINDOW - 1) :], seconds]
        median = statistics.median(self._recent)
        full = len(self._recent) == WINDOW
        if self.threads == self.most:
            again = seconds > SPIKE * reference or (full and median > JUMP * reference)
        else:
            again = (full and median < reference / JUMP) or self.clock() - self._decided_at >= self.recheck_s
        if again:
            self._start_probe()


def set_threads(threads: int) -> int:
    """torch.set_num_threads for the calling thread, only when the count differs. Returns threads."""
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads
