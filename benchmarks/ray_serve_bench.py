"""What Ray Serve's proxy costs: the same V2 JSON request to ``inferd serve`` (its native route, and the FastAPI
app's route that a Serve replica runs) and to inferd on Ray Serve (1 and 2 replicas), in one run, as ratios
against ``inferd serve``.

usage: .venv/bin/python benchmarks/ray_serve_bench.py [--duration 5] [--conc 1,8,32]
                                                      [--out benchmarks/results/ray_serve.json]

The model is serve_bench's ``digits`` (LogisticRegression on sklearn's digits as ONNX, one row per request); the
load generator is ``wrk -t1`` with serve_bench's Lua script. A local Ray with 2 CPUs (no dashboard, usage stats
off) hosts Serve: its proxy on a free loopback port, each replica an actor with ``num_cpus=0.5`` and
``max_ongoing_requests=64``. The machine has 2 cores shared by the load generator, Serve's proxy and the replicas
(and, here, other sessions): read the ratios, and the load average printed beside them, not absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_bench import (
    LUA,
    BenchError,
    HttpBody,
    RunningServer,
    ServerSpec,
    build_repository,
    check_http,
    free_ports,
    run_wrk,
)

INFERD = ServerSpec("inferd serve", (str(Path(sys.executable).with_name("inferd")), "serve", "{repo}",
                                     "--http-port", "{http}", "--grpc-port", "0"), {"INFERD_LOG_LEVEL": "warning"})
MODEL = "digits"
ENCODED_MODEL = "dig%69ts"
"""The same model by a percent-encoded name: ``inferd serve`` answers it with the FastAPI app's route (its
native route takes plain names only), the app a Serve replica runs."""
ASGI_ROUTE = "inferd serve, app route"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per point (after a 2 s warm-up)")
    parser.add_argument("--conc", default="1,8,32", help="wrk connections, comma-separated")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ray_serve.json"))
    return parser.parse_args(argv)


def sweep(label: str, base: str, body: HttpBody, lua: Path, args: argparse.Namespace,
          expected: list[float], model: str = MODEL) -> list[dict[str, Any]]:
    url = f"{base}/v2/models/{model}/infer"
    check_http(url, body, expected)
    rows = []
    for c in (int(x) for x in args.conc.split(",")):
        run_wrk(url, body, c, 2, lua)
        run = run_wrk(url, body, c, args.duration, lua)
        errors = sum(run.pop(k) for k in ("non2xx", "connect", "read", "write", "timeout"))
        rps = run["requests"] / run["duration_s"]
        rows.append({"target": label, "c": c, "rps": rps, **run, "errors": errors, "loadavg": os.getloadavg()[0]})
        print(f"  {label:<22} c={c:<3} {rps:>8.0f} req/s  p50 {run['p50_ms']:.2f} ms  errors {errors}", flush=True)
    return rows


def on_inferd(repo: Path, body: HttpBody, lua: Path, args: argparse.Namespace, expected: list[float],
              logdir: Path) -> list[dict[str, Any]]:
    with (logdir / "inferd.log").open("wb") as log:
        server = RunningServer(INFERD, repo, log)
        try:
            server.wait_ready(120)
            native = sweep(INFERD.label, server.base, body, lua, args, expected)
            return native + sweep(ASGI_ROUTE, server.base, body, lua, args, expected, ENCODED_MODEL)
        finally:
            server.stop()


def on_serve(repo: Path, body: HttpBody, lua: Path, args: argparse.Namespace,
             expected: list[float]) -> list[dict[str, Any]]:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray import serve

    from inferd.integrations.ray_serve import inferd_app

    (port,) = free_ports(1)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    rows: list[dict[str, Any]] = []
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        for replicas in (1, 2):
            app = inferd_app(repo, num_replicas=replicas, ray_actor_options={"num_cpus": 0.5},
                             max_ongoing_requests=64, settings={"log_level": "warning"})
            serve.run(app, name="bench", route_prefix="/")
            rows += sweep(f"Ray Serve, {replicas} replica{'s' if replicas > 1 else ''}", f"http://127.0.0.1:{port}",
                          body, lua, args, expected)
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
    return rows


def report(rows: list[dict[str, Any]]) -> None:
    peer = {row["c"]: row["rps"] for row in rows if row["target"] == INFERD.label}
    print("\n| target | C | req/s | vs inferd serve | p50 ms | p99 ms | errors | load avg |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        ratio = row["rps"] / peer[row["c"]] if peer.get(row["c"]) else float("nan")
        print(f"| {row['target']} | {row['c']} | {row['rps']:,.0f} | {ratio:.2f} | {row['p50_ms']:.2f} | "
              f"{row['p99_ms']:.2f} | {row['errors']} | {row['loadavg']:.1f} |")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    logdir = args.out.parent / f"{args.out.stem}-logs"
    logdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="inferd-serve-bench-") as tmp:
        root = Path(tmp)
        payload = build_repository(root)
        lua = root / "post.lua"
        lua.write_text(LUA)
        body = payload.bodies["json"]
        try:
            rows = on_inferd(root / "repo", body, lua, args, payload.expected, logdir)
            rows += on_serve(root / "repo", body, lua, args, payload.expected)
        except BenchError as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
    meta = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cpus": os.cpu_count(), "loadavg": os.getloadavg(),
            "argv": sys.argv[1:], "model": MODEL}
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    report(rows)
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
