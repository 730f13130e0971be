"""Benchmark system shared memory: Triton's perf_analyzer on ``simple`` with and without ``--shared-memory system``.

usage: .venv/bin/python benchmarks/shm_bench.py [--conc 1,4] [--interval-ms 3000] [--protocol http]
                                                [--tensor 16] [--out benchmarks/results/shm.json]

The repository holds Triton's ``simple`` (INT32 INPUT0/INPUT1 [-1, N] -> OUTPUT0 sum, OUTPUT1 difference,
max_batch_size 8; a Python model) with N = ``--tensor`` (16 as in Triton's qa model; larger shows what the bodies
cost). ``inferd serve`` runs as a subprocess on free loopback ports, and perf_analyzer (the binary in tritonclient
2.41.0's wheel, as tests/e2e/test_perf_analyzer.py finds it) measures each concurrency twice in one run: the
tensors in the request and response bodies (binary tensor data), then in shared memory regions (perf_analyzer
creates, registers and removes them itself). Every request must succeed: the server's failure count is checked.

Reported per point: inferences/s, p50 and p99 latency (µs) as perf_analyzer measures them, and the server's share
(queue + compute) from its statistics. The machine is shared and noisy: compare the two modes within one run.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

BIN = Path(sys.executable).parent
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "shm.json"
SIMPLE = """
class Model:
    inputs = [{"name": "INPUT0", "datatype": "INT32", "shape": [-1, N]},
              {"name": "INPUT1", "datatype": "INT32", "shape": [-1, N]}]
    outputs = [{"name": "OUTPUT0", "datatype": "INT32", "shape": [-1, N]},
               {"name": "OUTPUT1", "datatype": "INT32", "shape": [-1, N]}]

    def predict(self, inputs):
        a, b = inputs["INPUT0"], inputs["INPUT1"]
        return {"OUTPUT0": a + b, "OUTPUT1": a - b}
"""
MODES = {"bodies": [], "system shared memory": ["--shared-memory", "system"]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def perf_analyzer_env() -> dict[str, str]:
    """perf_analyzer links libcudart.so.12: PyPI's nvidia-cuda-runtime-cu12 has it (no GPU is used)."""
    env = dict(os.environ)
    found = importlib.util.find_spec("nvidia.cuda_runtime")
    if found is not None and found.submodule_search_locations:
        lib = Path(next(iter(found.submodule_search_locations))) / "lib"
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(lib), env.get("LD_LIBRARY_PATH")) if p)
    return env


class Server:
    def __init__(self, root: Path, tensor: int) -> None:
        folder = root / "models" / "simple"
        (folder / "1").mkdir(parents=True)
        (folder / "1" / "model.py").write_text(SIMPLE.replace("N]", f"{tensor}]"))
        (folder / "model.toml").write_text("max_batch_size = 8\n")
        self.http, self.grpc = free_port(), free_port()
        self.log = (root / "serve.log").open("wb")
        self.process = subprocess.Popen(
            [str(BIN / "inferd"), "serve", str(root / "models"), "--host", "127.0.0.1", "--http-port", str(self.http),
             "--grpc-port", str(self.grpc), "--state-dir", str(root / "state")],
            stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, "INFERD_LOG_LEVEL": "warning"})
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.http}/v2/health/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"inferd serve did not become ready; see {root / 'serve.log'}")

    def stats(self) -> dict[str, Any]:
        found = httpx.get(f"http://127.0.0.1:{self.http}/v2/models/simple/stats", timeout=10).json()
        return dict(found["model_stats"][0]["inference_stats"])

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self.log.close()


def measure(server: Server, args: argparse.Namespace, conc: int, extra: list[str], scratch: Path) -> dict[str, Any]:
    """One perf_analyzer point: its CSV row, and the server's failures and time per request during it."""
    url = f"127.0.0.1:{server.http if args.protocol == 'http' else server.grpc}"
    report = scratch / f"pa-{conc}-{len(extra)}.csv"
    before = server.stats()
    command = [str(BIN / "perf_analyzer"), "-m", "simple", "-u", url, "-i", args.protocol,
               "--concurrency-range", str(conc), "--measurement-interval", str(args.interval_ms),
               "--stability-percentage", "100", "--max-trials", "10", "-f", str(report), *extra]
    done = subprocess.run(command, capture_output=True, text=True, env=perf_analyzer_env(), timeout=600, check=False)
    if done.returncode != 0 or not report.exists():
        raise RuntimeError(f"perf_analyzer failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    after = server.stats()
    with report.open() as handle:
        row = next(csv.DictReader(handle))
    served = after["success"]["count"] - before["success"]["count"]
    server_ns = sum(after[k]["ns"] - before[k]["ns"] for k in ("queue", "compute_input", "compute_infer",
                                                                "compute_output"))
    return {"concurrency": conc, "infer_per_s": float(row["Inferences/Second"]), "p50_us": int(row["p50 latency"]),
            "p99_us": int(row["p99 latency"]), "served": served,
            "failed": after["fail"]["count"] - before["fail"]["count"],
            "server_us_per_request": round(server_ns / max(served, 1) / 1000, 1)}


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| mode | concurrency | infer/s | p50 µs | p99 µs | server µs/req | failed |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['mode']} | {r['concurrency']} | {r['infer_per_s']:.0f} | {r['p50_us']} | {r['p99_us']} | "
              f"{r['server_us_per_request']} | {r['failed']} |" for r in results]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--conc", default="1,4", help="concurrencies, comma-separated")
    parser.add_argument("--interval-ms", type=int, default=3000, help="perf_analyzer's measurement window")
    parser.add_argument("--protocol", choices=("http", "grpc"), default="http")
    parser.add_argument("--tensor", type=int, default=16, help="elements per row of each tensor (Triton's: 16)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if not (BIN / "perf_analyzer").is_file():
        print(f"no {BIN / 'perf_analyzer'}: install the dev extra (tritonclient 2.41.0)", file=sys.stderr)
        return 2
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="shm-bench-") as scratch:
        server = Server(Path(scratch), args.tensor)
        try:
            for conc in (int(c) for c in args.conc.split(",")):
                for mode, extra in MODES.items():
                    results.append({"mode": mode, **measure(server, args, conc, extra, Path(scratch))})
                    print(f"{mode} C={conc}: {results[-1]['infer_per_s']:.0f} infer/s", file=sys.stderr)
        finally:
            server.stop()
    print(table(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"when": datetime.now().isoformat(timespec="seconds"), "protocol": args.protocol,
                                    "tensor": args.tensor, "results": results}, indent=2))
    print(f"\nwritten to {args.out}", file=sys.stderr)
    return 1 if any(r["failed"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
