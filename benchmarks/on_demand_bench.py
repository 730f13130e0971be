"""Benchmark models on demand: many models, a memory budget that holds about a quarter of them, Zipf traffic.

usage: .venv/bin/python benchmarks/on_demand_bench.py [--duration 20] [--conc 8] [--digits 40] [--sklearn 10]
                                                      [--zipf 1.1] [--out benchmarks/results/on_demand.json]

The repository: ``--digits`` copies of the digits ONNX model (LogisticRegression on sklearn's digits) and
``--sklearn`` copies of the spam scikit-learn pipeline (TF-IDF + linear model, skops), each declaring
``memory_size`` (``--model-mib``, 8 MiB by default) so that the budget (a quarter of the total unless
``--budget-mib`` says) holds about a quarter of them, the same on every machine. ``inferd serve --model-control
on-demand --memory-budget ...`` runs as a subprocess on free loopback ports.

Each of ``--conc`` connections (one asyncio task and one keep-alive connection each) sends requests back to back, the
model drawn from a Zipf distribution over the models (rank r with weight 1/r^s; ranks shuffled with a fixed seed so
both kinds are among the popular ones).

Two phases, each ``--duration`` seconds after a warm-up of a quarter of that:
  cold mix   every request has the model's one example input; the response cache is off.
  cached     the models enable ``[cache]`` and each request's input is drawn from ``--distinct`` inputs per
             model: the cache hit rate, from the server's statistics (hits / (hits + misses)).

Reported per phase: req/s, p50/p99 latency of every request and of those that waited for a load (a request is
counted as having waited when a load of its model ended while it was outstanding, read from the server's JSON log),
loads per second, non-200 answers, and (cached) the hit rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from bisect import bisect_left
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "on_demand.json"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def build_repository(root: Path, digits: int, sklearn: int, model_mib: int, cache: bool) -> list[str]:
    """Model folders (copies of the two built models), each declaring its memory; the model names, in order."""
    from inferd.examples import digits as digits_example
    from inferd.examples import spam as spam_example

    built = root / "_built"
    if not built.exists():
        for module in (digits_example, spam_example):
            (built / module.NAME / "1").mkdir(parents=True)
            module.build(built / module.NAME)
    toml = f'memory_size = "{model_mib}MiB"\n' + ("[cache]\nenabled = true\n" if cache else "")
    names = []
    for kind, count in (("digits", digits), ("spam", sklearn)):
        for i in range(count):
            name = f"{kind}_{i:02d}"
            folder = root / "models" / name
            if folder.exists():
                shutil.rmtree(folder)
            shutil.copytree(built / kind, folder)
            (folder / "model.toml").write_text(toml)
            names.append(name)
    return names


def request_bodies(distinct: int) -> dict[str, list[bytes]]:
    """Per model kind, ``distinct`` V2 JSON bodies (digits images, spam-or-not messages)."""
    from inferd.examples.digits import load_split
    from inferd.examples.spam import make_messages

    images = load_split()[1]
    texts = make_messages(distinct, seed=7)[0]
    return {
        "digits": [json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64],
                                           "data": images[i].astype(float).tolist()}]}).encode()
                   for i in range(distinct)],
        "spam": [json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [t]}]}).encode()
                 for t in texts[:distinct]],
    }


class Server:
    def __init__(self, root: Path, budget_mib: int, log: Path) -> None:
        self.port = free_port()
        self.log = log
        inferd = Path(sys.executable).with_name("inferd")
        command = [str(inferd), "serve", str(root / "models"), "--host", "127.0.0.1", "--http-port", str(self.port),
                   "--grpc-port", "0", "--model-control", "on-demand", "--memory-budget", f"{budget_mib}MiB",
                   "--log-format", "json", "--state-dir", str(root / "state")]
        with log.open("wb") as out:
            self.proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/v2/health/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"inferd serve did not start:\n{log.read_text()}")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def load_ends(self) -> dict[str, list[float]]:
        """When each model's loads ended (wall clock, s), from the log's 'model M version V ready' lines."""
        ends: dict[str, list[float]] = {}
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            words = str(entry.get("message", "")).split()
            if len(words) > 4 and words[0] == "model" and words[2] == "version" and words[4] == "ready":
                stamp = datetime.fromisoformat(entry["ts"].replace("Z", "+00:00")).timestamp()
                ends.setdefault(words[1], []).append(stamp)
        return ends

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


async def drive(server: Server, names: list[str], bodies: dict[str, list[bytes]], conc: int, seconds: float,
                zipf: float, seed: int) -> list[tuple[str, float, float, int]]:
    """(model, sent, answered, status) of every request: ``conc`` connections for ``seconds``."""
    order = names[:]
    random.Random(seed).shuffle(order)
    weights = [1 / (rank + 1) ** zipf for rank in range(len(order))]
    done: list[tuple[str, float, float, int]] = []
    refusals: list[str] = []
    stop_at = time.monotonic() + seconds
    headers = {"content-type": "application/json"}

    async def connection(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        one = httpx.Limits(max_connections=1)
        async with httpx.AsyncClient(base_url=server.url, timeout=120, limits=one) as client:
            while time.monotonic() < stop_at:
                name = rng.choices(order, weights)[0]
                body = rng.choice(bodies[name.split("_")[0]])
                sent = time.time()
                response = await client.post(f"/v2/models/{name}/infer", content=body, headers=headers)
                done.append((name, sent, time.time(), response.status_code))
                if response.status_code != 200 and len(refusals) < 5:
                    refusals.append(f"{name}: {response.status_code} {response.text[:300]}")

    await asyncio.gather(*(connection(i) for i in range(conc)))
    for refusal in refusals:  # the first few answers that were not 200, as the server gave them
        print(f"  not 200: {refusal}", file=sys.stderr)
    return done


def summarise(requests: list[tuple[str, float, float, int]], ends: dict[str, list[float]], seconds: float
              ) -> dict[str, Any]:
    def waited(name: str, sent: float, answered: float) -> bool:
        stamps = ends.get(name, [])
        i = bisect_left(stamps, sent)
        return i < len(stamps) and stamps[i] <= answered

    latency = np.array([answered - sent for _, sent, answered, _ in requests]) * 1000
    cold = np.array([answered - sent for name, sent, answered, _ in requests if waited(name, sent, answered)]) * 1000
    first, last = min(r[1] for r in requests), max(r[2] for r in requests)
    loads = sum(1 for stamps in ends.values() for t in stamps if first <= t <= last)
    return {
        "requests": len(requests),
        "req_per_s": round(len(requests) / seconds, 1),
        "p50_ms": round(float(np.percentile(latency, 50)), 2),
        "p99_ms": round(float(np.percentile(latency, 99)), 2),
        "waited_for_load": len(cold),
        "load_p50_ms": round(float(np.percentile(cold, 50)), 2) if len(cold) else None,
        "load_p99_ms": round(float(np.percentile(cold, 99)), 2) if len(cold) else None,
        "loads_per_s": round(loads / seconds, 2),
        "non_200": sum(1 for r in requests if r[3] != 200),
        "statuses": {str(code): sum(1 for r in requests if r[3] == code) for code in sorted({r[3] for r in requests})},
    }


def hit_rate(server: Server) -> float | None:
    stats = httpx.get(server.url + "/v2/models/stats", timeout=30).json()["model_stats"]
    hits = sum(s["inference_stats"]["cache_hit"]["count"] for s in stats)
    misses = sum(s["inference_stats"]["cache_miss"]["count"] for s in stats)
    return round(hits / (hits + misses), 3) if hits + misses else None


def phase(args: argparse.Namespace, root: Path, cache: bool) -> dict[str, Any]:
    names = build_repository(root, args.digits, args.sklearn, args.model_mib, cache)
    budget = args.budget_mib or max(args.model_mib, len(names) * args.model_mib // 4)
    bodies = request_bodies(args.distinct if cache else 1)
    server = Server(root, budget, root / f"serve-{'cached' if cache else 'cold'}.log")
    try:
        asyncio.run(drive(server, names, bodies, args.conc, args.duration / 4, args.zipf, seed=1))  # warm-up
        measured = asyncio.run(drive(server, names, bodies, args.conc, args.duration, args.zipf, seed=2))
        result = summarise(measured, server.load_ends(), args.duration)
        result.update(models=len(names), budget_mib=budget, models_in_budget=budget // args.model_mib)
        if cache:
            result["cache_hit_rate"] = hit_rate(server)
        return result
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--conc", type=int, default=8)
    parser.add_argument("--digits", type=int, default=40)
    parser.add_argument("--sklearn", type=int, default=10)
    parser.add_argument("--zipf", type=float, default=1.1)
    parser.add_argument("--model-mib", type=int, default=8)
    parser.add_argument("--budget-mib", type=int, default=0)
    parser.add_argument("--distinct", type=int, default=16, help="distinct inputs per model in the cached phase")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="inferd-on-demand-") as tmp:
        root = Path(tmp)
        results = {"cold mix": phase(args, root, cache=False), "cached": phase(args, root, cache=True)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results},
                                   indent=2))
    columns = ["req_per_s", "p50_ms", "p99_ms", "waited_for_load", "load_p50_ms", "load_p99_ms", "loads_per_s",
               "non_200", "cache_hit_rate"]
    print("| phase | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name, result in results.items():
        print(f"| {name} | " + " | ".join(str(result.get(c, "-")) for c in columns) + " |")
    first = next(iter(results.values()))
    print(f"\n{first['models']} models, budget {first['budget_mib']} MiB (about {first['models_in_budget']} "
          f"models), {args.conc} connections, Zipf s={args.zipf}, {args.duration:g} s per phase")
    return 0


if __name__ == "__main__":
    sys.exit(main())
