"""The supervisor of ``--workers N`` (``inferd.server.supervisor``) over small real processes standing in for
workers: each reads what the supervisor sends on stdin and behaves as the test says (runs until SIGTERM, exits at
once with a code). No model code: what is checked is restarts, their delays, the requeue of an exited worker's
jobs, the forwarding of SIGTERM, and a worker that cannot serve stopping the whole server."""

from __future__ import annotations

import errno
import json
import signal
import socket
import sys
import textwrap
import time
from pathlib import Path

import pytest

from inferd.server import supervisor as supervision
from inferd.server.supervisor import ReservedPorts, Supervisor
from inferd.server.worker import EXIT_CANNOT_SERVE
from inferd.settings import ServerSettings

WORKER = textwrap.dedent("""
    import json, os, signal, sys, time
    from pathlib import Path
    given = json.loads(sys.stdin.read())
    folder = Path(given["folder"])
    (folder / f"{os.getpid()}.json").write_text(json.dumps(given))
    behaviour = (folder / f"behaviour-{given['index']}").read_text().split()
    if behaviour[0] == "exit":
        sys.exit(int(behaviour[1]))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        time.sleep(0.05)
""")


def _supervisor(tmp_path: Path, behaviours: list[str], requeued: list[str] | None = None) -> Supervisor:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    for index, behaviour in enumerate(behaviours):
        (tmp_path / f"behaviour-{index}").write_text(behaviour)

    return Supervisor({"http_port": 1}, len(behaviours), tmp_path, grace_s=5.0, jobs=_Jobs(requeued),
                      command=[sys.executable, str(script)])


class _Jobs:
    """What the supervisor is asked to requeue (the shared store's side is tests/unit/jobs/test_sqlite_shared.py)."""

    def __init__(self, requeued: list[str] | None) -> None:
        self.requeued = requeued

    def requeue(self, worker: str) -> int:
        if self.requeued is not None:
            self.requeued.append(worker)
        return 0

    def tidy(self) -> None:
        pass


def _until(supervisor: Supervisor, check, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        supervisor.tick()
        time.sleep(0.02)


def _started(tmp_path: Path) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in sorted(tmp_path.glob("[0-9]*.json"))]


def test_each_worker_gets_its_settings_index_and_folder_then_sigterm_stops_them(tmp_path):
    supervisor = _supervisor(tmp_path, ["run", "run"])
    for slot in supervisor.slots:
        supervisor._start(slot)
    _until(supervisor, lambda: len(_started(tmp_path)) == 2)
    given = _started(tmp_path)
    assert sorted(g["index"] for g in given) == [0, 1]
    assert [g["settings"] for g in given] == [{"http_port": 1}] * 2
    assert [g["shared_state"] for g in given] == [True, True]
    supervisor.request_stop(signal.SIGTERM)
    _until(supervisor, lambda: all(slot.process is None for slot in supervisor.slots))  # reaped, not replaced
    assert supervisor.exit_code == 0


def test_a_worker_that_dies_is_replaced_after_a_delay_that_doubles(tmp_path, monkeypatch):
    monkeypatch.setattr(supervision, "_FIRST_RESTART_S", 0.2)
    requeued: list[str] = []
    supervisor = _supervisor(tmp_path, ["exit 3"], requeued)
    slot = supervisor.slots[0]
    supervisor._start(slot)
    first = slot.process
    assert first is not None
    _until(supervisor, lambda: slot.failures == 1)
    assert requeued == [str(first.pid)]  # its jobs are queued again before anything else
    delay = slot.start_at - time.monotonic()
    assert 0 < delay <= 0.2
    _until(supervisor, lambda: slot.failures == 2)
    assert 0.2 < slot.start_at - time.monotonic() <= 0.4
    assert len(_started(tmp_path)) == 2
    supervisor.request_stop(signal.SIGTERM)
    _until(supervisor, lambda: supervisor.running() == 0)


def test_a_worker_that_cannot_serve_stops_the_others(tmp_path):
    supervisor = _supervisor(tmp_path, ["run", f"exit {EXIT_CANNOT_SERVE}"])
    assert supervisor.run() == 1
    assert supervisor.running() == 0


def test_ports_are_reserved_port_0_becomes_a_real_port_and_workers_can_join_it():
    ports = ReservedPorts(ServerSettings(http_port=0, grpc_port=0))
    try:
        assert ports.http_port > 0
        assert ports.grpc_port == 0  # gRPC off
        with socket.socket() as lone, pytest.raises(OSError, match="in use") as refused:  # a lone server
            lone.bind(("127.0.0.1", ports.http_port))  # (no SO_REUSEPORT)
        assert refused.value.errno == errno.EADDRINUSE
        with socket.socket() as worker:  # but a worker, as the HTTP server binds with reuse_port
            worker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            worker.bind(("127.0.0.1", ports.http_port))
            worker.listen()
            with pytest.raises(OSError, match=f"HTTP port {ports.http_port} on 127.0.0.1 is in use; choose"):
                ReservedPorts(ServerSettings(http_port=ports.http_port, grpc_port=0))  # a second supervisor
    finally:
        ports.close()
