"""Benchmark asynchronous inference: how many small jobs ``inferd serve`` accepts durably per second, and how many
it completes per second.

usage: .venv/bin/python benchmarks/async_bench.py [--duration 5] [--conc 64] [--per-model 2]
                 [--stores sqlite:1,postgresql:1,postgresql:2] [--out benchmarks/results/async.json]

Needs the inferd venv (with the postgres extra), ``wrk`` on PATH and, for the PostgreSQL configurations, Debian's
``postgresql`` binaries: a throw-away cluster (fsync on, as in production) is started on a free loopback port
(tests/postgres_cluster.py) and removed afterwards. The model is a tiny python model (``adder``: two FP32 [1, 3]
inputs, their sum and total), so the figures are the queue's cost, not a model's. Each configuration runs in
turn: SQLite with one server, PostgreSQL with one and with two replicas (wrk's connections split between them).

What is measured:
  accepted/s   ``wrk -t1 -cC -d{duration}s`` POSTing one small V2 JSON request to
               /v2/models/adder/infer-async. A 202 goes out only after the job's transaction is committed to
               SQLite (WAL, synchronous=FULL: fsynced) or PostgreSQL (synchronous_commit on), so every 2xx
               counted is a durable job. The worker drains
               the queue at the same time, in the same server process, as it would in production. A Python
               client could not generate enough load on this machine, so wrk (C) is the load generator.
  completed/s  succeeded jobs per second, counted in the job database, over the submission phase (the flood)
               and then over the drain of the backlog; flood / drain must be at least 0.5.
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
TARGET_RATIO = 0.5
"""Completion while a flood of submissions arrives must reach at least half the rate at which the backlog drains."""
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


class Counts:
    """Jobs by status, read beside the servers: from the SQLite file (read-only; WAL readers do not block the
    server) or from the PostgreSQL database."""

    def __init__(self, sqlite: Path | None = None, dsn: str | None = None) -> None:
        self.sqlite, self.dsn = sqlite, dsn

    def __call__(self) -> dict[str, int]:
        if self.dsn is not None:
            import psycopg

            with psycopg.connect(self.dsn) as conn:
                return dict(conn.execute("SELECT status, count(*) FROM inferd_jobs GROUP BY status").fetchall())
        with sqlite3.connect(f"file:{self.sqlite}?mode=ro", uri=True, timeout=30) as conn:
            return dict(conn.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall())


class Server:
    def __init__(self, root: Path, per_model: int, name: str = "server", job_store: str | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.state = root / f"state-{name}"
        inferd = Path(sys.executable).parent / "inferd"
        env = {**os.environ, "INFERD_ASYNC_CONCURRENCY_PER_MODEL": str(per_model), "INFERD_LOG_LEVEL": "warning"}
        if job_store:
            env["INFERD_JOB_STORE"] = job_store
        self.log = (root / f"{name}.log").open("wb")
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


def run_wrk(urls: list[str], lua: Path, body: Path, conc: int, duration: int) -> dict[str, Any]:
    """One ``wrk -t1`` per URL at once, the connections split between them; their counts added up."""
    env = {**os.environ, "BODY_FILE": str(body)}
    each = max(conc // len(urls), 1)
    procs = [subprocess.Popen(["wrk", "-t1", f"-c{each}", f"-d{duration}s", "-s", str(lua), url],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for url in urls]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=duration + 60)
        match = re.search(r"BENCHJSON (\{.*\})", out)
        if match is None:
            raise RuntimeError(f"wrk failed: {out[-500:]} {err[-500:]}")
        results.append(json.loads(match.group(1)))
    total: dict[str, Any] = {key: sum(r[key] for r in results) for key in ("requests", "non2xx", "socket_errors")}
    total["duration_s"] = max(r["duration_s"] for r in results)
    total["p50_ms"] = max(r["p50_ms"] for r in results)
    total["p99_ms"] = max(r["p99_ms"] for r in results)
    return total


def check_results(server: Server, n: int = 5) -> bool:
    status, listed = http("GET", server.url + f"/v2/jobs?status=succeeded&limit={n}")
    jobs = json.loads(listed)["jobs"] if status == 200 else []
    _, sync = http("POST", server.url + "/v2/models/adder/infer", json.dumps(REQUEST).encode())
    return bool(jobs) and all(http("GET", server.url + job["result_url"]) == (200, sync) for job in jobs)


def drain(counts: Counts, timeout: float) -> tuple[float, int]:
    """Wait until nothing is queued or running; returns (seconds, jobs completed meanwhile)."""
    start, done0 = time.perf_counter(), counts().get("succeeded", 0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = counts()
        if not now.get("queued") and not now.get("running"):
            break
        time.sleep(0.1)
    return time.perf_counter() - start, counts().get("succeeded", 0) - done0


def prepare(root: Path) -> None:
    (root / "models" / "adder" / "1").mkdir(parents=True)
    (root / "models" / "adder" / "1" / "model.py").write_text(ADDER)
    (root / "req.json").write_text(json.dumps(REQUEST))
    (root / "post.lua").write_text(LUA)


def bench(args: argparse.Namespace, root: Path, store: str, replicas: int, dsn: str | None) -> dict[str, Any]:
    """One configuration: ``replicas`` servers on the SQLite store (one only) or on one PostgreSQL database."""
    servers = [Server(root, args.per_model, f"{store}-{replicas}-{i}", dsn) for i in range(replicas)]
    counts = Counts(dsn=dsn) if dsn else Counts(sqlite=servers[0].state / "jobs.db")
    try:
        for server in servers:
            server.wait_ready()
        urls = [server.url + "/v2/models/adder/infer-async" for server in servers]
        run_wrk(urls, root / "post.lua", root / "req.json", args.conc, 1)  # warm-up (its jobs drain first)
        drain(counts, 120)
        before, cpu0 = counts(), sum(cpu_s(s.proc.pid) for s in servers)
        run = run_wrk(urls, root / "post.lua", root / "req.json", args.conc, args.duration)
        cpu = sum(cpu_s(s.proc.pid) for s in servers) - cpu0
        during = counts()
        drain_s, drained = drain(counts, args.drain_timeout)
        after = counts()
        accepted = run["requests"] - run["non2xx"] - run["socket_errors"]
        completed_during = during.get("succeeded", 0) - before.get("succeeded", 0)
        flood = completed_during / run["duration_s"]
        drain_rate = drained / drain_s if drain_s and drained else None
        return {
            **run, "store": store, "replicas": replicas, "conc": args.conc, "per_model": args.per_model,
            "accepted": accepted, "accepted_per_s": round(accepted / run["duration_s"], 1),
            "stored": sum(after.values()) - sum(before.values()),
            "completed_during_submit_per_s": round(flood, 1),
            "drain_s": round(drain_s, 2), "completed_in_drain": drained,
            "completed_in_drain_per_s": round(drain_rate, 1) if drain_rate else None,
            "flood_over_drain": round(flood / drain_rate, 2) if drain_rate else None,
            "failed": after.get("failed", 0), "server_cpu_ms_per_accept": round(1000 * cpu / max(accepted, 1), 3),
            "results_match_sync": check_results(servers[0]),
        }
    finally:
        codes = [server.stop() for server in servers]
        print(f"# {store} x{replicas}: servers stopped with exit codes {codes}", file=sys.stderr)


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"inferd async: wrk -t1 -c{args.conc} (split between replicas), {args.duration} s, "
                        f"{args.per_model} jobs at once per model and replica")
    for column in ("store", "replicas", "accepted/s", "p50 / p99 ms", "non-2xx", "stored >= accepted",
                   "completed/s in flood", "completed/s in drain", "flood / drain", "failed", "CPU ms/accept",
                   "results = sync"):
        table.add_column(column, justify="right")
    for r in results:
        ratio = r["flood_over_drain"]
        table.add_row(r["store"], str(r["replicas"]), f"{r['accepted_per_s']:,.0f}",
                      f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f}", str(r["non2xx"] + r["socket_errors"]),
                      f"{r['stored']} >= {r['accepted']}", f"{r['completed_during_submit_per_s']:,.0f}",
                      f"{r['completed_in_drain_per_s'] or 0:,.0f}",
                      f"{ratio:.2f} ({'met' if ratio is not None and ratio >= TARGET_RATIO else 'missed'})"
                      if ratio is not None else "-", str(r["failed"]), f"{r['server_cpu_ms_per_accept']:.3f}",
                      str(r["results_match_sync"]))
    Console(width=220).print(table)


def postgres(durable: bool = True) -> Any:
    """A throw-away PostgreSQL cluster (the tests' helper), fsync on: the figures are those of durable commits."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from postgres_cluster import PostgresCluster, find_bin_dir

    bin_dir = find_bin_dir()
    if bin_dir is None:
        return None
    cluster = PostgresCluster(bin_dir, durable=durable)
    cluster.init()
    cluster.start()
    return cluster


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=5, help="seconds of submissions [5]")
    ap.add_argument("--conc", type=int, default=64, help="wrk connections, split between replicas [64]")
    ap.add_argument("--per-model", type=int, default=2, help="INFERD_ASYNC_CONCURRENCY_PER_MODEL [2]")
    ap.add_argument("--drain-timeout", type=float, default=300, help="seconds to wait for the backlog [300]")
    ap.add_argument("--stores", default="sqlite:1,postgresql:1,postgresql:2",
                    help="configurations, store:replicas [sqlite:1,postgresql:1,postgresql:2]")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results [benchmarks/results/async.json]")
    args = ap.parse_args(argv)
    if shutil.which("wrk") is None:
        print("async_bench: wrk is not installed or not on PATH (apt-get install wrk)", file=sys.stderr)
        return 2
    configs = [(store, int(n)) for store, n in (c.split(":") for c in args.stores.split(","))]
    cluster = postgres() if any(store == "postgresql" for store, _ in configs) else None
    if cluster is None and any(store == "postgresql" for store, _ in configs):
        print("async_bench: PostgreSQL's binaries are not installed (apt-get install postgresql)", file=sys.stderr)
        return 2
    results = []
    try:
        for store, replicas in configs:
            with tempfile.TemporaryDirectory(prefix="inferd-async-bench-") as tmp:
                prepare(Path(tmp))
                dsn = cluster.new_database() if store == "postgresql" else None
                results.append(bench(args, Path(tmp), store, replicas, dsn))
    finally:
        if cluster is not None:
            cluster.remove()
    meta = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cpus": os.cpu_count(), "loadavg": os.getloadavg(),
            "argv": sys.argv[1:]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    report(results, args)
    print(f"results: {args.out}")
    # more may be stored than wrk counted: requests in flight when wrk stopped were committed, unanswered
    return 0 if all(r["results_match_sync"] and r["stored"] >= r["accepted"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
