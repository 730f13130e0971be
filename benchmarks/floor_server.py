"""The least a Python V2 server can do per request: a floor to measure inferd against on the same machine.

usage: .venv/bin/python benchmarks/floor_server.py REPO HTTP_PORT GRPC_PORT [--batch]
As a serve_bench.py server: --server-cmd 'floor=.venv/bin/python benchmarks/floor_server.py {repo} {http} {grpc}'

It serves ``REPO/digits/1/model.onnx`` on 127.0.0.1 and does nothing but the call itself: V2 JSON inference at
``POST /v2/models/digits/infer`` and ``GET /v2/health/ready`` over uvloop + httptools (no framework, no
validation, no statistics, no request ids), and ``ModelInfer`` over grpc.aio (raw tensor contents in and out) on
the same event loop, with fixed metadata and configuration for perf_analyzer (``-i grpc``). Every request is
assumed well formed. What inferd costs beyond this is the price of its features; what this costs is the price of
Python, the event loop, the socket and the model.

With ``--batch`` the HTTP requests that arrive in one turn of the event loop run as one model call (what inferd's
zero-delay dynamic batching does, with nothing else): the floor for a server that batches. At many connections
it is far below the per-request floor, because a model call run between socket reads runs with cold caches and
costs several times what it costs in a loop.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any, cast

import grpc
import httptools
import numpy as np
import onnxruntime as ort
import orjson
import uvloop

from inferd.server.grpc.generated import grpc_service_pb2 as pb
from inferd.server.grpc.generated import grpc_service_pb2_grpc as pb_grpc
from inferd.server.grpc.generated import model_config_pb2 as config_pb

_READY = b'{"ready":true}'


def _session(repo: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(str(repo / "digits" / "1" / "model.onnx"), options,
                                providers=["CPUExecutionProvider"])


class TurnBatcher:
    """Collects the requests of one event-loop turn and runs them as one model call at the end of the turn."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self.session = session
        self.waiting: list[tuple[FloorHTTP, np.ndarray]] = []

    def add(self, protocol: FloorHTTP, array: np.ndarray) -> None:
        if not self.waiting:
            asyncio.get_running_loop().call_soon(self.run)
        self.waiting.append((protocol, array))

    def run(self) -> None:
        batch, self.waiting = self.waiting, []
        arrays = [array for _, array in batch]
        (probabilities,) = self.session.run(["probabilities"], {"input": np.concatenate(arrays)})
        start = 0
        for (protocol, array) in batch:
            rows = probabilities[start:start + len(array)]
            start += len(array)
            protocol.answer(b"200 OK", _encode(rows))


def _encode(probabilities: np.ndarray) -> bytes:
    return orjson.dumps({
        "model_name": "digits", "model_version": "1",
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": list(probabilities.shape),
                     "data": probabilities.ravel().tolist()}]})


class FloorHTTP(asyncio.Protocol):
    """HTTP/1.1 keep-alive; one answer per request, in one write."""

    def __init__(self, session: ort.InferenceSession, batcher: TurnBatcher | None = None) -> None:
        self.session = session
        self.batcher = batcher
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.body: list[bytes] = []
        self.url = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body, self.body = b"".join(self.body), []
        if self.url == b"/v2/health/ready":
            status, content = b"200 OK", _READY
        elif self.url != b"/v2/models/digits/infer":
            status, content = b"404 Not Found", b'{"error":"the floor serves only digits"}'
        else:
            try:
                array = self.decode(body)
                if self.batcher is not None:
                    self.batcher.add(self, array)
                    return
                (probabilities,) = self.session.run(["probabilities"], {"input": array})
                status, content = b"200 OK", _encode(probabilities)
            except Exception as exc:  # binary bodies, malformed JSON: not what the floor is for
                status, content = b"400 Bad Request", orjson.dumps({"error": f"{type(exc).__name__}: {exc}"})
        self.answer(status, content)

    def answer(self, status: bytes, content: bytes) -> None:
        assert self.transport is not None
        self.transport.write(b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                             % (status, len(content), content))

    @staticmethod
    def decode(body: bytes) -> np.ndarray:
        """V2 JSON in: one input (the reply has output ``probabilities``)."""
        request = orjson.loads(body)
        tensor = request["inputs"][0]
        return np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])


class FloorGRPC(pb_grpc.GRPCInferenceServiceServicer):
    """ModelInfer, plus the fixed metadata and configuration perf_analyzer reads before it starts."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self.session = session

    async def ServerMetadata(self, request: Any, context: Any) -> pb.ServerMetadataResponse:  # noqa: N802
        return pb.ServerMetadataResponse(name="floor", version="0")

    async def ModelMetadata(self, request: Any, context: Any) -> pb.ModelMetadataResponse:  # noqa: N802
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(name="digits", versions=["1"], platform="onnxruntime_onnx",
                                        inputs=[tensor(name="input", datatype="FP32", shape=[-1, 64])],
                                        outputs=[tensor(name="probabilities", datatype="FP32", shape=[-1, 10])])

    async def ModelConfig(self, request: Any, context: Any) -> pb.ModelConfigResponse:  # noqa: N802
        return pb.ModelConfigResponse(config=config_pb.ModelConfig(
            name="digits", max_batch_size=64,
            input=[config_pb.ModelInput(name="input", data_type=config_pb.TYPE_FP32, dims=[64])],
            output=[config_pb.ModelOutput(name="probabilities", data_type=config_pb.TYPE_FP32, dims=[10])]))

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:  # noqa: N802
        tensor = request.inputs[0]
        array = np.frombuffer(request.raw_input_contents[0], dtype=np.float32).reshape(tuple(tensor.shape))
        (probabilities,) = self.session.run(["probabilities"], {"input": array})
        return pb.ModelInferResponse(
            model_name="digits", model_version="1",
            outputs=[pb.ModelInferResponse.InferOutputTensor(name="probabilities", datatype="FP32",
                                                             shape=list(probabilities.shape))],
            raw_output_contents=[probabilities.tobytes()])


async def serve(repo: Path, http_port: int, grpc_port: int, batch: bool = False) -> None:
    session = _session(repo)
    server = grpc.aio.server()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(FloorGRPC(session), server)
    server.add_insecure_port(f"127.0.0.1:{grpc_port}")
    await server.start()
    loop = asyncio.get_running_loop()
    batcher = TurnBatcher(session) if batch else None
    await loop.create_server(lambda: FloorHTTP(session, batcher), "127.0.0.1", http_port)
    await server.wait_for_termination()


def main(argv: list[str]) -> None:
    batch = "--batch" in argv
    args = [a for a in argv if a != "--batch"]
    if len(args) != 3:
        raise SystemExit(__doc__)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(Path(args[0]), int(args[1]), int(args[2]), batch))


if __name__ == "__main__":
    main(sys.argv[1:])
