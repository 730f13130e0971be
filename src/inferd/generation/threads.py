"""How many threads llama.cpp computes a decode step with, when the model leaves it to inferd (``threads = 0``).

The threads of a step meet at a barrier per layer, so the right count depends on what else the cores are doing,
which no setting knows. Measured on 2 cores: with the cores free, 8 streams gave 132.6 output tokens/s with 2
threads and 78.8 with 1; with six other busy processes, a decode step over 8 sequences took 2,549 ms with 2
threads and 228 ms with 1. So the engine tries both: it decodes with one count and, every :data:`PROBE_EVERY`
steps, one step with the other; the other count takes over when that step was clearly faster than the step before
it (same batch size), and the probes keep checking as the machine changes.
"""

from __future__ import annotations

from time import perf_counter_ns

PROBE_EVERY = 32
"""Steps between two probes of the other thread count."""
CLEARLY_FASTER = 0.8
"""A probe wins when its step took at most this share of the step before it."""


class ThreadChoice:
    """Picks between ``many`` and ``few`` threads; call :meth:`threads` before a step and :meth:`took` after it."""

    __slots__ = ("_current", "_last_ns", "_last_size", "_other", "_probing", "_started", "_steps")

    def __init__(self, many: int, few: int) -> None:
        self._current = many
        self._other = few
        self._steps = 0
        self._last_ns = 0
        self._last_size = -1
        self._probing = False
        self._started = 0

    @property
    def current(self) -> int:
        return self._current

    def threads(self) -> int:
        """The count for the next step (the other one now and then: a probe)."""
        self._steps += 1
        self._probing = self._other != self._current and self._steps % PROBE_EVERY == 0
        self._started = perf_counter_ns()
        return self._other if self._probing else self._current

    def took(self, size: int) -> None:
        """The step just run had ``size`` sequences."""
        elapsed = perf_counter_ns() - self._started
        if self._probing:
            if size == self._last_size and elapsed <= CLEARLY_FASTER * self._last_ns:
                self._current, self._other = self._other, self._current
            self._probing = False
        self._last_ns, self._last_size = elapsed, size
