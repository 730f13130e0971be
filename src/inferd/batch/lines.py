"""Batch jobs over a JSON Lines file of requests, one answer line per request line (the OpenAI Batch API's input
and output files), in input order, resumable.

The request lines are answered by a ``handler`` (the OpenAI transport's, :mod:`inferd.server.openai.batch`, which
runs each line through the DataPlane), up to ``concurrency`` at a time. The answers are appended to the output
file in input order and flushed as they come, so the output file is its own journal: a job run again after an
interruption counts the complete lines the output holds, drops a half-written last line, and goes on from the
next request line. A small identity file beside it (the input's size and modification time, the model) refuses to
resume onto a different input unless asked to start over. Blank input lines are skipped (they get no answer).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from inferd.batch.job import BatchSummary
from inferd.batch.options import BatchError
from inferd.batch.progress import Progress

Handler = Callable[[int, bytes], Coroutine[Any, Any, tuple[bytes, bool]]]
"""Answers one request line (its number from 0 among the non-blank lines, its bytes): the answer line (no newline)
and whether it is a failure."""
SYNC_EVERY = 64
"""Answer lines between two fsyncs of the output file (a crash loses at most these, which are then run again)."""


def output_paths(input: Path, output: Path) -> tuple[Path, Path]:
    """The answers file and its identity file for an input file: ``<stem>_output.jsonl`` and
    ``<stem>_output.identity.json`` in the ``output`` folder."""
    stem = input.name.removesuffix(".jsonl").removesuffix(".json")
    return output / f"{stem}_output.jsonl", output / f"{stem}_output.identity.json"


def request_lines(input: Path) -> Iterator[bytes]:
    """The input's non-blank lines."""
    with input.open("rb") as f:
        for line in f:
            if line.strip():
                yield line


async def run_lines(input: Path, output: Path, handler: Handler, *, model: str, concurrency: int = 8,
                    restart: bool = False, on_progress: Callable[[Progress], None] | None = None) -> BatchSummary:
    """Answer every request line of ``input`` into the ``output`` folder (see the module docstring)."""
    if not input.is_file():
        raise BatchError(f"{input}: no such file (a JSON Lines file of requests)")
    output.mkdir(parents=True, exist_ok=True)
    answers, identity_file = output_paths(input, output)
    if answers.resolve() == input.resolve():
        raise BatchError(f"the output {answers} would overwrite the input: choose another --output folder")
    identity = {"input": str(input.resolve()), "size": input.stat().st_size,
                "mtime_ns": input.stat().st_mtime_ns, "model": model}
    done = _resume_point(answers, identity_file, identity, restart)
    total = sum(1 for _ in request_lines(input))
    started = time.monotonic()
    counts = {"done": done, "failed": 0}

    def report() -> None:
        if on_progress is not None:
            elapsed = time.monotonic() - started
            rate = (counts["done"] - done) / elapsed if elapsed > 0 else 0.0
            left = (total - counts["done"]) / rate if rate > 0 else None
            on_progress(Progress(counts["done"], counts["failed"], total, False, elapsed, rate, left))

    report()
    with answers.open("ab") as sink:
        await _answer_all(input, done, handler, max(1, concurrency), sink, counts, report)
        _sync(sink)
    seconds = time.monotonic() - started
    summary = BatchSummary(rows_in=total, rows_out=total, rows_failed=counts["failed"], seconds=seconds,
                           rows_per_s=(total - done) / seconds if seconds > 0 else 0.0, outputs=[str(answers)],
                           batches=total, resumed_batches=done,
                           message="failed lines have a response with an error status, or an error")
    return summary


async def _answer_all(input: Path, done: int, handler: Handler, concurrency: int, sink: IO[bytes],
                      counts: dict[str, int], report: Callable[[], None]) -> None:
    pending: deque[asyncio.Task[tuple[bytes, bool]]] = deque()
    written = 0

    async def write_first() -> None:
        nonlocal written
        line, failed = await pending.popleft()
        sink.write(line + b"\n")
        sink.flush()
        written += 1
        counts["done"] += 1
        counts["failed"] += failed
        if written % SYNC_EVERY == 0:
            await asyncio.to_thread(_sync, sink)
        report()

    try:
        for number, line in enumerate(request_lines(input)):
            if number < done:
                continue
            while len(pending) >= concurrency or (pending and pending[0].done()):
                await write_first()
            pending.append(asyncio.create_task(handler(number, line)))
        while pending:
            await write_first()
    finally:
        for task in pending:  # interrupted: what was not written is run again on resume
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


def _resume_point(answers: Path, identity_file: Path, identity: dict[str, Any], restart: bool) -> int:
    """Request lines an earlier run answered (0 for a new job, or with ``restart``)."""
    if restart or not answers.exists():
        with contextlib.suppress(FileNotFoundError):
            answers.unlink()
        identity_file.write_bytes(orjson.dumps(identity))
        return 0
    try:
        earlier = orjson.loads(identity_file.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        earlier = None
    if earlier != identity:
        raise BatchError(f"{answers} is the output of another input or model (or the input changed); pass "
                         "--restart to start over")
    with answers.open("r+b") as f:
        data = f.read()
        complete = data.rfind(b"\n") + 1
        if complete < len(data):  # a line half written when the job stopped: it is run again
            f.truncate(complete)
    return data[:complete].count(b"\n")


def _sync(f: IO[bytes]) -> None:
    f.flush()
    os.fsync(f.fileno())
