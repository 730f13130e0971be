"""Choosing the next token from a sequence's logits with its own parameters and its own random generator."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_NUCLEUS_CANDIDATES = 1024
"""Tokens sorted for top-p: the most likely ones only (sorting a whole 50k vocabulary per token costs ms);
the full sort is the fallback when they do not reach ``top_p``."""


@dataclass(frozen=True, slots=True)
class SamplingParams:
    temperature: float = 1.0
    """0: greedy (the most likely token), deterministic."""
    top_p: float = 1.0
    """Nucleus sampling: draw from the smallest set of tokens whose probability reaches this."""
    seed: int | None = None
    """Seeds this request's own generator: the same seed and parameters give the same tokens."""


class Sampler:
    """One per sequence: its parameters and its random generator."""

    __slots__ = ("_params", "_rng")

    def __init__(self, params: SamplingParams) -> None:
        self._params = params
        self._rng = np.random.default_rng(None if params.seed is None else params.seed % 2**64)  # any int

    def sample(self, logits: np.ndarray) -> int:
        params = self._params
        if params.temperature <= 0:
            return int(np.argmax(logits))
        scaled = logits.astype(np.float64) / params.temperature
        scaled -= scaled.max()
        probs = np.exp(scaled)
        probs /= probs.sum()
        if params.top_p < 1.0:
            return self._nucleus(probs, params.top_p)
        return _draw(probs, float(self._rng.random()))

    def _nucleus(self, probs: np.ndarray, top_p: float) -> int:
        if probs.size > _NUCLEUS_CANDIDATES:
            candidates = np.argpartition(probs, -_NUCLEUS_CANDIDATES)[-_NUCLEUS_CANDIDATES:]
            if probs[candidates].sum() < top_p:
                candidates = np.arange(probs.size)
        else:
            candidates = np.arange(probs.size)
        order = candidates[np.argsort(-probs[candidates], kind="stable")]
        cumulative = np.cumsum(probs[order])
        keep = int(np.searchsorted(cumulative, top_p)) + 1
        kept = order[:keep]
        weights = probs[kept] / probs[kept].sum()
        return int(kept[_draw(weights, float(self._rng.random()))])


def _draw(probs: np.ndarray, u: float) -> int:
    index = int(np.searchsorted(np.cumsum(probs), u * probs.sum(), side="right"))
    return min(index, probs.size - 1)
