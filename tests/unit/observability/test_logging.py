"""JSON log records: their fields, extra fields, exceptions, and the request id through the queue thread."""

from __future__ import annotations

import io
import logging
import subprocess
import sys

import orjson

from inferd.observability.logging import JsonFormatter, configure_json, stop_listener
from inferd.observability.request_context import REQUEST_ID


def test_a_record_becomes_one_json_line_with_its_extra_fields() -> None:
    record = logging.makeLogRecord({"name": "inferd.x", "levelno": logging.WARNING, "levelname": "WARNING",
                                    "msg": "model %s failed", "args": ("m",), "created": 1700000000.25,
                                    "request_id": "r1", "model": "m", "rows": 3})
    line = JsonFormatter().format(record)
    assert "\n" not in line
    assert orjson.loads(line) == {"ts": "2023-11-14T22:13:20.250Z", "level": "warning", "logger": "inferd.x",
                                  "message": "model m failed", "request_id": "r1", "model": "m", "rows": 3}


def test_exceptions_go_in_their_own_field() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("t").makeRecord("t", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    entry = orjson.loads(JsonFormatter().format(record))
    assert entry["message"] == "failed"
    assert "ValueError: boom" in entry["exc_info"]


def test_configured_json_logging_carries_the_request_id_and_flushes_on_stop() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        configure_json("info", stream)
        token = REQUEST_ID.set("req-77")
        try:
            logging.getLogger("inferd.test").info("inside %d", 1, extra={"path": "/v2"})
            try:
                raise RuntimeError("kaput")
            except RuntimeError:
                logging.getLogger("inferd.test").exception("it broke")
        finally:
            REQUEST_ID.reset(token)
        logging.getLogger("inferd.test").debug("below the level")
        logging.getLogger("inferd.test").warning("outside")
        stop_listener()
    finally:
        stop_listener()
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert [(e["message"], e.get("request_id")) for e in lines] == [
        ("inside 1", "req-77"), ("it broke", "req-77"), ("outside", None)]
    assert lines[0]["path"] == "/v2"
    assert "RuntimeError: kaput" in lines[1]["exc_info"]


def test_python_warnings_become_json_lines_too() -> None:
    script = ("import warnings\nfrom inferd.observability.logging import configure_json\n"
              "configure_json('info')\nwarnings.warn('a library complains', UserWarning)\n")
    done = subprocess.run([sys.executable, "-W", "default", "-c", script], capture_output=True, text=True,
                          timeout=60, check=True)
    lines = [orjson.loads(line) for line in done.stderr.splitlines() if line.strip()]
    assert [e["logger"] for e in lines] == ["py.warnings"]
    assert "a library complains" in lines[0]["message"]
