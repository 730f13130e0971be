"""One model worker process: its entry point, the control protocol, and the server's handle on it.

A worker is started with the ``spawn`` method: it imports inferd afresh, loads the model itself with
:func:`inferd.runtimes.registry.load_runtime`, reports the signature and then answers requests one at a time.

Control messages go over a ``multiprocessing`` Pipe, each one a JSON array sent with ``send_bytes`` (no
pickle, and never tensor data: tensors lie in shared memory, see :mod:`inferd.executors.shm`)::

    worker -> server, once  ["loaded", signature.to_dict()]   or   ["failed", "ExcType: message"]
    server -> worker        ["run", request_segment, response_segment, [meta, ...]]
                            ["stop"]
    worker -> server        ["ok", [meta, ...]]            the outputs are in the response segment
                            ["error", "ExcType: message"]  predict raised; the worker carries on
                            ["grow", nbytes]               the outputs do not fit the response segment
    server -> worker        ["resend", new_response_segment]   after "grow": write the outputs there

A ``meta`` is ``[name, datatype, shape, offset, nbytes]``. The server never sends a request before the
answer to the previous one, so at most one message is in flight each way.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from inferd.executors import shm
from inferd.runtimes.base import Runtime
from inferd.runtimes.registry import RuntimeInfo, load_runtime
from inferd.signature import Signature, TensorSpec, as_declared

if TYPE_CHECKING:  # asyncio costs a worker 0.1 s of start-up; only the server's side awaits
    import asyncio

_SPAWN = multiprocessing.get_context("spawn")
_PR_SET_PDEATHSIG = 1


class WorkerLoadError(ValueError):
    """A worker could not load the model; the message is the worker's error, ``"ExcType: message"``."""


class WorkerDiedError(Exception):
    """The worker's pipe closed: the process is gone."""


def send(conn: Connection, message: list[Any]) -> None:
    conn.send_bytes(orjson.dumps(message))


def recv(conn: Connection) -> list[Any]:
    """The next message; EOFError when the other end is gone."""
    message = orjson.loads(conn.recv_bytes())
    if not isinstance(message, list) or not message:
        raise ValueError(f"malformed control message {message!r}")
    return message


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def describe_exit(code: int | None) -> str:
    if code is None:
        return "exit status unknown"
    if code >= 0:
        return f"exit code {code}"
    try:
        return f"signal {-code}, {signal.Signals(-code).name}"
    except ValueError:
        return f"signal {-code}"


# --- the server's side ---------------------------------------------------------------------------------------

@dataclass(eq=False, slots=True)
class Handle:
    """The server's end of one worker: its process, pipe and two segments."""

    process: BaseProcess
    pid: int
    conn: Connection
    request: shm.Segment
    response: shm.Segment
    exited: bool = False
    """The supervisor saw the process end while a request owned the worker."""
    exitcode: int | None = None
    reaped: bool = False
    served: int = 0
    """Calls answered."""
    overran: bool = False
    """Killed because its call ran past the execution timeout."""

    @classmethod
    def spawn(cls, model: str, load_args: tuple[Any, ...]) -> Handle:
        conn, child = _SPAWN.Pipe()
        segments: list[shm.Segment] = []
        try:
            segments += [shm.Segment(), shm.Segment()]
            process = _SPAWN.Process(target=main, args=(child, *load_args), name=f"inferd-worker-{model}",
                                     daemon=True)
            process.start()
        except BaseException:
            conn.close()
            for segment in segments:
                segment.close()
            raise
        finally:
            child.close()
        assert process.pid is not None
        return cls(process, process.pid, conn, segments[0], segments[1])

    def await_loaded(self, model: str, stop_timeout: float) -> Signature:
        """Read the worker's one load report (blocking); WorkerLoadError when it failed or died."""
        try:
            message = recv(self.conn)
        except (EOFError, OSError, ValueError):
            self.reap(stop_timeout)
            raise WorkerLoadError(self.death(model, "while loading")) from None
        if message[0] == "loaded":
            return signature_from_dict(message[1])
        raise WorkerLoadError(str(message[-1]))

    def put_inputs(self, inputs: Mapping[str, Any]) -> list[shm.Meta]:
        """Copy the inputs into the request segment, grown if need be (ValueError, OSError)."""
        packed, needed = shm.pack(inputs)
        self.request = self.request.fit(needed)
        return shm.write(self.request.buf, packed)

    async def converse(self, loop: asyncio.AbstractEventLoop, metas: list[shm.Meta]) -> list[Any]:
        """Ask the worker to run the inputs put in; its final answer, "ok" or "error". Grows the response
        segment when the worker asks. WorkerDiedError on EOF."""
        answer = await self.ask(loop, ["run", self.request.name, self.response.name, metas])
        while answer[0] == "grow":
            self.response = self.response.fit(int(answer[1]))
            answer = await self.ask(loop, ["resend", self.response.name])
        return answer

    async def ask(self, loop: asyncio.AbstractEventLoop, message: list[Any]) -> list[Any]:
        """Send one message and wait, on the event loop, for the answer; WorkerDiedError on EOF."""
        answer: asyncio.Future[list[Any]] = loop.create_future()
        fd = self.conn.fileno()
        try:
            send(self.conn, message)
        except OSError:
            raise WorkerDiedError from None
        loop.add_reader(fd, self._take_answer, loop, fd, answer)
        try:
            return await answer
        finally:
            loop.remove_reader(fd)

    def _take_answer(self, loop: asyncio.AbstractEventLoop, fd: int, answer: asyncio.Future[list[Any]]) -> None:
        loop.remove_reader(fd)
        if answer.done():
            return
        try:
            answer.set_result(recv(self.conn))
        except (EOFError, OSError, ValueError):
            answer.set_exception(WorkerDiedError())

    def reap(self, timeout: float) -> None:
        """Wait for the process to end, killing it after ``timeout``; note the exit code; free its handles."""
        if self.reaped:
            return
        self.process.join(timeout)
        if self.process.exitcode is None:
            self.process.kill()
            self.process.join()
        self.exitcode = self.process.exitcode
        self.process.close()
        self.reaped = True

    def retire(self, timeout: float) -> None:
        self.reap(timeout)
        self.dispose()

    def dispose(self) -> None:
        """Close the pipe and release both segments (idempotent)."""
        self.conn.close()
        self.request.close()
        self.response.close()

    def death(self, model: str, when: str) -> str:
        return f"worker process {self.pid} of model '{model}' died ({describe_exit(self.exitcode)}) {when}"


