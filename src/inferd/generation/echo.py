"""A small deterministic language model for tests and demos, as Triton's mock LLM: it answers each prompt by
repeating its bytes, then ends. Tokens are bytes (0-255) plus an end token; greedy decoding echoes exactly.

Knobs: ``delay_ms`` sleeps once per prefill and per batched decode step (a stand-in for compute), and
``fail_after`` makes the engine raise on every that many-th decode step (counted over its lifetime, 0:
never), so
that tests can watch the scheduler recover."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from inferd.generation.engine import Message
from inferd.generation.text import render_chat

END = 256
VOCAB = 257
_LIKELY = 12.0
"""Logit of the token to echo (the others are 0): p ≈ 0.999 at temperature 1, so sampling mostly echoes too."""


class EchoEngine:
    """See the module docstring."""

    def __init__(self, *, context: int = 2048, slots: int = 4, delay_ms: float = 0.0, fail_after: int = 0) -> None:
        self.context = context
        self.slots = slots
        self.vocab_size = VOCAB
        self.eos = frozenset({END})
        self.delay_s = delay_ms / 1000
        self.fail_after = fail_after
        self.steps = 0
        """Batched decode steps run so far."""
        self.batch_sizes: list[int] = []
        """Sequences in each decode step (tests check that the steps were batched)."""
        self._prompts: dict[int, list[int]] = {}
        self._given: dict[int, int] = {}

    def tokenize(self, text: str, *, special: bool) -> list[int]:
        return list(text.encode("utf-8"))

    def token_bytes(self, token: int) -> bytes:
        return b"" if token >= 256 else bytes((token,))

    def render_chat(self, messages: Sequence[Message]) -> str:
        return render_chat(None, messages)

    def prefill(self, slot: int, tokens: Sequence[int]) -> np.ndarray:
        if slot in self._prompts:
            raise RuntimeError(f"slot {slot} is not free")
        self._sleep()
        self._prompts[slot] = list(tokens)
        self._given[slot] = 0
        return self._logits(slot)

    def decode(self, batch: Sequence[tuple[int, int]]) -> np.ndarray:
        self.steps += 1
        self.batch_sizes.append(len(batch))
        if self.fail_after and self.steps % self.fail_after == 0:
            raise RuntimeError(f"echo engine failed on decode step {self.steps} (fail_after = {self.fail_after})")
        self._sleep()
        rows = []
        for slot, _token in batch:
            self._given[slot] += 1
            rows.append(self._logits(slot))
        return np.stack(rows)

    def free(self, slot: int) -> None:
        self._prompts.pop(slot, None)
        self._given.pop(slot, None)

    def close(self) -> None:
        self._prompts.clear()

    @property
    def active(self) -> int:
        """Slots holding a sequence."""
        return len(self._prompts)

    def _logits(self, slot: int) -> np.ndarray:
        prompt, given = self._prompts[slot], self._given[slot]
        logits = np.zeros(VOCAB, dtype=np.float32)
        logits[prompt[given] if given < len(prompt) else END] = _LIKELY
        return logits

    def _sleep(self) -> None:
        if self.delay_s:
            time.sleep(self.delay_s)
