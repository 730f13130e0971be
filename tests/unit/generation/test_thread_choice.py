"""The choice between all cores and all but one for llama.cpp's decode steps, on a fake clock."""

from __future__ import annotations

import pytest

from inferd.generation import threads as module
from inferd.generation.threads import PROBE_EVERY, ThreadChoice


@pytest.fixture
def clock(monkeypatch):
    now = [0]
    monkeypatch.setattr(module, "perf_counter_ns", lambda: now[0])
    return now


def run(choice: ThreadChoice, clock: list[int], cost: dict[int, int], steps: int, size: int = 8) -> list[int]:
    """``steps`` steps, each taking ``cost[threads]`` ns; the thread counts used, in order."""
    used = []
    for _ in range(steps):
        threads = choice.threads()
        used.append(threads)
        clock[0] += cost[threads]
        choice.took(size)
    return used


def test_it_keeps_the_faster_count_and_probes_the_other_every_few_steps(clock):
    choice = ThreadChoice(2, 1)
    used = run(choice, clock, {2: 50, 1: 100}, 3 * PROBE_EVERY)
    assert choice.current == 2
    assert used.count(1) == 3  # one probe per PROBE_EVERY steps, never taken up
    assert [i + 1 for i, n in enumerate(used) if n == 1] == [PROBE_EVERY, 2 * PROBE_EVERY, 3 * PROBE_EVERY]


def test_a_clearly_faster_probe_takes_over_and_a_later_one_can_take_it_back(clock):
    choice = ThreadChoice(2, 1)
    run(choice, clock, {2: 1000, 1: 100}, PROBE_EVERY)  # the cores are busy: one thread is ten times faster
    assert choice.current == 1
    run(choice, clock, {2: 50, 1: 100}, PROBE_EVERY)  # the machine went quiet
    assert choice.current == 2


def test_a_probe_only_a_little_faster_or_on_another_batch_size_changes_nothing(clock):
    choice = ThreadChoice(2, 1)
    run(choice, clock, {2: 100, 1: 90}, PROBE_EVERY)
    assert choice.current == 2
    run(choice, clock, {2: 100, 1: 10}, PROBE_EVERY - 1, size=8)
    run(choice, clock, {2: 100, 1: 10}, 1, size=4)  # the probe ran on fewer sequences: not comparable
    assert choice.current == 2
