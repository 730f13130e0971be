"""The seam between the generation scheduler and a language-model engine.

An engine holds a fixed number of *slots*, each a sequence with its own KV cache. The scheduler prefills a
prompt into a free slot, then runs one batched decode over every active slot per step, and frees a slot when
its sequence ends. Every method is called from the scheduler's one engine thread, except :meth:`tokenize` and
:meth:`render_chat`, which the caller may run on any thread (they read the vocabulary only).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

Message = Mapping[str, str]


class Engine(Protocol):
    """A language model with ``slots`` sequences of up to ``context`` tokens each."""

    context: int
    """Most tokens one sequence (prompt and output) may hold."""
    slots: int
    """Sequences that may be active at once."""
    vocab_size: int
    eos: frozenset[int]
    """Tokens that end a sequence (end of generation)."""

    def tokenize(self, text: str, *, special: bool) -> list[int]:
        """Token ids of ``text``; ``special``: parse control tokens written in it (``<|im_start|>``)."""
        ...

    def token_bytes(self, token: int) -> bytes:
        """The bytes a token stands for (a part of a UTF-8 character, maybe); control tokens give b""."""
        ...

    def render_chat(self, messages: Sequence[Message]) -> str:
        """The prompt for a conversation, through the model's own chat template, ready for the assistant's turn."""
        ...

    def prefill(self, slot: int, tokens: Sequence[int]) -> np.ndarray:
        """Feed a prompt into an empty slot; the logits (``vocab_size`` floats) after its last token."""
        ...

    def decode(self, batch: Sequence[tuple[int, int]]) -> np.ndarray:
        """One step over several slots: each ``(slot, token)`` appends a token to that slot's sequence. Returns
        one row of logits per entry, in order (shape ``(len(batch), vocab_size)``)."""
        ...

    def free(self, slot: int) -> None:
        """End a slot's sequence, making the slot free for the next prompt (an engine may keep its KV cells for a
        next prompt that shares a prefix, and then says so with ``reusable(slot, tokens) -> int``)."""
        ...

    def close(self) -> None: ...
