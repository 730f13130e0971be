"""Benchmark asynchronous inference: how many small jobs ``inferd serve`` accepts durably per second, and how many
it completes per second.

usage: .venv/bin/python benchmarks/async_bench.py [--duration 5] [--conc 64] [--per-model 2]
                                                   [--out benchmarks/results/async.json]

Needs the inferd venv and ``wrk`` on PATH. The model is a tiny python model (``adder``: two FP32 [1, 3] inputs,
their sum and total), so the figures are the queue's cost, not a model's.

What is measured:
  accepted/s   ``wrk -t1 -cC -d{duration}s`` POSTing one small V2 JSON request to
               /v2/models/adder/infer-async. A 202 goes out only after the job's transaction is committed to
               SQLite (WAL, synchronous=FULL: fsynced), so every 2xx counted is a durable job. The worker drains
               the queue at the same time, in the same server process, as it would in production. A Python
               client could not generate enough load on this machine, so wrk (C) is the load generator.
  completed/s  succeeded jobs per second, counted in the server's job database (read-only, WAL readers do not
               block the server), over the submission phase and then over the drain of the backlog.
  check        a few results compared with the synchronous route's answer for the same request.
  server CPU   utime+stime of the server process over the submission phase.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "async.json"
TARGET_ACCEPTED = 2000
CLK_TCK = os.sysconf("SC_CLK_TCK")

ADDER = '''
import numpy as np

class Model:
    inputs = [{"name": "a", "datatype": "FP32", "shape": [-1, 3]},
              {"name": "b", "datatype": "FP32", "shape": [-1, 3]}]
    outputs = [{"name": "sum", "datatype": "FP32", "shape": [-1, 3]},
               {"name": "total", "datatype": "FP64", "shape": [-1]}]

    def predict(self, inputs):
        s = inputs["a"] + inputs["b"]
        return {"sum": s, "total": s.sum(axis=1).astype(np.float64)}
'''
REQUEST = {"inputs": [{"name": "a", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]},
                      {"name": "b", "datatype": "FP32", "shape": [1, 3], "data": [4, 5, 6]}]}

LUA = r"""local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"

