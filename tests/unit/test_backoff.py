"""inferd.backoff: the one retry-delay rule of job retries, callbacks and worker respawns."""

from __future__ import annotations

from inferd.backoff import doubling_delay


def test_the_delay_doubles_after_each_failure():
    assert [doubling_delay(0.5, attempt, 100.0) for attempt in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 8.0]


def test_the_delay_never_exceeds_the_cap():
    assert doubling_delay(1.0, 30, 300.0) == 300.0
    assert doubling_delay(1.0, 9, 300.0) == 256.0
