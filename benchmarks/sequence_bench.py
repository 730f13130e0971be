"""Benchmark sequence batching: a sequence model's throughput with 8 concurrent sequences against the same model
called without sequence parameters, in one run; a table, and JSON.

usage: .venv/bin/python benchmarks/sequence_bench.py [--duration 10] [--rounds 5] [--sequences 8] [--steps 50]
                                                     [--out benchmarks/results/sequence.json]

The models (Triton's ``simple_sequence`` ONNX graph, ``OUTPUT = READY * (INPUT + START)``, built by
tests/sequence_models.py), served by one ``inferd serve`` subprocess:
  sequence   ``simple_sequence``: max_batch_size 8, ``[sequence_batching]`` direct, START and READY controls filled
             in by the server; each request carries ``sequence_id``, ``sequence_start``, ``sequence_end``.
  plain      ``simple_sequence_plain``: the same file without ``[sequence_batching]`` (an ONNX model: dynamic
             batching with no queue delay); each request sends START and READY itself.
Load: ``--sequences`` concurrent loops over gRPC ModelInfer (grpc.aio, tritonclient's stubs, one channel), each
sending one request after the other; for ``sequence`` each loop runs sequences of ``--steps`` requests (start ...
end) back to back, with its own ids. Each side gets a 1 s warm-up, then ``--duration`` seconds measured in
``--rounds`` slices that alternate between the sides, so that the machine's load swings hit both alike.
Columns: requests/s, latency p50 and p99 (ms, client side), and the server's average batch (inference_count /
execution_count from the statistics extension, over the measured run). The load generator shares the machine's
cores with the server: compare the two rows of one run, not runs across machines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SIDES = [("plain", "simple_sequence_plain"), ("sequence", "simple_sequence")]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "sequence.json"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def build_repository(root: Path) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from sequence_models import SIMPLE_SEQUENCE_TOML, sequence_graph

    graph = sequence_graph(dyna=False)
    for name, toml in (("simple_sequence", SIMPLE_SEQUENCE_TOML), ("simple_sequence_plain", "max_batch_size = 8\n")):
        (root / name / "1").mkdir(parents=True)
        (root / name / "1" / "model.onnx").write_bytes(graph)
        (root / name / "model.toml").write_text(toml)


def start_server(repo: Path, log: Path) -> tuple[subprocess.Popen[bytes], int, int]:
    http, grpc_port = free_port(), free_port()
    command = [sys.executable, "-m", "inferd", "serve", str(repo), "--host", "127.0.0.1", "--http-port", str(http),
               "--grpc-port", str(grpc_port), "--state-dir", str(log.parent / "state")]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"inferd serve exited:\n{log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{http}/v2/health/ready", timeout=1).status_code == 200:
                return process, http, grpc_port
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError("inferd serve not ready")


def _request(service_pb2: Any, model: str, value: int, extra: dict[str, int], parameters: dict[str, Any]) -> Any:
    request = service_pb2.ModelInferRequest(model_name=model)
    for name, given in {"INPUT": value, **extra}.items():
        request.inputs.add(name=name, datatype="INT32", shape=[1, 1])
        request.raw_input_contents.append(np.full([1, 1], given, dtype=np.int32).tobytes())
    for key, setting in parameters.items():
        if isinstance(setting, bool):
            request.parameters[key].bool_param = setting
        else:
            request.parameters[key].int64_param = setting
    return request


async def load(grpc_url: str, side: str, sequences: int, steps: int, seconds: float) -> dict[str, Any]:
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    latencies: list[float] = []
    wrong = 0
    async with grpc.aio.insecure_channel(grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        stop = time.perf_counter() + seconds

        async def one_loop(loop_index: int) -> None:
            nonlocal wrong
            round_ = 0
            while time.perf_counter() < stop:
                round_ += 1
                sequence_id = (loop_index + 1) * 1_000_000 + round_
                for step in range(steps):
                    if side == "sequence":
                        parameters = {"sequence_id": sequence_id, "sequence_start": step == 0,
                                      "sequence_end": step == steps - 1}
                        request = _request(service_pb2, "simple_sequence", step, {}, parameters)
                    else:
                        request = _request(service_pb2, "simple_sequence_plain", step,
                                           {"START": int(step == 0), "READY": 1}, {})
                    began = time.perf_counter()
                    response = await stub.ModelInfer(request)
                    latencies.append(time.perf_counter() - began)
                    got = int(np.frombuffer(response.raw_output_contents[0], dtype=np.int32)[0])
                    wrong += got != step + (step == 0)
                    if time.perf_counter() >= stop:
                        return

        started = time.perf_counter()
        await asyncio.gather(*(one_loop(i) for i in range(sequences)))
        elapsed = time.perf_counter() - started
    return {"latencies": latencies, "elapsed": elapsed, "wrong": wrong}


def summary(slices: list[dict[str, Any]]) -> dict[str, Any]:
    ordered = sorted(x for s in slices for x in s["latencies"])
    elapsed = sum(s["elapsed"] for s in slices)
    return {"requests": len(ordered), "rps": len(ordered) / elapsed, "wrong": sum(s["wrong"] for s in slices),
            "p50_ms": 1000 * ordered[len(ordered) // 2], "p99_ms": 1000 * ordered[int(len(ordered) * 0.99)],
            "slice_rps": [round(len(s["latencies"]) / s["elapsed"]) for s in slices]}


def counts(http: int, model: str) -> tuple[int, int]:
    stats = httpx.get(f"http://127.0.0.1:{http}/v2/models/{model}/stats", timeout=5).json()["model_stats"][0]
    return int(stats["inference_count"]), int(stats["execution_count"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sequences", type=int, default=8)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="inferd-sequence-bench-"))
    rows = []
    try:
        build_repository(scratch / "models")
        process, http, grpc_port = start_server(scratch / "models", scratch / "serve.log")
        try:
            url = f"127.0.0.1:{grpc_port}"
            for side, _ in SIDES:
                asyncio.run(load(url, side, args.sequences, args.steps, 1.0))
            slices: dict[str, list[dict[str, Any]]] = {side: [] for side, _ in SIDES}
            before = {model: counts(http, model) for _, model in SIDES}
            for _ in range(args.rounds):
                for side, _ in SIDES:
                    slices[side].append(asyncio.run(load(url, side, args.sequences, args.steps,
                                                         args.duration / args.rounds)))
            for side, model in SIDES:
                after = counts(http, model)
                executions = max(1, after[1] - before[model][1])
                rows.append({"side": side, "model": model, **summary(slices[side]),
                             "avg_batch": (after[0] - before[model][0]) / executions})
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"{args.sequences} concurrent loops over gRPC, {args.duration:g} s per side in {args.rounds} "
          "alternating slices\n")
    print(f"{'side':<10}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'avg batch':>11}{'wrong':>7}   req/s per slice")
    for row in rows:
        print(f"{row['side']:<10}{row['rps']:>10,.0f}{row['p50_ms']:>10.2f}{row['p99_ms']:>10.2f}"
              f"{row['avg_batch']:>11.2f}{row['wrong']:>7}   {row['slice_rps']}")
    by_side = {row["side"]: row for row in rows}
    ratio = by_side["sequence"]["rps"] / by_side["plain"]["rps"]
    print(f"\nsequence / plain throughput: {ratio:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"sequences": args.sequences, "steps": args.steps, "duration_s": args.duration,
                                    "rows": rows, "sequence_over_plain": ratio}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
