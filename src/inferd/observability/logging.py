"""Structured logs: one JSON object per line, with the request id of the request a record belongs to.

Nothing here runs at import. The CLI entry point calls :func:`configure_json` (through
``inferd.cli.common.configure_logging``); the server only logs. Records are queued by the thread that logs
them and written by a listener thread, so a slow stderr (a full pipe) never stalls the event loop.
"""

from __future__ import annotations

import atexit
import logging
import queue
import sys
import time
from logging.handlers import QueueHandler, QueueListener
from typing import IO, Any

import orjson

from inferd.observability.request_context import REQUEST_ID

_STANDARD = frozenset({
    *vars(logging.LogRecord("", 0, "", 0, "", None, None)), "message", "asctime", "request_id", "taskName",
    "color_message",  # uvicorn's copy of the message with terminal colours
})
"""LogRecord attributes that are not extra fields."""


class RequestIdFilter(logging.Filter):
    """Puts the current request's id (:data:`REQUEST_ID`) on records that lack one. Attach it to a handler
    that runs in the logging thread (a :class:`QueueHandler` does), not in a listener thread."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", "request_id"?, ...extra fields, "exc_info"?}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            entry["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str).decode()


class _Enqueue(QueueHandler):
    """A QueueHandler that keeps the exception text apart from the message, for the ``exc_info`` field."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        prepared = logging.makeLogRecord(record.__dict__)
        prepared.msg = record.getMessage()
        prepared.args = None
        if record.exc_info:
            prepared.exc_text = logging.Formatter().formatException(record.exc_info)
        prepared.exc_info = None
        return prepared


_listener: QueueListener | None = None


def configure_json(level: str, stream: IO[str] | None = None) -> None:
    """Route every log record, as JSON Lines, to ``stream`` (stderr) through a background thread. Python's
    warnings go the same way (logger ``py.warnings``): a library's warning printed as plain text would be the
    one line of the log that a JSON reader cannot parse."""
    global _listener
    stop_listener()
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    writer = logging.StreamHandler(stream or sys.stderr)
    writer.setFormatter(JsonFormatter())
    enqueue = _Enqueue(records)
    enqueue.addFilter(RequestIdFilter())
    logging.basicConfig(level=level.upper(), handlers=[enqueue], force=True)
    _listener = QueueListener(records, writer)
    _listener.start()
    logging.captureWarnings(True)
    atexit.register(stop_listener)


def stop_listener() -> None:
    """Write out what is queued and stop the listener thread (at exit, or before reconfiguring)."""
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None


def _timestamp(created: float) -> str:
    seconds = int(created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int((created - seconds) * 1000):03d}Z"
