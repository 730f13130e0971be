"""The generation metrics of /metrics over a real DataPlane serving the echo language model: what each one says
after real generations (the echo model's output is known exactly, so are the counts)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from generative_models import write_echo_llm
from inferd.dataplane import DataPlane
from inferd.generation.request import GenerationRequest
from inferd.observability.metrics import Metrics
from inferd.repository import ModelRepository

Found = dict[tuple[str, frozenset[tuple[str, str]]], float]
ECHO = {"model": "echo", "version": "1"}


async def scrape(metrics: Metrics) -> Found:
    found = {}
    for family in text_string_to_metric_families((await metrics.render()).decode()):
        for sample in family.samples:
            found[sample.name, frozenset(sample.labels.items())] = sample.value
    return found


def value(found: Found, name: str, **labels: str) -> float:
    return found[name, frozenset({**ECHO, **labels}.items())]


async def generate(plane: DataPlane, prompt: str, **fields: object) -> tuple[str, int, int, str | None]:
    """The text, usage and finish reason of one generation."""
    events = [event async for event in await plane.generate(GenerationRequest("echo", prompt=prompt, **fields))]
    last = events[-1]
    return "".join(e.text for e in events), last.prompt_tokens, last.completion_tokens, last.finish_reason


async def until(metrics: Metrics, check: str, timeout_s: float = 20.0, **wanted: float) -> Found:
    """Scrape until every gauge in ``wanted`` reads its value (``check`` names what is awaited, for the failure)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = await scrape(metrics)
        if all(value(found, f"inferd_generation_{name}") == v for name, v in wanted.items()):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{check}: {wanted} not reached; last scrape: "
                                 f"{ {k[0]: v for k, v in found.items() if 'sequences' in k[0]} }")
        await asyncio.sleep(0.005)


def test_token_counts_latencies_and_rate_after_generations_that_end_on_length(repo_root: Path) -> None:
    write_echo_llm(repo_root, "echo", slots=2, context=64, max_tokens=8)

    async def main() -> Found:
        plane = DataPlane(ModelRepository(repo_root))
        await plane.start()
        try:
            results = await asyncio.gather(*(generate(plane, f"prompt {i}", max_tokens=5) for i in range(3)))
            assert results == [("promp", 8, 5, "length")] * 3
            return await scrape(Metrics(plane))
        finally:
            plane.close()

    found = asyncio.run(main())
    assert value(found, "inferd_generation_prompt_tokens_total") == 24
    assert value(found, "inferd_generation_completion_tokens_total") == 15
    assert value(found, "inferd_generation_sequences_finished_total", reason="length") == 3
    # one first token per sequence; then one inter-token gap per decode step of each (4 of them)
    assert value(found, "inferd_generation_time_to_first_token_seconds_count") == 3
    assert value(found, "inferd_generation_time_to_first_token_seconds_bucket", le="+Inf") == 3
    assert value(found, "inferd_generation_time_to_first_token_seconds_sum") > 0
    assert value(found, "inferd_generation_inter_token_seconds_count") == 12
    assert value(found, "inferd_generation_inter_token_seconds_bucket", le="+Inf") == 12
    assert value(found, "inferd_generation_inter_token_seconds_sum") > 0
    assert 0 < value(found, "inferd_generation_output_tokens_per_second") <= 15 / 10  # 15 tokens, a 10 s window
    assert value(found, "inferd_generation_running_sequences") == 0
    assert value(found, "inferd_generation_waiting_sequences") == 0


def test_running_and_waiting_gauges_follow_the_slots_and_a_cancelled_sequence(repo_root: Path) -> None:
    write_echo_llm(repo_root, "echo", slots=2, context=256, max_tokens=200, delay_ms=10)

    async def main() -> Found:
        plane = DataPlane(ModelRepository(repo_root))
        await plane.start()
        metrics = Metrics(plane)
        try:
            streams = [await plane.generate(GenerationRequest("echo", prompt="x" * 100)) for _ in range(3)]
            firsts = [asyncio.ensure_future(anext(s)) for s in streams]
            await until(metrics, "two sequences in the two slots, one waiting", running_sequences=2,
                        waiting_sequences=1)
            await firsts[0]
            await streams[0].aclose()  # its caller went away: the waiting one takes its slot
            await until(metrics, "the cancelled one's slot taken by the waiting one", running_sequences=2,
                        waiting_sequences=0)
            for first, stream in zip(firsts[1:], streams[1:], strict=True):
                await first
                await stream.aclose()
            return await until(metrics, "every slot free", running_sequences=0, waiting_sequences=0)
        finally:
            plane.close()

    found = asyncio.run(main())
    assert value(found, "inferd_generation_sequences_finished_total", reason="cancelled") == 3
    assert value(found, "inferd_generation_prompt_tokens_total") == 300


def test_the_completion_token_counter_agrees_with_usage_when_a_sequence_ends_on_its_end_token(
        repo_root: Path) -> None:
    write_echo_llm(repo_root, "echo", slots=2, context=64, max_tokens=32)

    async def main() -> tuple[tuple[str, int, int, str | None], Found]:
        plane = DataPlane(ModelRepository(repo_root))
        await plane.start()
        try:
            result = await generate(plane, "hi")
            return result, await scrape(Metrics(plane))
        finally:
            plane.close()

    result, found = asyncio.run(main())
    assert result == ("hi", 2, 2, "stop")
    assert value(found, "inferd_generation_completion_tokens_total") == 2


def test_a_waiting_caller_that_leaves_is_no_longer_counted_waiting(repo_root: Path) -> None:
    write_echo_llm(repo_root, "echo", slots=1, context=256, max_tokens=200, delay_ms=10)

    async def main() -> None:
        plane = DataPlane(ModelRepository(repo_root))
        await plane.start()
        metrics = Metrics(plane)
        running = await plane.generate(GenerationRequest("echo", prompt="x" * 100))
        try:
            await anext(running)
            waiting = await plane.generate(GenerationRequest("echo", prompt="y" * 100))
            first = asyncio.ensure_future(anext(waiting))
            await asyncio.sleep(0)  # the caller is waiting for its first token (as a route's stream is)
            await until(metrics, "one running, one waiting", running_sequences=1, waiting_sequences=1)
            first.cancel()  # its caller went away before it got a slot
            with pytest.raises(asyncio.CancelledError):
                await first
            await until(metrics, "the waiting one gone while the other still runs", timeout_s=1.0,
                        running_sequences=1, waiting_sequences=0)
        finally:
            await running.aclose()
            plane.close()

    asyncio.run(main())