def stop_all(workers: list[Handle], graceful: set[int], busy: set[int], timeout: float) -> None:
    """Stop workers, reap them and unlink their segments. Those whose id() is in ``graceful`` (idle ones,
    which read it at once) get a stop message, the others SIGTERM; what still runs after ``timeout`` is
    killed. The pipes and maps of ``busy`` ones are left to the requests that hold them."""
    for worker in workers:
        if worker.reaped:
            continue
        if id(worker) in graceful:
            try:
                send(worker.conn, ["stop"])
                continue
            except OSError:
                pass
        worker.process.terminate()
    deadline = time.monotonic() + timeout
    for worker in workers:
        worker.reap(max(0.0, deadline - time.monotonic()))
        if id(worker) in busy:
            worker.request.unlink()
            worker.response.unlink()
        else:
            worker.dispose()


def signature_from_dict(data: dict[str, Any]) -> Signature:
    def specs(side: str) -> tuple[TensorSpec, ...]:
        return tuple(TensorSpec(s["name"], s["datatype"], tuple(s["shape"])) for s in data[side])

    return Signature(specs("inputs"), specs("outputs"))


# --- the worker's side ---------------------------------------------------------------------------------------

def main(conn: Connection, info: RuntimeInfo, artifact: Path, config_folder: Path, options: dict[str, Any],
         override: Signature | None) -> None:
    """The worker process's entry point."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the server decides
    try:
        runtime = load_runtime(info, artifact, config_folder, options, override)
    except Exception as exc:
        with contextlib.suppress(BrokenPipeError):
            send(conn, ["failed", describe(exc)])
        return
    requests, responses = shm.Attachment(), shm.Attachment()
    try:
        send(conn, ["loaded", runtime.signature.to_dict()])
        _serve(conn, runtime, requests, responses)
    except (BrokenPipeError, ConnectionResetError):  # the server is gone, or stopped waiting for us
        pass
    finally:
        requests.close()
        responses.close()
        runtime.close()


def die_with_parent() -> None:
    """Have the kernel kill this worker when the server dies (Linux ``PR_SET_PDEATHSIG``), even in the middle of
    a call that never returns: a killed server must not leave workers behind. The server's segments are then
    unlinked by its resource tracker, which outlives both (see :mod:`inferd.executors.shm`).

    The kernel sends the signal when the *thread* that started the worker ends: the server starts workers
    from threads that live as long as the executor (its loading threads and each executor's supervisor)."""
    if not sys.platform.startswith("linux"):  # pragma: no cover - elsewhere a dead server's pipe EOF stops idle ones
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:  # pragma: no cover
        return
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # the server died before the call above
        os._exit(1)


def _serve(conn: Connection, runtime: Runtime, requests: shm.Attachment, responses: shm.Attachment) -> None:
    while True:
        try:
            message = recv(conn)
        except EOFError:  # the server went away
            return
        if message[0] != "run":
            return
        _, request_name, response_name, metas = message
        if not _answer(conn, runtime, requests.buf(request_name), responses, response_name, metas):
            return


def _answer(conn: Connection, runtime: Runtime, request: memoryview, responses: shm.Attachment,
            response_name: str, metas: list[Any]) -> bool:
    """Run one request and reply; False when the server said stop instead of taking the outputs."""
    try:
        outputs = runtime.predict(as_declared(runtime.signature.column_inputs, shm.read(request, metas)))
        if not isinstance(outputs, Mapping):
            raise TypeError(f"model returned {type(outputs).__name__}, expected a mapping of output name to array")
        packed, needed = shm.pack(outputs)
    except Exception as exc:
        send(conn, ["error", describe(exc)])
        return True
    buf = responses.buf(response_name)
    if needed > len(buf):
        send(conn, ["grow", needed])
        answer: list[Any] = ["stop"]
        with contextlib.suppress(EOFError):
            answer = recv(conn)
        if answer[0] != "resend":
            return False
        buf = responses.buf(answer[1])
    send(conn, ["ok", shm.write(buf, packed)])
    return True
