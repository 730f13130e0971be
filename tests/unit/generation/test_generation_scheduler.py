"""Continuous batching over the echo engine: slots, one decode per step, stops, lengths, cancels, failures."""

from __future__ import annotations

import queue

import pytest

from inferd.errors import ErrorCode, InferError
from inferd.generation.echo import EchoEngine
from inferd.generation.sampling import SamplingParams
from inferd.generation.scheduler import GenerationEvent, GenerationLimits, GenerationScheduler

GREEDY = SamplingParams(temperature=0)


@pytest.fixture
def make():
    made = []

    def make(slots=2, delay_ms=0.0, fail_after=0, context=256, queue_size=8):
        engine = EchoEngine(context=context, slots=slots, delay_ms=delay_ms, fail_after=fail_after)
        scheduler = GenerationScheduler("echo", engine, GenerationLimits(max_tokens=64, max_queue_size=queue_size))
        made.append(scheduler)
        return engine, scheduler

    yield make
    for scheduler in made:
        scheduler.close()


class Collector:
    def __init__(self):
        self.events = queue.Queue()

    def __call__(self, event):
        self.events.put(event)

    def result(self, timeout=20):
        text, tokens = [], []
        while True:
            event = self.events.get(timeout=timeout)
            if isinstance(event, BaseException):
                raise event
            text.append(event.text)
            tokens.extend(event.tokens)
            if event.finish_reason is not None:
                return "".join(text), tokens, event

    def first(self, timeout=20):
        return self.events.get(timeout=timeout)


def _submit(scheduler, prompt, max_tokens=64, stop=(), params=GREEDY):
    sink = Collector()
    ticket = scheduler.submit(list(prompt.encode()), max_tokens, params, stop, sink)
    return sink, ticket


def test_greedy_echo_ends_with_the_end_token_and_usage(make):
    _, scheduler = make()
    text, tokens, last = _submit(scheduler, "héllo")[0].result()
    assert text == "héllo"
    assert tokens == list("héllo".encode())
    assert (last.finish_reason, last.prompt_tokens, last.completion_tokens) == ("stop", 6, 6)


def test_max_tokens_ends_with_length(make):
    _, scheduler = make()
    text, _, last = _submit(scheduler, "abcdef", max_tokens=3)[0].result()
    assert (text, last.finish_reason, last.completion_tokens) == ("abc", "length", 3)


def test_a_stop_sequence_across_tokens_is_cut_off(make):
    _, scheduler = make()
    text, _, last = _submit(scheduler, "one, two; three", stop=[", t", "XX"])[0].result()
    assert (text, last.finish_reason) == ("one", "stop")


def test_the_context_bounds_the_output(make):
    _, scheduler = make(context=10)
    with pytest.raises(InferError) as info:
        _submit(scheduler, "abcdefgh", max_tokens=3)
    assert info.value.code is ErrorCode.INVALID_ARGUMENT
    assert "8 tokens" in info.value.message
    assert "max_tokens is 3" in info.value.message
    assert "context of 10" in info.value.message


def test_requests_beyond_the_slots_wait_and_every_step_decodes_all_active_sequences_at_once(make):
    engine, scheduler = make(slots=3, delay_ms=2)
    sinks = [_submit(scheduler, f"request number {i}")[0] for i in range(7)]
    results = [sink.result()[0] for sink in sinks]
    assert results == [f"request number {i}" for i in range(7)]
    assert max(engine.batch_sizes) == 3
    assert len(engine.batch_sizes) < sum(engine.batch_sizes) * 0.6  # steps shared, not one per sequence
    assert engine.active == 0
    assert scheduler.stats.running == 0


def test_a_cancelled_sequence_frees_its_slot_within_a_step(make):
    engine, scheduler = make(slots=1, delay_ms=5)
    sink, ticket = _submit(scheduler, "x" * 150)
    assert isinstance(sink.first(), GenerationEvent)
    ticket.cancel()
    waiting, _ = _submit(scheduler, "next")
    assert waiting.result()[0] == "next"
    assert engine.active == 0
    assert scheduler.stats.finished.get("cancelled") == 1


def test_a_full_queue_refuses_with_a_retry_time(make):
    _, scheduler = make(slots=1, delay_ms=5, queue_size=2)
    first = _submit(scheduler, "y" * 100)
    assert isinstance(first[0].first(), GenerationEvent)  # admitted: the slot is taken
    tickets = [first, _submit(scheduler, "y" * 100), _submit(scheduler, "y" * 100)]
    with pytest.raises(InferError) as info:
        _submit(scheduler, "z")
    assert info.value.code is ErrorCode.UNAVAILABLE
    assert info.value.retry_after_s >= 1
    assert "queue is full" in info.value.message
    for _, ticket in tickets:
        ticket.cancel()


def test_a_failing_engine_fails_the_running_sequences_and_keeps_serving(make):
    engine, scheduler = make(slots=2, fail_after=3)
    sinks = [_submit(scheduler, "abcdefgh")[0] for _ in range(2)]
    for sink in sinks:
        with pytest.raises(InferError) as info:
            sink.result()
        assert info.value.code is ErrorCode.INTERNAL
        assert "fail_after" in info.value.message
    engine.fail_after = 0
    assert _submit(scheduler, "again")[0].result()[0] == "again"
    assert engine.active == 0


def test_seeded_sampling_is_per_request(make):
    _, scheduler = make(slots=4)
    hot = SamplingParams(temperature=30.0, seed=11)
    runs = [_submit(scheduler, "abcdefghij", params=hot)[0] for _ in range(3)]
    other = _submit(scheduler, "abcdefghij", params=SamplingParams(temperature=30.0, seed=12))[0]
    texts = [sink.result()[1] for sink in runs]
    assert texts[0] == texts[1] == texts[2]
    assert other.result()[1] != texts[0]


def test_close_tells_waiting_callers(make):
    _, scheduler = make(slots=1, delay_ms=5)
    sinks = [_submit(scheduler, "w" * 100)[0] for _ in range(2)]
    scheduler.close()
    for sink in sinks:
        with pytest.raises(InferError) as info:
            sink.result()
        assert info.value.code is ErrorCode.UNAVAILABLE


def test_the_statistics_count_a_token_before_its_caller_hears_of_it(make):
    """A caller that reads the metrics right after its last event sees every token of it (CI once read 14 of 15)."""
    _, scheduler = make(slots=2)
    seen = queue.Queue()

    def sink(event):
        stats = scheduler.stats
        seen.put((event, stats.completion_tokens, dict(stats.finished), stats.running))

    for prompt in ("abcdef", "ghijkl"):
        scheduler.submit(list(prompt.encode()), 4, GREEDY, (), sink)
    heard, counted = 0, []
    for _ in range(8):
        event, completion_tokens, finished, running = seen.get(timeout=20)
        heard += len(event.tokens)
        counted.append(completion_tokens >= heard)
        if event.finish_reason is not None and heard == 8:
            assert (completion_tokens, finished, running) == (8, {"length": 2}, 0)
    assert all(counted)
