"""What routing through an endpoint costs: the digits ONNX model called directly and through an endpoint in front
of it (two variants on digits, 50/50, so the weighted pick runs), at 1 and 32 connections, server CPU per request
from /proc.

usage: .venv/bin/python benchmarks/endpoint_bench.py [--duration 5] [--warmup 1] [--conc 1,32] [--rounds 2]
                                                     [--out benchmarks/results/endpoint.json]

One ``inferd serve`` subprocess on free loopback ports serves both: ``digits`` and the endpoint ``front`` (from
``endpoints.toml``), so both paths share the process, the model and its warm state. For each concurrency the two
paths alternate ``--rounds`` times (direct, endpoint, direct, endpoint, ...) to spread the machine's drift over
both; each run is a warm-up then ``wrk -t1 -cC -d{duration}s`` posting the same V2 JSON body. The server's CPU is
utime+stime of its process (/proc/<pid>/stat) over the measured run; per request, in µs. The ratio is endpoint
over direct of the summed CPU per request (target: at most 1.05). Needs ``wrk`` on PATH (exit code 2 without).
"""

from __future__ import annotations

import argparse
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

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "endpoint.json"
CLK_TCK = os.sysconf("SC_CLK_TCK")
LUA = r"""
local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
function done(summary, latency, requests)
  io.write(string.format('BENCHJSON {"requests":%d,"duration_s":%.4f,"p50_ms":%.4f,"p99_ms":%.4f,"non2xx":%d}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3, latency:percentile(99) / 1e3,
    summary.errors.status))
end
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_s(pid: int) -> float:
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def build(root: Path) -> Path:
    from inferd.examples import digits

    models = root / "models"
    (models / digits.NAME / "1").mkdir(parents=True)
    digits.build(models / digits.NAME)
    (models / "endpoints.toml").write_text('[front]\nvariants = [{name = "a", model = "digits", weight = 50}, '
                                           '{name = "b", model = "digits", weight = 50}]\n')
    image = digits.load_split()[1][0].astype(float).tolist()
    body = root / "body.json"
    body.write_text(json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": image}]}))
    (root / "post.lua").write_text(LUA)
    return models


def wrk(url: str, root: Path, c: int, seconds: float) -> dict[str, Any]:
    env = {**os.environ, "BODY_FILE": str(root / "body.json")}
    command = ["wrk", "-t1", f"-c{c}", f"-d{max(1, round(seconds))}s", "-s", str(root / "post.lua"), url]
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=seconds + 60, check=False)
    for line in reversed(out.stdout.splitlines()):
        if line.startswith("BENCHJSON "):
            return dict(json.loads(line.removeprefix("BENCHJSON ")))
    raise RuntimeError(f"wrk failed: {out.stderr or out.stdout}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5)
    parser.add_argument("--warmup", type=float, default=1)
    parser.add_argument("--conc", default="1,32")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not on PATH", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp)
        models = build(root)
        port = free_port()
        inferd = Path(sys.executable).with_name("inferd")
        server = subprocess.Popen([str(inferd), "serve", str(models), "--host", "127.0.0.1", "--http-port", str(port),
                                   "--grpc-port", "0", "--state-dir", str(root / "state"), "--log-level", "warning"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_ready(port)
            rows = measure(server.pid, port, root, args)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(30)
    report(rows, args.out)
    return 0


def wait_ready(port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("inferd serve did not become ready")


def measure(pid: int, port: int, root: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for c in (int(x) for x in args.conc.split(",")):
        for _ in range(args.rounds):
            for path, name in (("direct", "digits"), ("endpoint", "front")):
                url = f"http://127.0.0.1:{port}/v2/models/{name}/infer"
                wrk(url, root, c, args.warmup)
                before = cpu_s(pid)
                run = wrk(url, root, c, args.duration)
                run.update(path=path, c=c, server_cpu_s=cpu_s(pid) - before)
                rows.append(run)
    return rows


def report(rows: list[dict[str, Any]], out: Path) -> None:
    print("| C | path | req/s | p50 ms | p99 ms | non-2xx | server CPU µs/req |")
    print("|---|---|---|---|---|---|---|")
    summary: dict[str, Any] = {}
    for c in sorted({r["c"] for r in rows}):
        cpu_per = {}
        for path in ("direct", "endpoint"):
            mine = [r for r in rows if r["c"] == c and r["path"] == path]
            requests = sum(r["requests"] for r in mine)
            seconds = sum(r["duration_s"] for r in mine)
            cpu_per[path] = sum(r["server_cpu_s"] for r in mine) / requests * 1e6
            p50 = sorted(r["p50_ms"] for r in mine)[len(mine) // 2]
            p99 = max(r["p99_ms"] for r in mine)
            errors = sum(r["non2xx"] for r in mine)
            print(f"| {c} | {path} | {requests / seconds:.0f} | {p50:.3f} | {p99:.3f} | {errors} | "
                  f"{cpu_per[path]:.1f} |")
        summary[f"c{c}_cpu_ratio"] = round(cpu_per["endpoint"] / cpu_per["direct"], 4)
    print()
    for key, value in summary.items():
        print(f"{key}: {value} (endpoint / direct server CPU per request; target <= 1.05)")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "summary": summary}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
