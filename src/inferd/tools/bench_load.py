"""The load generator of ``inferd bench``: closed loop (C requests always in flight) or open loop (requests
started at a fixed rate whatever the answers do), over keep-alive HTTP/1.1 or gRPC, in one asyncio loop.

HTTP goes over plain asyncio streams with the request bytes built once: no HTTP client library per request, so
one process reaches several thousand requests a second. An open-loop request's latency counts from the moment it
was due, not from when a connection was free, so a server that falls behind shows it (no coordinated omission).
The loop's own CPU time is measured: near one core, the generator, not the server, sets the pace.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from inferd.tools.bench_payload import Payload

MAX_OPEN_LOOP_CONNECTIONS = 512


@dataclass
class LoadResult:
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None
    wall_s: float = 0.0
    cpu_s: float = 0.0

    def merge(self, other: LoadResult) -> None:
        self.latencies_s += other.latencies_s
        self.errors += other.errors
        self.first_error = self.first_error or other.first_error
        self.wall_s = max(self.wall_s, other.wall_s)
        self.cpu_s += other.cpu_s


Send = Callable[[], Awaitable[None]]


class HttpConnection:
    """One keep-alive connection sending the same request again and again."""

    def __init__(self, host: str, port: int, request: bytes) -> None:
        self.host, self.port, self.request = host, port, request
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self) -> None:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        try:
            self.writer.write(self.request)
            status_line = await self.reader.readline()
            if not status_line:
                raise ConnectionError("the server closed the connection")
            status = int(status_line.split()[1])
            length, chunked, close = 0, False, False
            while (line := await self.reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                name, value = name.strip().lower(), value.strip().lower()
                if name == "content-length":
                    length = int(value)
                elif name == "transfer-encoding" and "chunked" in value:
                    chunked = True
                elif name == "connection" and value == "close":
                    close = True
            body = await self._chunked() if chunked else await self.reader.readexactly(length)
        except BaseException:
            self.close()
            raise
        if close:
            self.close()
        if status >= 400:
            raise RuntimeError(f"HTTP {status}: {body[:200].decode(errors='replace')}")

    async def _chunked(self) -> bytes:
        assert self.reader is not None
        parts = []
        while size := int((await self.reader.readline()).split(b";")[0], 16):
            parts.append(await self.reader.readexactly(size + 2))
        await self.reader.readline()
        return b"".join(parts)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def http_request(host: str, port: int, payload: Payload) -> bytes:
    head = [f"POST {payload.path} HTTP/1.1", f"host: {host}:{port}", f"content-length: {len(payload.body)}",
            *(f"{k}: {v}" for k, v in payload.headers)]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload.body


def _senders(target: dict[str, Any], payload: Payload, count: int) -> tuple[list[Send], Callable[[], None]]:
    """``count`` independent senders (one connection each for HTTP; calls on one channel for gRPC)."""
    if payload.route == "grpc":
        import grpc

        from inferd.server.grpc.generated import grpc_service_pb2 as pb
        from inferd.server.grpc.generated import grpc_service_pb2_grpc as pb_grpc

        channel = grpc.aio.insecure_channel(target["grpc"], options=[("grpc.max_receive_message_length", -1)])
        stub = pb_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        request = pb.ModelInferRequest.FromString(payload.body)

        async def call() -> None:
            await stub.ModelInfer(request, timeout=target.get("timeout", 30))

        return [call] * count, lambda: None
    request = http_request(target["host"], target["port"], payload)
    connections = [HttpConnection(target["host"], target["port"], request) for _ in range(count)]

    def close() -> None:
        for connection in connections:
            connection.close()

    return [c.send for c in connections], close


def _record(result: LoadResult, exc: BaseException) -> None:
    result.errors += 1
    if result.first_error is None:
        result.first_error = f"{type(exc).__name__}: {exc}"[:300]


async def closed_loop(target: dict[str, Any], payload: Payload, concurrency: int, seconds: float) -> LoadResult:
    """``concurrency`` requests in flight at all times for ``seconds``."""
    senders, close = _senders(target, payload, concurrency)
    result = LoadResult()
    deadline = time.perf_counter() + seconds

    async def worker(send: Send) -> None:
        while (start := time.perf_counter()) < deadline:
            try:
                await send()
                result.latencies_s.append(time.perf_counter() - start)
            except Exception as exc:
                _record(result, exc)
                await asyncio.sleep(0.01)

    began, cpu = time.perf_counter(), time.process_time()
    try:
        await asyncio.gather(*(worker(s) for s in senders))
    finally:
        close()
    result.wall_s, result.cpu_s = time.perf_counter() - began, time.process_time() - cpu
    return result


async def open_loop(target: dict[str, Any], payload: Payload, rate: float, seconds: float) -> LoadResult:
    """One request started every ``1/rate`` s for ``seconds``; each from a free connection (opened as needed)."""
    pool_size = MAX_OPEN_LOOP_CONNECTIONS if payload.route != "grpc" else 1
    senders, close = _senders(target, payload, pool_size)
    free: asyncio.Queue[Send] = asyncio.Queue()
    opened = 0
    result = LoadResult()

    async def one(due: float) -> None:
        nonlocal opened
        if free.empty() and opened < len(senders):
            free.put_nowait(senders[opened])
            opened += 1
        send = await free.get() if payload.route != "grpc" else senders[0]
        try:
            await send()
            result.latencies_s.append(time.perf_counter() - due)
        except Exception as exc:
            _record(result, exc)
        finally:
            if payload.route != "grpc":
                free.put_nowait(send)

    began, cpu = time.perf_counter(), time.process_time()
    tasks: set[asyncio.Task[None]] = set()
    count = max(1, int(rate * seconds))
    for i in range(count):
        due = began + i / rate
        if (wait := due - time.perf_counter()) > 0:
            await asyncio.sleep(wait)
        task = asyncio.ensure_future(one(due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        _, late = await asyncio.wait(set(tasks), timeout=max(10.0, seconds))
        for task in late:  # unanswered long after the run: counted as errors, not left out
            task.cancel()
            _record(result, TimeoutError("no answer within the run's grace time"))
    close()
    result.wall_s, result.cpu_s = time.perf_counter() - began, time.process_time() - cpu
    return result


async def _once(target: dict[str, Any], payload: Payload) -> str | None:
    senders, close = _senders(target, payload, 1)
    try:
        await senders[0]()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"[:300]
    finally:
        close()
    return None


def check_once(target: dict[str, Any], payload: Payload) -> str | None:
    """Send one request; the reason it failed, or None."""
    return asyncio.run(_once(target, payload))


def run_load(target: dict[str, Any], payload: Payload, mode: str, level: float, seconds: float) -> LoadResult:
    """One measured run in a fresh event loop (also the entry point of each client process)."""
    if mode == "concurrency":
        return asyncio.run(closed_loop(target, payload, int(level), seconds))
    return asyncio.run(open_loop(target, payload, level, seconds))


def run_load_processes(target: dict[str, Any], payload: Payload, mode: str, level: float, seconds: float,
                       processes: int) -> LoadResult:
    """The run split over ``processes`` client processes (concurrency or rate shared out), results merged."""
    if processes <= 1:
        return run_load(target, payload, mode, level, seconds)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    shares = ([level // processes + (1 if i < level % processes else 0) for i in range(processes)]
              if mode == "concurrency" else [level / processes] * processes)
    shares = [s for s in shares if s > 0]
    merged = LoadResult()
    with ProcessPoolExecutor(len(shares), mp_context=multiprocessing.get_context("spawn")) as pool:
        for part in pool.map(run_load, *zip(*[(target, payload, mode, s, seconds) for s in shares], strict=True)):
            merged.merge(part)
    return merged
