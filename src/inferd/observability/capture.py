"""Data capture, like SageMaker Data Capture: a sample of successful inferences, request and response, written
as JSON Lines for monitoring, debugging and retraining.

On the request path there is only the sampling draw and, for a sampled request, a ``put_nowait`` of the objects
the DataPlane already holds (the decoded request and the response) on a bounded queue. When the queue is full
the capture is dropped and counted (``inferd_capture_dropped_total``); a request is never slowed or failed by
capture. One writer thread encodes the records and appends them to::

    <destination>/<model>/<version>/YYYY/MM/DD/HH/<YYYYmmddTHHMMSSZ>-<seq>.jsonl

(UTC), starting a new file when the current one would pass ``max_file_bytes``, is ``max_file_seconds`` old or
belongs to a past hour. Files are flushed whenever the queue runs empty, and closed when the server stops.

One record per line::

    {"timestamp": "2025-01-31T12:00:00.123Z", "request_id": "...", "model": "m", "version": "1",
     "request": {"id": ..., "parameters": ..., "inputs": [{"name", "datatype", "shape", "data"}]},
     "response": {"id": ..., "outputs": [{"name", "datatype", "shape", "data"}]}}

Tensors are in their V2 JSON form; BYTES that are not UTF-8 text have ``"encoding": "base64"`` and base64
strings as ``data``.
"""

from __future__ import annotations

import base64
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from random import random
from typing import IO, Any

import numpy as np
import orjson

from inferd.config import CaptureConfig
from inferd.inference import InferenceRequest, InferenceResponse
from inferd.observability.request_context import REQUEST_ID
from inferd.tensors import to_jsonable

log = logging.getLogger(__name__)

Key = tuple[str, str]
"""(model, version)"""

_Item = tuple[float, str | None, CaptureConfig, str, int, InferenceRequest, InferenceResponse]


@dataclass(slots=True)
class _OpenFile:
    path: Path
    file: IO[bytes]
    hour: tuple[int, int, int, int]
    opened: float
    max_seconds: float
    size: int = 0


