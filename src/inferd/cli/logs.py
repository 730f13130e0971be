"""Where the commands' logs go: stderr, through Rich on a terminal and as plain lines elsewhere (``text``), or as
JSON Lines (``json``). Free of Rich at import:
``inferd serve`` imports Rich only once it is ready (:class:`HeldHandler`), not in every cold start."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable


def configure_logging(level: str, log_format: str = "text", hold: bool = False) -> HeldHandler | None:
    """Logs go to stderr: through Rich or plain (``text``, see :func:`rich_handler`), or as JSON Lines with request
    ids (``json``, see :mod:`inferd.observability.logging`). Configured by the CLI entry point, never at import.
    With ``hold`` (``text`` only), records below WARNING wait in the returned handler until its ``deliver()``."""
    from inferd.observability.logging import configure_json, stop_listener

    if log_format == "json":
        configure_json(level)
        return None
    stop_listener()
    handler = HeldHandler(rich_handler)
    if not hold:
        handler.deliver()
    logging.basicConfig(level=level.upper(), format="%(message)s", handlers=[handler], force=True)
    return handler


PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
"""Log lines into a pipe or a file (a container's log, journald, a test's file): one plain line each."""


def rich_handler() -> logging.Handler:
    """Rich's handler on the commands' stderr console when stderr is a terminal; a plain one otherwise (Rich lays out
    a log line as a table as wide as its console, which into a pipe is wide enough never to wrap: every line came
    out padded to 10,000 characters)."""
    if not sys.stderr.isatty():
        plain = logging.StreamHandler(sys.stderr)
        plain.setFormatter(logging.Formatter(PLAIN_FORMAT))
        return plain
    from rich.logging import RichHandler

    from inferd.cli.common import errors

    return RichHandler(console=errors, show_path=False, rich_tracebacks=False)


class HeldHandler(logging.Handler):
    """Holds the records below WARNING until :meth:`deliver`, then hands them, and every later record, to the
    handler ``make`` builds (only then). A warning or worse, or logging's shutdown at exit, releases at once: a
    problem is never held back, and nothing held is lost. Records keep their own times."""

    def __init__(self, make: Callable[[], logging.Handler]) -> None:
        super().__init__()
        self._make = make
        self._target: logging.Handler | None = None
        self._held: list[logging.LogRecord] = []
        self._release_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        target = self._target
        if target is None:
            if record.levelno < logging.WARNING:
                with self._release_lock:
                    if self._target is None:
                        self._held.append(record)
                        return
            target = self.deliver()
        target.handle(record)

    def deliver(self) -> logging.Handler:
        """Build the target handler (once) and pass it what was held."""
        with self._release_lock:
            if self._target is None:
                target = self._make()
                target.setLevel(self.level)
                if self.formatter is not None and target.formatter is None:  # the plain handler has its own
                    target.setFormatter(self.formatter)
                for record in self._held:
                    target.handle(record)
                self._held.clear()
                self._target = target
            return self._target

    def setLevel(self, level: int | str) -> None:  # noqa: N802 - logging's name
        super().setLevel(level)
        if self._target is not None:
            self._target.setLevel(level)

    def close(self) -> None:
        if self._held:
            self.deliver()
        if self._target is not None:
            self._target.close()
        super().close()
