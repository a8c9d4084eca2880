"""ThreadTuner (ddpm_core/threads.py) on machines whose step time depends on the thread count as measured on a 2-core
laptop: all threads faster on a quiet machine, one thread faster while another program keeps a core busy."""

from __future__ import annotations

import threading

import pytest
import torch

from ddpm_core.sharing import CoreSharing
from ddpm_core.threads import (
    CLEARLY_SLOWER,
    PROBE_STEPS,
    RECHECK_MAX_S,
    RECHECK_S,
    SPIKE,
    WINDOW,
    ThreadTuner,
    set_threads,
)

QUIET = {1: 1.0, 2: 0.6}  # seconds a step: two threads 1.7× faster (bench/RESULTS.md: 134 → 216 images/s)
BUSY = {1: 1.05, 2: 5.0}  # a core taken: two threads 5× slower than one
assert BUSY[2] > SPIKE * QUIET[2] and BUSY[2] > CLEARLY_SLOWER * BUSY[1]


class Machine:
    """A step's seconds for the thread count the tuner asks for, and a clock that advances by them."""

    def __init__(self, speeds: dict[int, float]):
        self.speeds, self.now, self.steps_at = speeds, 0.0, {1: 0, 2: 0}

    def run(self, tuner: ThreadTuner, steps: int) -> None:
        for _ in range(steps):
            seconds = self.speeds[tuner.threads]
            self.steps_at[tuner.threads] += 1
            self.now += seconds
            tuner.observe(seconds)


def tuner_on(machine: Machine, most: int = 2) -> ThreadTuner:
    return ThreadTuner(most, clock=lambda: machine.now)


def test_a_quiet_machine_keeps_every_thread():
    m = Machine(QUIET)
    tuner = tuner_on(m)
    assert tuner.threads == 1 and tuner.probing  # one fewer is measured first
    m.run(tuner, 2 * PROBE_STEPS)
    assert not tuner.probing and tuner.threads == 2 and tuner.choices == [(2, QUIET[2])]
    m.run(tuner, 100)
    assert tuner.threads == 2 and len(tuner.choices) == 1  # no jump, all threads: nothing to look at again


def test_a_busy_core_is_left_alone_after_one_slow_step():
    m = Machine(BUSY)
    tuner = tuner_on(m)
    m.run(tuner, PROBE_STEPS + 1)
    assert tuner.threads == 1 and tuner.choices == [(1, BUSY[1])]
    assert m.steps_at[2] == 1  # BUSY[2] > CLEARLY_SLOWER × BUSY[1]: its probe ends at its first step
    assert BUSY[2] > CLEARLY_SLOWER * BUSY[1]


def test_a_jump_in_the_step_time_measures_again():
    m = Machine(QUIET)
    tuner = tuner_on(m)
    m.run(tuner, 2 * PROBE_STEPS + 10)
    assert tuner.threads == 2
    m.speeds = BUSY  # another program starts on one core
    m.run(tuner, 1)  # a step SPIKE times the usual: a new measurement at once
    assert tuner.probing and tuner.threads == 1
    m.run(tuner, PROBE_STEPS + 1)
    assert tuner.threads == 1 and [n for n, _ in tuner.choices] == [2, 1]
    assert m.steps_at[2] == PROBE_STEPS + 10 + 2  # two busy 2-thread steps: the one that showed it, and the probe's


def test_on_fewer_threads_only_a_faster_step_time_measures_again():
    m = Machine(BUSY)
    tuner = tuner_on(m)
    m.run(tuner, PROBE_STEPS + 1)
    assert tuner.threads == 1
    m.speeds = {1: 2 * BUSY[1], 2: 10 * BUSY[2]}  # busier still: more threads would only wait more
    m.run(tuner, 3 * WINDOW)
    assert not tuner.probing and len(tuner.choices) == 1
    m.speeds = {1: BUSY[1] / 2, 2: BUSY[1] / 4}  # the other program has gone (and one thread now runs faster)
    m.run(tuner, WINDOW)
    assert tuner.probing or tuner.threads == 2
    m.run(tuner, 2 * PROBE_STEPS)
    assert tuner.threads == 2 and len(tuner.choices) == 2


def test_fewer_threads_are_checked_again_less_often_while_they_stay_best():
    m = Machine(BUSY)
    tuner = tuner_on(m)
    m.run(tuner, PROBE_STEPS + 1)
    assert tuner.recheck_s == RECHECK_S
    waits = []
    for _ in range(6):
        decided, probes = m.now, len(tuner.choices)
        while len(tuner.choices) == probes:
            m.run(tuner, 1)
        waits.append(round(m.now - decided))
    assert tuner.threads == 1 and all(n == 1 for n, _ in tuner.choices)
    assert waits == sorted(waits) and waits[-1] <= RECHECK_MAX_S + 10 and waits[-1] >= 4 * RECHECK_S
    slow = m.steps_at[2] * BUSY[2]  # the looks at 2 threads: one slow step each
    assert slow / m.now < 0.05, (slow, m.now)
    # the busy core goes away: the next look finds every thread faster again, and the interval starts over
    m.speeds = QUIET
    probes = len(tuner.choices)
    while len(tuner.choices) == probes:
        m.run(tuner, 1)
    assert tuner.threads == 2 and tuner.recheck_s == RECHECK_S


def test_a_new_cap_measures_again_within_it_and_one_thread_is_left_as_is():
    m = Machine(QUIET)
    tuner = tuner_on(m)
    m.run(tuner, 2 * PROBE_STEPS)
    assert tuner.observe(0.6, most=1) == 1 and not tuner.probing  # the app's share: one thread, nothing to choose
    m.run(tuner, 50)
    assert tuner.threads == 1 and m.steps_at[2] == PROBE_STEPS
    assert tuner_on(Machine(QUIET), most=1).threads == 1


def test_constructing_a_tuner_changes_no_thread_count():
    """A trainer builds its tuner in __init__; the bench drives train_step itself: nothing may change behind it."""
    seen = []

    def run():
        torch.set_num_threads(2)
        tuner = ThreadTuner()
        seen.append((tuner.threads, torch.get_num_threads()))  # one fewer is asked for; nothing is set yet
        seen.append(set_threads(tuner.threads) == torch.get_num_threads())

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    assert seen == [(1, 2), True]


@pytest.mark.parametrize("speeds, expected", [(QUIET, 2), (BUSY, 1)])
def test_a_trainer_runs_its_steps_at_the_count_the_tuner_chose(tmp_path, speeds, expected):
    """CoreSharing (the trainer's) applies the tuner's count before each step, in the thread that computes."""
    seen = []

    def run():
        torch.set_num_threads(2)
        sharing = CoreSharing(tmp_path, torch.device("cpu"))
        for _ in range(3 * PROBE_STEPS):
            threads = sharing.update()
            assert threads == torch.get_num_threads() == sharing.tuner.threads
            sharing.observe(speeds[threads])
        seen.append(sharing.update())

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    assert seen == [expected]