function done(summary, latency, requests)
  io.write(string.format('BENCHJSON {"requests":%d,"duration_s":%.4f,"p50_ms":%.3f,"p99_ms":%.3f,"non2xx":%d,'
    .. '"socket_errors":%d}\n', summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3,
    latency:percentile(99) / 1e3, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http(method: str, url: str, body: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def cpu_s(pid: int) -> float:
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def counts(db: Path) -> dict[str, int]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        return dict(conn.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall())


class Server:
    def __init__(self, root: Path, per_model: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.state = root / "state"
        inferd = Path(sys.executable).parent / "inferd"
        env = {**os.environ, "INFERD_ASYNC_CONCURRENCY_PER_MODEL": str(per_model), "INFERD_LOG_LEVEL": "warning"}
        self.log = (root / "serve.log").open("wb")
        self.proc = subprocess.Popen([str(inferd), "serve", str(root / "models"), "--host", "127.0.0.1",
                                      "--http-port", str(self.port), "--grpc-port", "0", "--state-dir",
                                      str(self.state)], env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if http("GET", self.url + "/v2/health/ready")[0] == 200:
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"inferd serve exited with {self.proc.returncode}")
            time.sleep(0.05)
        raise RuntimeError("inferd serve not ready")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.log.close()
        return code


def run_wrk(url: str, lua: Path, body: Path, conc: int, duration: int) -> dict[str, Any]:
    out = subprocess.run(["wrk", "-t1", f"-c{conc}", f"-d{duration}s", "-s", str(lua), url], capture_output=True,
                         text=True, env={**os.environ, "BODY_FILE": str(body)}, timeout=duration + 60, check=False)
    match = re.search(r"BENCHJSON (\{.*\})", out.stdout)
    if match is None:
        raise RuntimeError(f"wrk failed: {out.stdout[-500:]} {out.stderr[-500:]}")
    result: dict[str, Any] = json.loads(match.group(1))
    return result


def check_results(server: Server, n: int = 5) -> bool:
    status, listed = http("GET", server.url + f"/v2/jobs?status=succeeded&limit={n}")
    jobs = json.loads(listed)["jobs"] if status == 200 else []
    _, sync = http("POST", server.url + "/v2/models/adder/infer", json.dumps(REQUEST).encode())
    return bool(jobs) and all(http("GET", server.url + job["result_url"]) == (200, sync) for job in jobs)


def drain(db: Path, timeout: float) -> tuple[float, int]:
    """Wait until nothing is queued or running; returns (seconds, jobs completed meanwhile)."""
    start, done0 = time.perf_counter(), counts(db).get("succeeded", 0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = counts(db)
        if not now.get("queued") and not now.get("running"):
            break
        time.sleep(0.1)
    return time.perf_counter() - start, counts(db).get("succeeded", 0) - done0


def bench(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    (root / "models" / "adder" / "1").mkdir(parents=True)
    (root / "models" / "adder" / "1" / "model.py").write_text(ADDER)
    (root / "req.json").write_text(json.dumps(REQUEST))
    (root / "post.lua").write_text(LUA)
    server = Server(root, args.per_model)
    try:
        server.wait_ready()
        url = server.url + "/v2/models/adder/infer-async"
        run_wrk(url, root / "post.lua", root / "req.json", args.conc, 1)  # warm-up (its jobs drain first)
        drain(server.state / "jobs.db", 120)
        before, cpu0 = counts(server.state / "jobs.db"), cpu_s(server.proc.pid)
        run = run_wrk(url, root / "post.lua", root / "req.json", args.conc, args.duration)
        cpu = cpu_s(server.proc.pid) - cpu0
        during = counts(server.state / "jobs.db")
        drain_s, drained = drain(server.state / "jobs.db", args.drain_timeout)
        after = counts(server.state / "jobs.db")
        accepted = run["requests"] - run["non2xx"] - run["socket_errors"]
        stored = sum(after.values()) - sum(before.values())
        completed_during = during.get("succeeded", 0) - before.get("succeeded", 0)
        return {
            **run, "conc": args.conc, "per_model": args.per_model,
            "accepted": accepted, "accepted_per_s": round(accepted / run["duration_s"], 1),
            "stored": stored, "completed_during_submit_per_s": round(completed_during / run["duration_s"], 1),
            "drain_s": round(drain_s, 2), "completed_in_drain": drained,
            "completed_in_drain_per_s": round(drained / drain_s, 1) if drain_s else None,
            "failed": after.get("failed", 0), "server_cpu_ms_per_accept": round(1000 * cpu / max(accepted, 1), 3),
            "results_match_sync": check_results(server),
        }
    finally:
        print(f"# server stopped with exit code {server.stop()}", file=sys.stderr)


def report(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"inferd async: wrk -t1 -c{result['conc']}, {result['duration_s']:.1f} s, "
                        f"{result['per_model']} jobs at once per model")
    table.add_column("measure")
    table.add_column("value", justify="right")
    verdict = "met" if result["accepted_per_s"] >= TARGET_ACCEPTED else "missed"
    rows = [
        ("accepted/s (202 after fsynced commit)", f"{result['accepted_per_s']:,.0f}  (target {TARGET_ACCEPTED:,}: "
                                                  f"{verdict})"),
        ("submit latency p50 / p99 ms", f"{result['p50_ms']:.2f} / {result['p99_ms']:.2f}"),
        ("non-2xx / socket errors", f"{result['non2xx']} / {result['socket_errors']}"),
        ("jobs stored >= accepted", f"{result['stored']} >= {result['accepted']}"),
        ("completed/s while submitting", f"{result['completed_during_submit_per_s']:,.0f}"),
        ("completed/s draining the backlog", f"{result['completed_in_drain_per_s'] or 0:,.0f}  "
                                             f"({result['completed_in_drain']} in {result['drain_s']} s)"),
        ("failed jobs", str(result["failed"])),
        ("server CPU ms per accepted job", f"{result['server_cpu_ms_per_accept']:.3f}"),
        ("results equal the sync route", str(result["results_match_sync"])),
    ]
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=5, help="seconds of submissions [5]")
    ap.add_argument("--conc", type=int, default=64, help="wrk connections [64]")
    ap.add_argument("--per-model", type=int, default=2, help="INFERD_ASYNC_CONCURRENCY_PER_MODEL [2]")
    ap.add_argument("--drain-timeout", type=float, default=300, help="seconds to wait for the backlog [300]")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results [benchmarks/results/async.json]")
    args = ap.parse_args(argv)
    if shutil.which("wrk") is None:
        print("async_bench: wrk is not installed or not on PATH (apt-get install wrk)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="inferd-async-bench-") as tmp:
        result = bench(args, Path(tmp))
    meta = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cpus": os.cpu_count(), "loadavg": os.getloadavg(),
            "argv": sys.argv[1:]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "result": result}, indent=1) + "\n")
    report(result)
    print(f"results: {args.out}")
    # more may be stored than wrk counted: requests in flight when wrk stopped were committed, unanswered
    return 0 if result["results_match_sync"] and result["stored"] >= result["accepted"] else 1


if __name__ == "__main__":
    sys.exit(main())
