"""Data capture in process: the records, sampling, rotation, and a full queue that drops without waiting."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import numpy as np
import orjson
import pytest

from fakes import ADDER, write_model
from inferd.config import CaptureConfig, ConfigError, load_model_config
from inferd.dataplane import DataPlane
from inferd.errors import InferError
from inferd.inference import InferenceRequest, InferenceResponse, RequestInput, ResponseOutput
from inferd.observability.capture import CaptureWriter, encode_tensor
from inferd.observability.request_context import REQUEST_ID
from inferd.repository import ModelRepository


def request(i: int) -> InferenceRequest:
    return InferenceRequest("m", [RequestInput("x", "INT64", [1], [i])], id=f"id-{i}")


def response(i: int) -> InferenceResponse:
    return InferenceResponse("m", "1", [ResponseOutput("y", "INT64", [1], np.array([2 * i]))], id=f"id-{i}")


def records(root: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for path in sorted(root.rglob("*.jsonl")) for line in path.read_bytes().splitlines()]


def test_records_land_under_dated_folders_with_request_and_response(tmp_path: Path) -> None:
    writer = CaptureWriter(tmp_path)
    writer.start()
    token = REQUEST_ID.set("rid-1")
    try:
        writer.offer(CaptureConfig(enabled=True), "m", 1, request(3), response(3))
    finally:
        REQUEST_ID.reset(token)
    writer.close()
    [path] = list(tmp_path.rglob("*.jsonl"))
    parts = path.relative_to(tmp_path).parts
    assert parts[:2] == ("m", "1")
    stamp = time.gmtime(path.stat().st_mtime)
    assert parts[2:6] == tuple(time.strftime(f, stamp) for f in ("%Y", "%m", "%d", "%H"))
    assert path.name.endswith(f"-{os.getpid()}-000001.jsonl")
    [record] = records(tmp_path)
    assert record["request_id"] == "rid-1"
    assert (record["model"], record["version"]) == ("m", "1")
    assert record["request"] == {"id": "id-3", "parameters": None,
                                 "inputs": [{"name": "x", "datatype": "INT64", "shape": [1], "data": [3]}]}
    assert record["response"] == {"id": "id-3",
                                  "outputs": [{"name": "y", "datatype": "INT64", "shape": [1], "data": [6]}]}
    assert writer.written == {("m", "1"): 1}


def test_sampling_takes_about_the_share_asked_for(tmp_path: Path) -> None:
    writer = CaptureWriter(tmp_path, buffer=10_000)  # not started: the queue keeps what was sampled
    for i in range(4000):
        writer.offer(CaptureConfig(enabled=True, sample_percent=25), "m", 1, request(i), response(i))
    assert 800 < writer._queue.qsize() < 1200
    none = CaptureWriter(tmp_path, buffer=10_000)
    for i in range(1000):
        none.offer(CaptureConfig(enabled=True, sample_percent=0), "m", 1, request(i), response(i))
    assert none._queue.qsize() == 0


def test_files_rotate_by_size(tmp_path: Path) -> None:
    writer = CaptureWriter(tmp_path)
    config = CaptureConfig(enabled=True, max_file_bytes=600)
    writer.start()
    for i in range(20):
        writer.offer(config, "m", 1, request(i), response(i))
    writer.close()
    files = sorted(tmp_path.rglob("*.jsonl"))
    assert len(files) >= 5
    sizes = [f.stat().st_size for f in files]
    assert all(size <= 600 for size in sizes), sizes
    assert [r["request"]["id"] for r in records(tmp_path)] == [f"id-{i}" for i in range(20)], "nothing lost, in order"


def test_files_rotate_by_age(tmp_path: Path) -> None:
    writer = CaptureWriter(tmp_path)
    config = CaptureConfig(enabled=True, max_file_seconds=0.05)
    writer.start()
    writer.offer(config, "m", 1, request(1), response(1))
    time.sleep(0.2)
    writer.offer(config, "m", 1, request(2), response(2))
    writer.close()
    assert len(list(tmp_path.rglob("*.jsonl"))) == 2


def test_binary_that_is_not_text_is_base64() -> None:
    data = np.array([b"\xff\x00", b"ok"], dtype=object)
    assert encode_tensor("t", "BYTES", [2], data) == {"name": "t", "datatype": "BYTES", "shape": [2],
                                                      "encoding": "base64", "data": ["/wA=", "b2s="]}
    assert encode_tensor("t", "BYTES", [1], np.array([b"hi"], dtype=object))["data"] == ["hi"]
    assert encode_tensor("t", "BYTES", [2], [b"hi", b"\xff"])["data"] == ["aGk=", "/w=="], "gRPC typed contents"
    assert encode_tensor("t", "BYTES", [2], ["hi", "yo"])["data"] == ["hi", "yo"], "the JSON form, as it came"


class _BlockedWriter(CaptureWriter):
    """A writer whose disk hangs until ``release`` is set."""

    def __init__(self, root: Path, buffer: int) -> None:
        super().__init__(root, buffer)
        self.release = threading.Event()
        self.writing = threading.Event()

    def _write(self, item):  # type: ignore[no-untyped-def]
        self.writing.set()
        self.release.wait(30)
        super()._write(item)


def test_a_full_queue_drops_and_counts_and_never_waits(tmp_path: Path) -> None:
    writer = _BlockedWriter(tmp_path, buffer=2)
    writer.start()
    config = CaptureConfig(enabled=True)
    writer.offer(config, "m", 1, request(0), response(0))
    assert writer.writing.wait(10)  # the writer holds record 0 and hangs
    started = time.perf_counter()
    for i in range(1, 101):
        writer.offer(config, "m", 1, request(i), response(i))
    elapsed = time.perf_counter() - started
    assert elapsed < 0.5, f"offering 100 captures to a hung writer took {elapsed:.3f} s"
    assert writer.dropped == {("m", "1"): 98}, "two fit in the queue, the rest are dropped and counted"
    writer.release.set()
    writer.close()
    assert [r["request"]["id"] for r in records(tmp_path)] == ["id-0", "id-1", "id-2"]


def test_a_write_error_is_counted_and_the_writer_goes_on(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    writer = CaptureWriter(tmp_path)
    writer.start()
    writer.offer(CaptureConfig(enabled=True, destination=str(blocker)), "m", 1, request(1), response(1))
    writer.offer(CaptureConfig(enabled=True), "m", 1, request(2), response(2))
    writer.close()
    assert writer.failed == {("m", "1"): 1}
    assert writer.written == {("m", "1"): 1}


@pytest.mark.parametrize(("toml", "captured"), [
    ("[capture]\nenabled = true\nsample_percent = 100\n", 3),
    ("[capture]\nenabled = true\nsample_percent = 0\n", 0),
    ("[capture]\nenabled = false\n", 0),
    (None, 0),
])
def test_the_dataplane_captures_successful_inferences_of_models_that_ask(tmp_path: Path, toml: str | None,
                                                                         captured: int) -> None:
    write_model(tmp_path / "models", "adder", ADDER, toml=toml)
    writer = CaptureWriter(tmp_path / "capture")
    writer.start()

    async def main() -> None:
        plane = DataPlane(ModelRepository(tmp_path / "models"), capture=writer)
        await plane.start()
        ok = [RequestInput("a", "FP32", [1, 3], [1, 2, 3]), RequestInput("b", "FP32", [1, 3], [1, 1, 1])]
        for _ in range(3):
            await plane.infer(InferenceRequest("adder", ok))
        with pytest.raises(InferError, match="expected datatype"):
            await plane.infer(InferenceRequest("adder", [ok[0], RequestInput("b", "INT32", [1, 3], [1, 1, 1])]))
        plane.close()

    asyncio.run(main())
    writer.close()
    found = records(tmp_path / "capture")
    assert len(found) == captured
    if captured:
        assert found[0]["response"]["outputs"][0]["data"] == [2.0, 3.0, 4.0]
        assert found[0]["response"]["outputs"][1] == {"name": "total", "datatype": "FP64", "shape": [1],
                                                      "data": [9.0]}


@pytest.mark.parametrize(("toml", "message"), [
    ("[capture]\nenabled = true\nsample_percent = 150\n", ":3: key 'capture.sample_percent': Input should be less"),
    ("description = 'x'\n[capture]\nenabled = true\nrate = 5\n", ":4: key 'capture.rate': unknown key"),
    ("[capture]\nenabled = 'yes'\n", ":2: key 'capture.enabled': Input should be a valid boolean"),
    ("[capture]\nmax_file_bytes = 0\n", ":2: key 'capture.max_file_bytes': Input should be greater than"),
])
def test_capture_config_errors_name_file_line_and_key(tmp_path: Path, toml: str, message: str) -> None:
    (tmp_path / "model.toml").write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_model_config(tmp_path)
    assert f"{tmp_path / 'model.toml'}{message}" in str(info.value)
