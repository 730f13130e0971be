"""``inferd bench``: load a running server (or one started on a model repository) and measure it.

A closed-loop sweep over concurrency levels and an open-loop sweep over request rates, on one route (V2 JSON,
binary tensors, gRPC, generate, OpenAI chat). At each point: client-side latency percentiles, throughput, errors,
the server's own queue and compute time per request (the difference of ``/v2/models/{m}/stats`` across the run),
the load generator's CPU, and the cost of a million inferences at each hourly price given.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from inferd.tools.bench_load import LoadResult, run_load_processes
from inferd.tools.bench_payload import BenchError, Payload, build_payload

__all__ = ["BenchError", "BenchOptions", "BenchReport", "Point", "bench", "bench_url", "parse_price", "read_prices"]

SATURATED = 0.85
"""Load generator CPU, in cores per client process, above which it likely sets the pace, not the server."""
STAT_KEYS = ("queue", "compute_input", "compute_infer", "compute_output")


@dataclass
class BenchOptions:
    route: str = "json"
    concurrency: Sequence[int] = (1, 4, 16)
    rates: Sequence[float] = ()
    seconds: float = 2.0
    warmup: float = 0.5
    batch: int = 1
    data: Path | None = None
    processes: int = 1
    prices: Mapping[str, float] = field(default_factory=dict)
    grpc_port: int | None = None
    max_tokens: int = 16
    server_args: Sequence[str] = ()
    ignore: Sequence[str] = ()


@dataclass
class Point:
    mode: str
    level: float
    requests: int
    errors: int
    throughput_rps: float
    inferences_per_s: float
    p50_us: float
    p90_us: float
    p95_us: float
    p99_us: float
    max_us: float
    avg_us: float
    client_cpu_cores: float
    saturated: bool
    server_us: dict[str, float]
    cost_per_1m: dict[str, float]
    first_error: str | None = None


@dataclass
class BenchReport:
    url: str
    model: str
    route: str
    batch: int
    seconds: float
    points: list[Point]
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_price(text: str) -> float:
    try:
        price = float(text)
    except ValueError:
        raise BenchError(f"--price-per-hour {text!r} is not a number (e.g. 0.34 for $0.34 an hour)") from None
    if not np.isfinite(price) or price < 0:
        raise BenchError(f"--price-per-hour {text!r} must be a finite number >= 0")
    return price


def read_prices(path: Path) -> dict[str, float]:
    """A price table: TOML or JSON ``name = price per hour``, or CSV lines ``name,price``."""
    import json
    import tomllib

    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            raw: Mapping[str, Any] = json.loads(text)
        elif path.suffix == ".toml":
            raw = tomllib.loads(text)
        else:
            raw = dict(line.split(",", 1) for line in text.splitlines() if line.strip() and "," in line)
            raw.pop("name", None)
    except (OSError, ValueError) as exc:
        raise BenchError(f"--prices {path}: {exc}") from None
    if not isinstance(raw, Mapping) or not raw:
        raise BenchError(f"--prices {path}: no 'name = price per hour' entries")
    found = {}
    for name, value in raw.items():
        try:
            found[str(name).strip()] = parse_price(str(value).strip())
        except BenchError:
            raise BenchError(f"--prices {path}: the price of {name!r}, {value!r}, is not a number") from None
    return found


def bench(target: str, model: str, options: BenchOptions) -> BenchReport:
    """Bench ``model`` at ``target``: a server URL, or a model repository folder to serve on a free port."""
    if Path(target).is_dir():
        with serving(Path(target), options.server_args) as (url, grpc_port):
            return bench_url(url, model, BenchOptions(**{**asdict(options), "grpc_port": grpc_port}))
    return bench_url(target, model, options)


def bench_url(url: str, model: str, options: BenchOptions) -> BenchReport:
    import httpx

    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http" or not parts.hostname:
        raise BenchError(f"{url}: give an http://HOST:PORT URL or a model repository folder")
    base = f"http://{parts.hostname}:{parts.port or 80}"
    client = httpx.Client(base_url=base, timeout=10)
    metadata = _get(client, f"/v2/models/{model}", url)
    payload = build_payload(model, metadata, options.route, options.batch, options.data,
                            max_tokens=options.max_tokens, ignore=options.ignore)
    target = {"host": parts.hostname, "port": parts.port or 80,
              "grpc": f"{parts.hostname}:{options.grpc_port or 8001}"}
    _check(target, payload)
    points, notes = [], []
    sweeps = [("concurrency", float(c)) for c in options.concurrency] + [("rate", float(r)) for r in options.rates]
    for mode, level in sweeps:
        if options.warmup > 0:
            run_load_processes(target, payload, mode, level, options.warmup, 1)
        before = _server_stats(client, model)
        load = run_load_processes(target, payload, mode, level, options.seconds, options.processes)
        points.append(_point(mode, level, load, payload, options, before, _server_stats(client, model)))
    client.close()
    for p in points:
        if p.saturated:
            notes.append(f"{p.mode} {p.level:g}: the load generator used {p.client_cpu_cores:.2f} cores: it, not the "
                         "server, may set this throughput (try --processes 2 or more)")
        if p.mode == "rate" and p.throughput_rps < 0.9 * p.level:
            notes.append(f"rate {p.level:g}: answered {p.throughput_rps:,.0f} req/s, below the rate asked: past "
                         "capacity, latency grows with the backlog")
        if p.errors:
            notes.append(f"{p.mode} {p.level:g}: {p.errors} errors, the first: {p.first_error}")
    return BenchReport(url, model, options.route, options.batch, options.seconds, points, notes)


def _get(client: Any, path: str, url: str) -> dict[str, Any]:
    import httpx

    try:
        answer = client.get(path)
    except httpx.HTTPError as exc:
        raise BenchError(f"{url} does not answer ({type(exc).__name__}: {exc}): is the server running?") from None
    if answer.status_code != 200:
        raise BenchError(f"GET {url}{path}: HTTP {answer.status_code}: {answer.text[:300]}")
    found: dict[str, Any] = answer.json()
    return found


def _check(target: dict[str, Any], payload: Payload) -> None:
    """One request before any load, so that a request the server refuses is one clear error, not a run of them."""
    from inferd.tools.bench_load import check_once

    problem = check_once(target, payload)
    if problem is not None:
        raise BenchError(f"the server refused the {payload.route} request: {problem}")


def _server_stats(client: Any, model: str) -> dict[str, int]:
    """Counts and ns summed over the model's versions (empty when the server has no statistics endpoint)."""
    try:
        answer = client.get(f"/v2/models/{model}/stats")
        entries = answer.json().get("model_stats", []) if answer.status_code == 200 else []
    except Exception:
        return {}
    total: dict[str, int] = {"success": 0}
    for entry in entries:
        stats = entry.get("inference_stats", {})
        total["success"] += stats.get("success", {}).get("count", 0)
        for key in STAT_KEYS:
            total[key] = total.get(key, 0) + stats.get(key, {}).get("ns", 0)
    return total


