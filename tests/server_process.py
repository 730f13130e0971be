"""Start ``inferd serve`` as a real subprocess on free loopback ports, and stop it by its process id."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from cli_runner import BIN, cli_env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    repository: Path | None
    """None: ``inferd serve`` with no REPO (the repository from the environment)."""
    log_path: Path
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    scheme: str = "http"
    """``https`` for a server started with TLS options."""
    client_options: dict[str, Any] = field(default_factory=dict)
    """httpx options (``verify``, ``cert``) for the readiness poll of a TLS server."""

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self, wait_ready: bool = True, timeout: float = 60) -> ServerProcess:
        repo = [] if self.repository is None else [str(self.repository)]
        command = [str(BIN / "inferd"), "serve", *repo, "--host", "127.0.0.1",
                   "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port), *self.extra_args]
        if "--state-dir" not in self.extra_args and "INFERD_STATE_DIR" not in self.env:
            # its own job store, beside its log: never the working folder's .inferd/ that other servers share
            command += ["--state-dir", str(self.log_path.parent / f"state-{self.http_port}")]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                            env={**cli_env(), **self.env})
        if wait_ready:
            self.wait(timeout=timeout)
        return self

    def wait(self, path: str = "/v2/health/ready", timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"inferd serve exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + path, timeout=1, **self.client_options).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"inferd serve not ready after {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM by pid, then SIGKILL if it does not exit in time. Returns the exit code."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout)
        return self.process.returncode

    def serving(self, timeout: float = 60) -> Iterator[ServerProcess]:
        """For a fixture (``yield from process.serving()``): start, hand the server over, then stop it and
        check that it exited cleanly, whatever the tests did."""
        try:
            self.start(timeout=timeout)
            yield self
        finally:
            assert self.stop() == 0, self.log()

    def kill(self) -> None:
        """SIGKILL by pid (no chance to clean up, as in a crash), and reap it."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(15)
