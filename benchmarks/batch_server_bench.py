"""Benchmark batch jobs submitted over HTTP, whose record, progress and end are kept in the job store, against
the same job run by ``run_batch`` in a process of its own, in the same run.

usage: .venv/bin/python benchmarks/batch_server_bench.py [--rows 300000] [--batch-size 4096] [--rounds 2]
                                                         [--job-store postgresql://...] [--cache DIR]
                                                         [--out benchmarks/results/batch_server.json]

The data and model are batch_bench.py's (``--rows`` x 64 FP32 Parquet, the digits ONNX MLP), cached the same way.
  run_batch    ``inferd.batch.run_batch`` (local engine, concurrency 2) in a fresh process: no server, no store.
  server       ``inferd serve`` (SQLite job store in a fresh state folder, or ``--job-store``), one
               ``POST /v2/batch/jobs`` with the same options, then ``GET`` its status every 50 ms until it ends:
               the time from the POST to the status saying succeeded (the store's commit before the 202, the
               claim, a progress write every half second and the end included; the server's start is not).
The ratio server / run_batch says what keeping the job in the store (and running it in a server) costs.
The machine is shared and noisy: compare within one run, and read the load average printed beside it.
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
from batch_bench import child, make_data, make_model  # the sibling benchmark's data and model

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "batch_server.json"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(repo: Path, work: Path, state: Path, job_store: str | None) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [str(Path(sys.executable).parent / "inferd"), "serve", str(repo), "--host", "127.0.0.1",
               "--http-port", str(port), "--grpc-port", "0", "--state-dir", str(state)]
    if job_store:
        command += ["--job-store", job_store]
    env = {**os.environ, "INFERD_BATCH_ROOTS": json.dumps([str(work)])}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("inferd serve did not become ready")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(30)


def server_round(repo: Path, data: Path, cache: Path, batch_size: int, job_store: str | None) -> dict[str, Any]:
    import pyarrow.parquet as pq

    output = cache / "out" / "server"
    shutil.rmtree(output, ignore_errors=True)
    state = Path(tempfile.mkdtemp(prefix="inferd-bench-state-"))
    process, url = start_server(repo, cache, state, job_store)  # batch_roots: the cache folder
    try:
        body = {"model": "digits", "input": str(data), "output": str(output),
                "batch_size": batch_size, "concurrency": 2}
        started = time.perf_counter()
        reply = httpx.post(f"{url}/v2/batch/jobs", json=body, timeout=30)
        reply.raise_for_status()
        status_url = url + reply.json()["status_url"]
        while True:
            status = httpx.get(status_url, timeout=30).json()
            if status["state"] not in ("queued", "running"):
                break
            time.sleep(0.05)
        seconds = time.perf_counter() - started
    finally:
        stop_server(process)
        shutil.rmtree(state, ignore_errors=True)
    if status["state"] != "succeeded":
        raise RuntimeError(f"the server's job ended {status['state']}: {status['error']}")
    rows = pq.ParquetFile(data).metadata.num_rows
    return {"kind": "server", "rows": rows, "seconds": seconds, "rows_per_s": rows / seconds}


def report(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace, load: str) -> dict[str, Any]:
    from rich.console import Console
    from rich.table import Table

    best = {k: max(v, key=lambda r: r["rows_per_s"]) for k, v in results.items()}
    ratio = best["server"]["rows_per_s"] / best["run_batch"]["rows_per_s"]
    store = "PostgreSQL" if args.job_store else "SQLite"
    table = Table(title=f"batch over HTTP ({store} job store) vs run_batch: {best['run_batch']['rows']:,} rows x 64 "
                        f"FP32, digits ONNX, mini-batch {args.batch_size}")
    for column in ("side", "rows/s (best)", "rows/s (each round)", "seconds (best)"):
        table.add_column(column, justify="right")
    for kind in ("run_batch", "server"):
        rounds = results[kind]
        table.add_row(kind, f"{best[kind]['rows_per_s']:,.0f}", ", ".join(f"{r['rows_per_s']:,.0f}" for r in rounds),
                      f"{best[kind]['seconds']:.2f}")
    console = Console()
    console.print(table)
    console.print(f"server / run_batch = {ratio:.2f}; load average at the start: {load}")
    return {"rows": best["run_batch"]["rows"], "batch_size": args.batch_size, "job_store": store, "ratio": ratio,
            "load_average": load, "rounds": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--job-store", default=None, help="a postgresql:// URL; default: SQLite")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "inferd-batch-bench")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    args.cache.mkdir(parents=True, exist_ok=True)
    data = args.cache / f"data-{args.rows}" / "data.parquet"
    data.parent.mkdir(exist_ok=True)
    repo = args.cache / "models"
    make_data(data, args.rows)
    make_model(repo)
    results: dict[str, list[dict[str, Any]]] = {"run_batch": [], "server": []}
    for _ in range(args.rounds):
        run = child("inferd", data, repo, args.cache / "out" / "inferd", args.batch_size)
        results["run_batch"].append({**run, "kind": "run_batch"})
        results["server"].append(server_round(repo, data, args.cache, args.batch_size, args.job_store))
    summary = report(results, args, load)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