def _point(mode: str, level: float, load: LoadResult, payload: Payload, options: BenchOptions,
           before: dict[str, int], after: dict[str, int]) -> Point:
    lat = np.asarray(load.latencies_s) * 1e6
    wall = max(load.wall_s, 1e-9)
    rps = len(lat) / wall

    def q(pct: float) -> float:
        return float(np.percentile(lat, pct)) if len(lat) else 0.0

    served = after.get("success", 0) - before.get("success", 0)
    server_us = ({k: (after.get(k, 0) - before.get(k, 0)) / served / 1e3 for k in STAT_KEYS}
                 if served > 0 else {})
    inferences = rps * payload.rows
    cost = {name: price / (inferences * 3600) * 1e6 if inferences > 0 else float("inf")
            for name, price in options.prices.items()}
    cores = load.cpu_s / wall
    return Point(mode, level, len(lat), load.errors, rps, inferences, q(50), q(90), q(95), q(99),
                 float(lat.max()) if len(lat) else 0.0, float(lat.mean()) if len(lat) else 0.0, cores,
                 cores / max(1, options.processes) >= SATURATED, server_us, cost, load.first_error)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serving(repo: Path, extra: Sequence[str] = (), timeout: float = 90) -> Iterator[tuple[str, int]]:
    """``inferd serve REPO`` on free loopback ports, until ready; stopped by its process id afterwards."""
    import httpx

    http_port, grpc_port = _free_port(), _free_port()
    with tempfile.TemporaryDirectory(prefix="inferd-bench-") as state:
        log_path = Path(state) / "server.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "inferd", "serve", str(repo), "--host", "127.0.0.1", "--http-port",
                 str(http_port), "--grpc-port", str(grpc_port), "--state-dir", str(Path(state) / "state"), *extra],
                stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{http_port}"
        try:
            deadline = time.monotonic() + timeout
            while True:
                if process.poll() is not None:
                    raise BenchError(f"inferd serve {repo} exited with {process.returncode}:\n"
                                     f"{log_path.read_text(errors='replace')[-2000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(url + "/v2/health/ready", timeout=1).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise BenchError(f"inferd serve {repo} not ready after {timeout:g} s")
                time.sleep(0.1)
            yield url, grpc_port
        finally:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(15)
