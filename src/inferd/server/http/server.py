"""The HTTP listener: binds, hands each connection an :class:`~inferd.server.http.protocol.HTTPConnection`, and
stops gracefully (no new connections, idle ones closed, requests in flight answered within a grace period)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import ssl

from inferd.server.http.protocol import Front, HTTPConnection

log = logging.getLogger(__name__)

_BACKLOG = 2048
_POLL_S = 0.02


class PortInUseError(OSError):
    """The port is taken (by another server, or another inferd)."""

    def __init__(self, what: str, host: str, port: int, option: str) -> None:
        super().__init__(f"{what} port {port} on {host} is in use; choose another with {option}")
        self.errno = errno.EADDRINUSE


class HTTPServer:
    def __init__(self, front: Front, host: str, port: int, ssl_context: ssl.SSLContext | None = None,
                 reuse_port: bool = False) -> None:
        self.front = front
        self.reuse_port = reuse_port
        """Share the port (SO_REUSEPORT) with the other workers of ``--workers N``."""
        self.host = bind_host(host)
        self.port = port
        self.ssl_context = ssl_context
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        """Bind and start accepting; :class:`PortInUseError` when the port is taken."""
        loop = asyncio.get_running_loop()
        front = self.front
        try:
            self._server = await loop.create_server(lambda: HTTPConnection(front), self.host, self.port,
                                                    ssl=self.ssl_context, backlog=_BACKLOG, reuse_address=True,
                                                    reuse_port=self.reuse_port or None)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError("HTTP", self.host, self.port, "--http-port") from None
            raise
        sockets = self._server.sockets
        if sockets and not self.port:
            self.port = sockets[0].getsockname()[1]

    async def stop(self, grace_s: float = 30.0) -> None:
        """Stop accepting, close idle connections, let those answering a request finish (each closes after its
        answer), and after ``grace_s`` close whatever is left."""
        front = self.front
        front.stopping = True
        if self._server is not None:
            self._server.close()
        for connection in list(front.connections):
            connection.close_if_idle()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while front.connections and loop.time() < deadline:
            await asyncio.sleep(_POLL_S)
        if front.connections:
            log.warning("closing %d HTTP connections still busy after the %g s grace period",
                        len(front.connections), grace_s)
        for task in list(front.exchanges):
            task.cancel()
        for connection in list(front.connections):
            connection.transport.abort()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):  # every connection was aborted above
                await asyncio.wait_for(self._server.wait_closed(), timeout=1.0)


def bind_host(host: str) -> str:
    """The address to bind: an IPv6 literal may be written in brackets, as in a URL (``[::1]``)."""
    if host.startswith("[") and host.endswith("]"):
        return host[1:-1]
    return host
