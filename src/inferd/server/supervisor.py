"""``inferd serve --workers N``: a small supervisor over N ordinary server processes that share the ports.

The supervisor binds the HTTP and gRPC ports once with ``SO_REUSEPORT`` and never listens on them: that reserves
them (a port in use is one clear error, before any worker starts; port 0 becomes a real port every worker then
uses), and the kernel spreads new connections over the workers, which bind the same ports with ``SO_REUSEPORT``
and listen. With the embedded SQLite job store it holds the state folder's lock for all of them and puts back in
the queue the jobs of a worker that died (:mod:`inferd.jobs.sqlite_shared`). It restarts a worker that exits
unexpectedly (after a delay that doubles while restarts keep failing, logged), forwards SIGTERM and SIGINT as
SIGTERM (each worker drains as a lone server does) and exits when every worker has stopped. It imports no model
code and serves nothing itself.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from inferd.backoff import doubling_delay
from inferd.server.worker import EXIT_CANNOT_SERVE, REPLACEMENTS_FILE
from inferd.settings import ServerSettings

log = logging.getLogger(__name__)

_TICK_S = 0.1
_FIRST_RESTART_S = 0.5
_MAX_RESTART_S = 30.0
_STEADY_S = 30.0
"""A worker that lived this long counts as healthy: its replacement starts after the first delay again."""
_KILL_AFTER_S = 15.0
"""After the drain grace period: workers still running then are killed."""


class ReservedPorts:
    """The ports every worker binds, held (bound, not listening) by the supervisor while it runs."""

    def __init__(self, settings: ServerSettings) -> None:
        self.sockets: list[socket.socket] = []
        try:
            self.http_port = self._reserve("HTTP", settings.host, settings.http_port, "--http-port")
            self.grpc_port = (self._reserve("gRPC", settings.host, settings.grpc_port, "--grpc-port")
                              if settings.grpc_port else 0)
        except OSError:
            self.close()
            raise

    def _reserve(self, what: str, host: str, port: int, option: str) -> int:
        bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        family, kind, proto, _, address = socket.getaddrinfo(bare or None, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        try:
            with socket.socket(family, kind, proto) as probe:  # first alone: refused where anything listens,
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the workers of another supervisor
                probe.bind(address)  # too (they would take a share of anyone who asks with SO_REUSEPORT)
                address = (address[0], probe.getsockname()[1], *address[2:])  # port 0: the port it got
            sock = socket.socket(family, kind, proto)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                sock.bind(address)
            except OSError:
                sock.close()
                raise
        except OSError as exc:
            raise OSError(exc.errno, f"{what} port {port} on {host} is in use; choose another with {option}") from None
        self.sockets.append(sock)
        return int(sock.getsockname()[1])

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


@dataclass(slots=True)
class _Slot:
    """One of the N workers, across its replacements."""

    index: int
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    failures: int = 0
    """Restarts in a row of workers that died before :data:`_STEADY_S`."""
    start_at: float = 0.0


WORKER_COMMAND = (sys.executable, "-m", "inferd.cli.worker")
"""The same interpreter running :mod:`inferd.cli.worker` (its settings on stdin)."""
class SharedJobs(Protocol):
    """The job store the workers share, as the supervisor sees it (inferd.jobs.sqlite_shared.SharedStateFolder)."""

    def requeue(self, worker: str) -> int:
        """Put back in the queue the jobs the worker of that name was running; how many."""

    def tidy(self) -> None:
        """Housekeeping, called every tick (it decides how often it does anything)."""


class Supervisor:
    """Keeps ``workers`` copies of one worker command line running until stopped."""

    def __init__(self, worker_settings: dict[str, Any], workers: int, folder: Path, grace_s: float,
                 jobs: SharedJobs | None = None, command: Sequence[str] = WORKER_COMMAND) -> None:
        self.worker_settings = worker_settings
        self.command = list(command)
        self.folder = folder
        self.grace_s = grace_s
        self.jobs = jobs
        self.slots = [_Slot(i) for i in range(workers)]
        self.stopping = False
        self.stop_deadline = 0.0
        self.exit_code = 0
        self.replacements = 0
        """Workers that exited unexpectedly (each replaced): the workers' /metrics read it from the folder."""

    def request_stop(self, signum: int, _frame: FrameType | None = None) -> None:
        """Ask every worker to drain and stop (a signal handler, and what a fatal worker error does)."""
        if self.stopping:
            return
        self.stopping = True
        self.stop_deadline = time.monotonic() + self.grace_s + _KILL_AFTER_S
        log.info("stopping %d workers (signal %d)", self.running(), signum)
        for slot in self.slots:
            if slot.process is not None and slot.process.poll() is None:
                slot.process.send_signal(signal.SIGTERM)

    def run(self) -> int:
        """Start the workers and keep them running until stopped; the exit code of ``inferd serve``."""
        for slot in self.slots:
            self._start(slot)
        while not self.stopping or self.running():
            time.sleep(_TICK_S)
            self.tick()
        return self.exit_code

    def tick(self) -> None:
        """Reap the workers that exited, start the replacements that are due, kill what outlived the grace."""
        now = time.monotonic()
        if self.jobs is not None:
            self.jobs.tidy()
        for slot in self.slots:
            code = self._reap(slot)
            if code == EXIT_CANNOT_SERVE and not self.stopping:
                log.error("worker %d cannot serve: stopping the others", slot.index)
                self.exit_code = 1
                self.request_stop(signal.SIGTERM)
            if slot.process is None and not self.stopping and now >= slot.start_at:
                self._start(slot)
        if self.stopping and now >= self.stop_deadline:
            for slot in self.slots:
                if slot.process is not None and slot.process.poll() is None:
                    log.warning("worker %d (pid %d) did not stop in time: killing it", slot.index, slot.process.pid)
                    slot.process.kill()

    def running(self) -> int:
        return sum(1 for slot in self.slots if slot.process is not None and slot.process.poll() is None)

    def _start(self, slot: _Slot) -> None:
        given = {"settings": self.worker_settings, "index": slot.index, "folder": str(self.folder),
                 "supervisor": os.getpid(), "shared_state": self.jobs is not None}
        process = subprocess.Popen(self.command, stdin=subprocess.PIPE)
        assert process.stdin is not None
        process.stdin.write(json.dumps(given).encode())
        process.stdin.close()
        slot.process, slot.started_at = process, time.monotonic()
        log.info("worker %d started (pid %d)", slot.index, process.pid)

    def _reap(self, slot: _Slot) -> int | None:
        """The exit code of the slot's worker if it just exited (then its replacement is scheduled), else None."""
        process = slot.process
        code = None if process is None else process.poll()
        if process is None or code is None:
            return None
        slot.process = None
        with contextlib.suppress(FileNotFoundError):
            (self.folder / f"worker-{process.pid}.sock").unlink()
        if self.jobs is not None and (requeued := self.jobs.requeue(str(process.pid))):
            log.warning("worker %d (pid %d) exited; asynchronous jobs it was running: %d, queued again",
                        slot.index, process.pid, requeued)
        if self.stopping:
            return code
        now = time.monotonic()
        slot.failures = 1 if now - slot.started_at >= _STEADY_S else slot.failures + 1
        delay = doubling_delay(_FIRST_RESTART_S, slot.failures, _MAX_RESTART_S)
        slot.start_at = now + delay
        self.replacements += 1
        _write_atomically(self.folder / REPLACEMENTS_FILE, str(self.replacements))
        log.warning("worker %d (pid %d) exited with code %d; its replacement starts in %.1f s", slot.index,
                    process.pid, code, delay)
        return code


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_suffix(".partial")
    partial.write_text(text)
    partial.replace(path)


def serve_workers(settings: ServerSettings) -> int:
    """Run ``settings.workers`` server processes on the same ports until SIGTERM or SIGINT; the exit code."""
    ports = ReservedPorts(settings)
    folder = Path(tempfile.mkdtemp(prefix="inferd-workers-"))
    held = None
    try:
        shared: SharedJobs | None = None
        if settings.job_store is None:
            from inferd.jobs.sqlite_shared import SharedStateFolder

            held = SharedStateFolder(settings.state_dir)  # a store that cannot open: each worker says why
            shared = held if held.open() else None
        worker_settings = {**settings.model_dump(mode="json"), "workers": 1, "http_port": ports.http_port,
                           "grpc_port": ports.grpc_port}
        supervisor = Supervisor(worker_settings, settings.workers, folder, settings.shutdown_grace_s, shared)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, supervisor.request_stop)
        log.info("%d workers on HTTP %s:%d%s", settings.workers, settings.host, ports.http_port,
                 f", gRPC {settings.host}:{ports.grpc_port}" if ports.grpc_port else "")
        return supervisor.run()
    finally:
        if held is not None:
            held.close()
        ports.close()
        shutil.rmtree(folder, ignore_errors=True)
