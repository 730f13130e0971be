"""Continuous batching for one generative model version.

A fixed number of slots, each holding one sequence with its own KV cache in the engine. One engine thread
loops: it admits waiting requests into free slots (prefill, which also samples each one's first token), runs
ONE batched decode over every active sequence, samples each with its own parameters, hands each new piece of
text to its caller, and frees a slot when its sequence ends (end token, stop sequence, length) or its caller
went away. Requests beyond the slots wait in a bounded queue; when that is full a new one is refused at once
(UNAVAILABLE with a retry time, as the tensor scheduler does).

The engine thread owns the engine: model compute never runs on the event loop. Callers are told through a
``Sink`` called on the engine thread (the DataPlane hands each event to its event loop). A caller cancels with
:meth:`Ticket.cancel`; the engine thread frees the slot before its next decode step.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from time import perf_counter_ns

from inferd.errors import ErrorCode, InferError, internal, invalid
from inferd.generation.engine import Engine
from inferd.generation.sampling import Sampler, SamplingParams
from inferd.generation.stats import GenerationStats
from inferd.generation.text import Detokenizer, StopMatcher

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GenerationLimits:
    """What one model allows (``[generation]`` in model.toml)."""

    max_tokens: int = 256
    """Output tokens of a request that names no limit."""
    max_queue_size: int = 64
    """Requests that may wait for a slot."""
    sampling: SamplingParams = field(default_factory=SamplingParams)
    """Sampling of a request that names none."""


@dataclass(frozen=True, slots=True)
class GenerationEvent:
    """New output of one sequence: the text and tokens since the last event; the last event has a finish reason
    (``stop``: end token or stop sequence; ``length``: max tokens or the context) and the usage."""

    text: str
    tokens: tuple[int, ...]
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


Sink = Callable[[GenerationEvent | BaseException], None]


class Ticket:
    """A submitted request, to cancel it (its caller went away)."""

    __slots__ = ("_scheduler", "_sequence")

    def __init__(self, scheduler: GenerationScheduler, sequence: _Sequence) -> None:
        self._scheduler = scheduler
        self._sequence = sequence

    def cancel(self) -> None:
        """A waiting request leaves the queue at once; a running one frees its slot before the next step."""
        self._sequence.cancelled = True
        self._scheduler._withdraw(self._sequence)


@dataclass(slots=True, eq=False)
class _Sequence:
    prompt: list[int]
    max_tokens: int
    sampler: Sampler
    stops: StopMatcher
    sink: Sink
    submitted_ns: int
    slot: int = -1
    cancelled: bool = False
    generated: int = 0
    last_token: int = -1
    last_token_ns: int = 0
    detokenizer: Detokenizer = field(default_factory=Detokenizer)


class GenerationScheduler:
    """See the module docstring. ``engine`` is owned by this scheduler from now on (closed with it)."""

    def __init__(self, name: str, engine: Engine, limits: GenerationLimits) -> None:
        self.name = name
        self.engine = engine
        self.limits = limits
        self.stats = GenerationStats()
        self._waiting: deque[_Sequence] = deque()
        self._active: list[_Sequence] = []
        self._free = list(range(engine.slots - 1, -1, -1))
        self._step_ns = 0.0
        """Recent time of one decode step (moving average), for the retry time of a refusal."""
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=f"inferd-generate-{name}", daemon=True)
        self._thread.start()

    @property
    def context(self) -> int:
        return self.engine.context

    def check(self, prompt_tokens: int, max_tokens: int) -> None:
        """INVALID_ARGUMENT when the prompt and the output asked for do not fit in the context."""
        if max_tokens < 1:
            raise invalid(f"max_tokens must be at least 1, got {max_tokens}")
        if prompt_tokens + max_tokens > self.engine.context:
            raise invalid(
                f"the prompt has {prompt_tokens} tokens and max_tokens is {max_tokens}: together "
                f"{prompt_tokens + max_tokens}, more than model {self.name!r}'s context of {self.engine.context} "
                "tokens")

    def submit(self, prompt: Sequence[int], max_tokens: int, params: SamplingParams, stop: Sequence[str],
               sink: Sink) -> Ticket:
        """Queue a request; raises INVALID_ARGUMENT (see :meth:`check`), UNAVAILABLE when the queue is full or the
        model is closing."""
        self.check(len(prompt), max_tokens)
        if not prompt:
            raise invalid("the prompt is empty: it needs at least one token")
        sequence = _Sequence(list(prompt), max_tokens, Sampler(params), StopMatcher(stop), sink, perf_counter_ns())
        with self._wake:
            if self._closed:
                raise InferError(ErrorCode.UNAVAILABLE, f"model {self.name!r} is being unloaded")
            if len(self._waiting) >= self.limits.max_queue_size:
                retry = self._retry_after()
                raise InferError(
                    ErrorCode.UNAVAILABLE,
                    f"model {self.name!r} queue is full ({len(self._waiting)} requests waiting for "
                    f"{self.engine.slots} slots); retry in about {retry} s", retry_after_s=retry)
            self._waiting.append(sequence)
            self.stats.waiting = len(self._waiting)
            self.stats.prompt_tokens += len(prompt)
            self._wake.notify()
        return Ticket(self, sequence)

    def _withdraw(self, sequence: _Sequence) -> None:
        """Take a cancelled request out of the queue if it is still waiting (it no longer counts there, nor
        against the queue's limit); the engine thread ends it otherwise."""
        with self._wake:
            try:
                self._waiting.remove(sequence)
            except ValueError:  # admitted already, or ended
                return
            self.stats.waiting = len(self._waiting)
            self.stats.finish("cancelled")

    def close(self) -> None:
        """Stop the engine thread; sequences still running or waiting are told UNAVAILABLE."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout=30)
        self.engine.close()

    def _retry_after(self) -> int:
        steps_per_request = self.limits.max_tokens
        waves = len(self._waiting) / max(1, self.engine.slots) + 1
        return max(1, math.ceil(waves * steps_per_request * self._step_ns / 1e9))

    # -- the engine thread -----------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._closed and not self._waiting and not self._active:
                    self._wake.wait()
                if self._closed:
                    break
                admitted = self._admit()
            for sequence in admitted:
                self._prefill(sequence)
            self._drop_cancelled()
            if self._active:
                self._step()
        gone = InferError(ErrorCode.UNAVAILABLE, f"model {self.name!r} was unloaded")
        for sequence in [*self._active, *self._waiting]:
            sequence.sink(gone)
        self._active.clear()
        self._waiting.clear()

    def _admit(self) -> list[_Sequence]:
        admitted = []
        while self._waiting and self._free:
            sequence = self._waiting.popleft()
            if sequence.cancelled:
                self.stats.finish("cancelled")
                continue
            sequence.slot = self._pick_slot(sequence.prompt)
            admitted.append(sequence)
        self.stats.waiting = len(self._waiting)
        return admitted

    def _pick_slot(self, prompt: list[int]) -> int:
        """The free slot that holds the longest prefix of ``prompt`` from its last sequence (engines that keep
        one say so with ``reusable``), else any."""
        reusable = getattr(self.engine, "reusable", None)
        best = len(self._free) - 1
        if reusable is not None and len(self._free) > 1:
            best = max(range(len(self._free)), key=lambda i: reusable(self._free[i], prompt))
        return self._free.pop(best)

    def _prefill(self, sequence: _Sequence) -> None:
        self._active.append(sequence)
        self.stats.running = len(self._active)
        try:
            logits = self.engine.prefill(sequence.slot, sequence.prompt)
        except Exception as exc:
            log.exception("model %s: prefill failed", self.name)
            self._end(sequence, "error", internal(f"model {self.name!r} failed: {type(exc).__name__}: {exc}"))
            return
        now = perf_counter_ns()
        self.stats.time_to_first_token.add(now - sequence.submitted_ns)
        sequence.last_token_ns = now
        self._advance(sequence, logits)

    def _drop_cancelled(self) -> None:
        for sequence in [s for s in self._active if s.cancelled]:
            self._end(sequence, "cancelled", None)

    def _step(self) -> None:
        active = list(self._active)
        started = perf_counter_ns()
        try:
            logits = self.engine.decode([(s.slot, s.last_token) for s in active])
        except Exception as exc:
            log.exception("model %s: decode step failed", self.name)
            error = internal(f"model {self.name!r} failed: {type(exc).__name__}: {exc}")
            for sequence in active:
                self._end(sequence, "error", error)
            return
        now = perf_counter_ns()
        self._step_ns = 0.9 * self._step_ns + 0.1 * (now - started) if self._step_ns else float(now - started)
        for row, sequence in enumerate(active):
            self.stats.inter_token.add(now - sequence.last_token_ns)
            sequence.last_token_ns = now
            self._advance(sequence, logits[row])

    def _advance(self, sequence: _Sequence, logits: object) -> None:
        """Sample the sequence's next token and tell its caller; end it if that was its last. The token is
        counted before the caller hears of it, so a caller that reads the metrics after its last event sees it
        (the end token adds nothing to the output, and usage does not count it either)."""
        token = sequence.sampler.sample(logits)  # type: ignore[arg-type]
        if token in self.engine.eos:
            text = sequence.stops.feed(sequence.detokenizer.flush())[0] + sequence.stops.flush()
            self._finish(sequence, text, (), "stop")
            return
        sequence.generated += 1
        self.stats.step(1)
        sequence.last_token = token
        text, stopped = sequence.stops.feed(sequence.detokenizer.feed(self.engine.token_bytes(token)))
        if stopped:
            self._finish(sequence, text, (token,), "stop")
        elif (sequence.generated >= sequence.max_tokens
              or len(sequence.prompt) + sequence.generated >= self.engine.context):
            tail, stopped = sequence.stops.feed(sequence.detokenizer.flush())
            self._finish(sequence, text + tail + ("" if stopped else sequence.stops.flush()), (token,), "length")
        else:
            self._tell(sequence, GenerationEvent(text, (token,)))

    def _finish(self, sequence: _Sequence, text: str, tokens: tuple[int, ...], reason: str) -> None:
        event = GenerationEvent(text, tokens, reason, len(sequence.prompt), sequence.generated)
        self._end(sequence, reason, event)

    def _end(self, sequence: _Sequence, reason: str, last: GenerationEvent | BaseException | None) -> None:
        try:
            self.engine.free(sequence.slot)
        except Exception:  # a slot that cannot be cleared is not handed out again
            log.exception("model %s: freeing slot %d failed", self.name, sequence.slot)
        else:
            self._free.append(sequence.slot)
        self._active.remove(sequence)
        self.stats.running = len(self._active)
        self.stats.finish(reason)
        if last is not None:
            self._tell(sequence, last)

    def _tell(self, sequence: _Sequence, event: GenerationEvent | BaseException) -> None:
        try:
            sequence.sink(event)
        except Exception:  # a caller's bug never stops the other sequences
            log.exception("model %s: a generation caller failed", self.name)
            sequence.cancelled = True
