"""inferd's own HTTP/1.1 server on httptools: the connection protocol, the bridge to ASGI apps and the listener.

Routes that answer on the connection itself (inference and the health probes: see :class:`~.routes.Router`) never
build an ASGI scope or a task; every other request goes to the ASGI app (FastAPI) through :mod:`.asgi`.
"""

from inferd.server.http.limits import HTTPLimits
from inferd.server.http.server import HTTPServer, PortInUseError

__all__ = ["HTTPLimits", "HTTPServer", "PortInUseError"]
