"""Real-time req/s of ``inferd serve --workers 1`` against ``--workers 2`` (and more) in one run.

usage: .venv/bin/python benchmarks/workers_bench.py [--workers 1,2] [--conc 32] [--duration 8] [--rounds 2]
                                                    [--out benchmarks/results/workers.json]

Model: ``digits`` (logistic regression on sklearn's digits as ONNX, the one benchmarks/serve_bench.py builds),
V2 JSON to /v2/models/digits/infer, one row per request, checked against scikit-learn before the load.
Load: ``wrk -t1 -cC`` with serve_bench's Lua script (C connections; the kernel spreads connections over the
workers by SO_REUSEPORT hashing, so each worker gets about C/N). Each server is started, warmed up, measured and
stopped; the servers alternate over ``--rounds`` (1, 2, 1, 2, ...) so that a change in the machine's load hits both.
Reported per point: req/s, p50/p99, the server tree's CPU per request and in cores, wrk's CPU in % of a core, the
cores the rest of the machine (other sessions) used meanwhile, and the load average before and after. The ratio
is the median req/s of N workers over that of 1.

How to read it: wrk needs a core of its own (it shows up as ``wrk %``); on a 2-core machine the server can only
have what is left, so 2 workers cannot double; the figure to look at is ``server cores`` (how much CPU the
workers managed to use) and ``CPU/req`` (what a request costs: equal for 1 and N workers means no shared
bottleneck). The machine is shared with other sessions: report the load average next to every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_bench import (
    LUA,
    BenchError,
    Payload,
    RunningServer,
    ServerSpec,
    build_repository,
    check_http,
    children_cpu_s,
    run_wrk,
    tree_cpu_s,
)

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "workers.json"


def spec(workers: int, state: Path) -> ServerSpec:
    inferd = str(Path(sys.executable).parent / "inferd")
    return ServerSpec(f"workers-{workers}", (inferd, "serve", "{repo}", "--host", "127.0.0.1", "--http-port",
                                             "{http}", "--grpc-port", "{grpc}", "--workers", str(workers),
                                             "--state-dir", str(state / f"state-{workers}")))


def wait_workers(server: RunningServer, workers: int, timeout: float = 120.0) -> None:
    """Until /metrics names every worker (each one has loaded its models and joined the port)."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        server.ensure_alive()
        try:
            with urllib.request.urlopen(server.base + "/metrics", timeout=5) as reply:
                text = reply.read().decode()
        except OSError:
            text = ""
        if workers == 1 and "inferd_models_loaded" in text:
            return
        if workers > 1 and all(f'process="{i}"' in text for i in range(workers)):
            return
        time.sleep(0.2)
    raise BenchError(f"{workers} workers not serving after {timeout:.0f} s")


def machine_busy_s() -> float:
    """CPU seconds every process of the machine used (all cores, from /proc/stat: everything but idle and iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def measure(workers: int, repo: Path, payload: Payload, lua: Path, args: argparse.Namespace,
            logdir: Path) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    with (logdir / f"workers-{workers}.log").open("ab") as log:
        server = RunningServer(spec(workers, logdir), repo, log)
        try:
            server.wait_ready(120)
            wait_workers(server, workers)
            url = f"{server.base}/v2/models/digits/infer"
            body = payload.bodies["json"]
            check_http(url, body, payload.expected)
            run_wrk(url, body, args.conc, args.warmup, lua)
            cpu0, gen0, busy0 = tree_cpu_s(server.pid), children_cpu_s(), machine_busy_s()
            run = run_wrk(url, body, args.conc, args.duration, lua)
            cpu, gen = tree_cpu_s(server.pid) - cpu0, children_cpu_s() - gen0
            others = machine_busy_s() - busy0 - cpu - gen
        finally:
            server.stop()
    errors = sum(run.pop(k) for k in ("non2xx", "connect", "read", "write", "timeout"))
    seconds = run["duration_s"]
    return {"workers": workers, "rps": run["requests"] / seconds, "p50_ms": run["p50_ms"], "p99_ms": run["p99_ms"],
            "errors": errors, "server_cores": cpu / seconds, "cpu_us_per_req": 1e6 * cpu / max(run["requests"], 1),
            "wrk_pct": 100 * gen / seconds, "other_cores": max(others, 0.0) / seconds, "load_before": load_before,
            "load_after": os.getloadavg()[0]}


def report(points: list[dict[str, Any]], ratios: dict[str, float]) -> None:
    print(f"{'workers':>7} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} {'server cores':>12} "
          f"{'CPU/req us':>10} {'wrk %':>6} {'others cores':>12} {'load 1m':>11}")
    for p in points:
        print(f"{p['workers']:>7} {p['rps']:>8,.0f} {p['p50_ms']:>7.2f} {p['p99_ms']:>7.2f} {p['errors']:>6} "
              f"{p['server_cores']:>12.2f} {p['cpu_us_per_req']:>10.0f} {p['wrk_pct']:>6.0f} {p['other_cores']:>12.2f} "
              f"{p['load_before']:>5.2f}/{p['load_after']:<5.2f}")
    for name, value in ratios.items():
        print(f"ratio {name}: {value:.2f}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2", help="worker counts to compare, the first is the base")
    parser.add_argument("--conc", type=int, default=32, help="wrk connections")
    parser.add_argument("--duration", type=int, default=8, help="seconds measured per point")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of load before each measure")
    parser.add_argument("--rounds", type=int, default=2, help="times each worker count is measured")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    counts = [int(part) for part in args.workers.split(",")]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cpus": os.cpu_count(), "loadavg": os.getloadavg(),
            "python": sys.version.split()[0], "argv": sys.argv[1:]}
    points: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="inferd-workers-bench-") as tmp:
        root = Path(tmp)
        payload = build_repository(root)
        lua = root / "post.lua"
        lua.write_text(LUA)
        for _ in range(args.rounds):
            for workers in counts:
                points.append(measure(workers, root / "repo", payload, lua, args, root))
                print(f"  workers={workers}: {points[-1]['rps']:,.0f} req/s", file=sys.stderr, flush=True)
    median = {n: statistics.median(p["rps"] for p in points if p["workers"] == n) for n in counts}
    ratios = {f"{n}/{counts[0]} workers req/s": median[n] / median[counts[0]] for n in counts[1:]}
    meta["loadavg_end"] = os.getloadavg()
    args.out.write_text(json.dumps({"meta": meta, "points": points, "median_rps": median, "ratios": ratios},
                                   indent=1) + "\n")
    report(points, ratios)
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
