"""Per-model generation statistics, read by the metrics collector when ``/metrics`` is scraped."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from inferd.stats import HistogramDuration

_RATE_WINDOW_S = 10.0
"""Output tokens per second is measured over this much recent time."""


@dataclass(slots=True)
class GenerationStats:
    time_to_first_token: HistogramDuration = field(default_factory=HistogramDuration)
    """From submission (queue wait and prefill included) to the first token."""
    inter_token: HistogramDuration = field(default_factory=HistogramDuration)
    """Between two tokens of one sequence."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finished: dict[str, int] = field(default_factory=dict)
    """Sequences ended, by reason: stop, length, cancelled, error."""
    running: int = 0
    waiting: int = 0
    _recent: deque[tuple[float, int]] = field(default_factory=deque)

    def step(self, tokens: int) -> None:
        now = time.monotonic()
        self.completion_tokens += tokens
        recent = self._recent
        recent.append((now, tokens))
        while recent and recent[0][0] < now - _RATE_WINDOW_S:
            recent.popleft()

    def finish(self, reason: str) -> None:
        self.finished[reason] = self.finished.get(reason, 0) + 1

    def output_tokens_per_second(self) -> float:
        """Tokens generated per second over the last few seconds (all sequences together)."""
        now = time.monotonic()
        total = sum(n for t, n in list(self._recent) if t >= now - _RATE_WINDOW_S)
        return total / _RATE_WINDOW_S