class CaptureWriter:
    """Takes sampled inferences on a bounded queue and writes them from one thread."""

    idle_s = 1.0
    """How often an idle writer checks for files to close (past ``max_file_seconds``)."""

    def __init__(self, default_dir: Path, buffer: int = 1024) -> None:
        self.default_dir = default_dir
        self.dropped: dict[Key, int] = {}
        """Captures dropped because the queue was full (written by the event loop thread only)."""
        self.written: dict[Key, int] = {}
        self.failed: dict[Key, int] = {}
        """Captures the writer could not write (disk full, permissions); each is logged."""
        self._queue: queue.Queue[_Item | None] = queue.Queue(maxsize=buffer)
        self._files: dict[tuple[str, str, int], _OpenFile] = {}
        self._seq = 0
        self._thread: threading.Thread | None = None

    # -- the request side ------------------------------------------------------------------------
    def offer(self, config: CaptureConfig, model: str, version: int, request: InferenceRequest,
              response: InferenceResponse) -> None:
        """Capture this inference if the sampling draw says so and the queue has room; never blocks."""
        if config.sample_percent < 100.0 and random() * 100.0 >= config.sample_percent:
            return
        try:
            self._queue.put_nowait((time.time(), REQUEST_ID.get(), config, model, version, request, response))
        except queue.Full:
            key = (model, str(version))
            self.dropped[key] = self.dropped.get(key, 0) + 1

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="inferd-capture", daemon=True)
            self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (for up to ``timeout`` seconds), close the files, stop the thread."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            log.warning("data capture: the writer did not catch up in %.0f s; queued captures are lost", timeout)
            return
        thread.join(timeout)

    # -- the writer thread -----------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=self.idle_s)
            except queue.Empty:
                self._close_aged(time.time())
                continue
            if item is None:
                break
            self._write(item)
            if self._queue.empty():
                self._flush()
        for key in list(self._files):
            self._close(key)

    def _write(self, item: _Item) -> None:
        now, request_id, config, model, version, request, response = item
        key = (model, str(version))
        try:
            line = encode_record(now, request_id, model, version, request, response)
            target = self._file_for(config, model, version, now, len(line))
            target.file.write(line)
            target.size += len(line)
        except Exception as exc:  # a capture that cannot be written is counted and logged, nothing more
            self.failed[key] = self.failed.get(key, 0) + 1
            log.warning("data capture: cannot write a record of model %s version %s: %s", model, version, exc)
            return
        self.written[key] = self.written.get(key, 0) + 1

    def _file_for(self, config: CaptureConfig, model: str, version: int, now: float, size: int) -> _OpenFile:
        folder = Path(config.destination) if config.destination else self.default_dir
        key = (str(folder), model, version)
        hour = time.gmtime(now)[:4]
        current = self._files.get(key)
        if current is not None and (current.hour != hour or now - current.opened >= config.max_file_seconds
                                    or (current.size and current.size + size > config.max_file_bytes)):
            self._close(key)
            current = None
        if current is None:
            current = self._files[key] = self._open(folder / model / str(version), now, config.max_file_seconds)
        return current

    def _open(self, folder: Path, now: float, max_seconds: float) -> _OpenFile:
        stamp = time.gmtime(now)
        where = folder / time.strftime("%Y/%m/%d/%H", stamp)
        where.mkdir(parents=True, exist_ok=True)
        self._seq += 1
        # the process id keeps the names of several processes on one destination apart (--workers, replicas)
        path = where / f"{time.strftime('%Y%m%dT%H%M%SZ', stamp)}-{os.getpid()}-{self._seq:06d}.jsonl"
        return _OpenFile(path, path.open("ab"), stamp[:4], now, max_seconds)

    def _flush(self) -> None:
        for open_file in self._files.values():
            try:
                open_file.file.flush()
            except OSError as exc:
                log.warning("data capture: cannot flush %s: %s", open_file.path, exc)

    def _close_aged(self, now: float) -> None:
        """Close files an idle writer holds past their time (the next record opens a new one anyway)."""
        for key, open_file in list(self._files.items()):
            if time.gmtime(now)[:4] != open_file.hour or now - open_file.opened >= open_file.max_seconds:
                self._close(key)

    def _close(self, key: tuple[str, str, int]) -> None:
        open_file = self._files.pop(key)
        try:
            open_file.file.close()
        except OSError as exc:
            log.warning("data capture: cannot close %s: %s", open_file.path, exc)


def encode_record(now: float, request_id: str | None, model: str, version: int,
                  request: InferenceRequest, response: InferenceResponse) -> bytes:
    """One JSON Lines record (with its newline)."""
    seconds = int(now)
    record = {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int((now - seconds) * 1000):03d}Z",
        "request_id": request_id,
        "model": model,
        "version": str(version),
        "request": {
            "id": request.id,
            "parameters": request.parameters,
            "inputs": [encode_tensor(i.name, i.datatype, i.shape, i.data) for i in request.inputs],
        },
        "response": {
            "id": response.id,
            "outputs": [encode_tensor(o.name, o.datatype, o.shape, o.data) for o in response.outputs],
        },
    }
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)


def encode_tensor(name: str, datatype: str, shape: list[int], data: Any) -> dict[str, Any]:
    """A tensor in its V2 JSON form; non-UTF-8 BYTES as base64 strings."""
    tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(shape)}
    if isinstance(data, list) and any(isinstance(v, bytes) for v in data):  # gRPC's typed bytes_contents
        data = np.array(data, dtype=object)
    if not isinstance(data, np.ndarray):
        tensor["data"] = data  # the JSON form the request came in
        return tensor
    try:
        tensor["data"] = to_jsonable(data)
    except UnicodeDecodeError:
        tensor["encoding"] = "base64"
        tensor["data"] = [base64.b64encode(bytes(v)).decode("ascii") for v in data.ravel()]
    return tensor
