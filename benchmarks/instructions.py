"""Instructions per request: what inferd's own code costs to answer a V2 inference, counted rather than timed.

Timings on shared machines move by 10-15 % between runs of the same build, which hides any change smaller than
that. The number of instructions the server's thread executes per request (counted by valgrind's callgrind) is
the same from run to run, so a change of 1 % shows.

What runs is inferd's real HTTP path: its HTTP protocol (inferd.server.http) on the real DataPlane, scheduler,
executor and ONNX model
(the digits model of serve_bench.py), fed by in-memory transports. C connections each send one request per
round, all in the same turn of the event loop (as a loaded server reads them), and a round ends when every
response has been written. There are no sockets, so kernel time is not counted: only inferd's Python and the C
libraries it calls.

Each scenario runs twice under callgrind, with R1 and R2 rounds after the same warm-up (the rounds are for 32
connections; a scenario with fewer runs proportionally more, so each counts as many requests); the difference of the
main thread's instruction counts over the difference of the requests is the cost per request (imports, start-up
and model loading cancel out). Only the event loop's thread is counted: inferd answers these requests there, and
callgrind runs threads one at a time, which makes an idle thread that spins look far busier than it is. Under
callgrind every call takes about 50 times longer, so the harness keeps the model inline on the event loop, as
the executor decides for this model at native speed.

usage: .venv/bin/python benchmarks/instructions.py [--scenarios json-32,json-1,json-32-unbatched,binary-32]
                                                   [--rounds 20,60] [--out benchmarks/results/instructions.json]
                                                   [--baseline DIR]
``--baseline DIR`` counts a second build too, in the same run: a checkout of inferd (a git worktree of another
commit), measured by its own copy of this script's harness with its own sources, on the same models and bodies.
Needs valgrind on PATH (exit code 2 without it). ``--native N`` instead runs each scenario N rounds without
valgrind and prints CPU time per request (quick, but as noisy as any timing).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_bench import build_repository

SCENARIOS = {
    # name: (model, connections, body)
    "json-32": ("digits", 32, "json"),
    "json-1": ("digits", 1, "json"),
    "json-32-unbatched": ("digits_unbatched", 32, "json"),
    "binary-32": ("digits", 32, "binary"),
    "endpoint-json-32": ("front", 32, "json"),  # the endpoint "front" in front of digits (two variants on it, 50/50)
    "endpoint-json-1": ("front", 1, "json"),
}
WARM_ROUNDS = 30
ENDPOINTS_TOML = ('[front]\nvariants = [{name = "a", model = "digits", weight = 50}, '
                  '{name = "b", model = "digits", weight = 50}]\n')
ENDPOINT_MODELS = {"front": "digits"}
"""The endpoint scenarios' endpoint, and the model whose statistics count its requests."""
BUCKETS = (("python", "libpython"), ("numpy", "_multiarray_umath"), ("onnxruntime", "onnxruntime"),
           ("orjson", "orjson"), ("httptools", "httptools"), ("uvloop", "uvloop"), ("libc", "libc.so"))


# -- the harness (what runs under callgrind) ---------------------------------------------------------------------
class MemoryTransport(asyncio.Transport):
    """Keeps the last response written; counts writes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.last = b""

    def write(self, data: Any) -> None:
        self.writes += 1
        self.last = bytes(data)

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 40000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass


def request_bytes(model: str, body_path: Path, header_length: int | None) -> bytes:
    body = body_path.read_bytes()
    head = [f"POST /v2/models/{model}/infer HTTP/1.1", "Host: bench", f"Content-Length: {len(body)}"]
    if header_length is None:
        head.append("Content-Type: application/json")
    else:
        head += ["Content-Type: application/octet-stream", f"Inference-Header-Content-Length: {header_length}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def harness(repo: Path, state: Path, model: str, conns: int, rounds: int, request: bytes) -> dict[str, Any]:
    from inferd.server.runner import build_dataplane, open_endpoints
    from inferd.settings import ServerSettings

    settings = ServerSettings(repository=repo, grpc_port=0, state_dir=state)
    dataplane = build_dataplane(settings)
    # as inferd serve does: every request's name is looked up among them. Without polling the store: that is a
    # timer's cost, not a request's, and callgrind's slowdown would make it look 50 times larger per request
    open_endpoints(dataplane, settings, follow=False)
    await dataplane.start()
    for entry in dataplane.repository.models():
        for version in entry.versions.values():
            version.scheduler.executor._inline_below_ns = 10**12  # type: ignore[attr-defined]
    connections = open_connections(dataplane, settings, conns)
    for _ in range(WARM_ROUNDS):
        await one_round(connections, request)
    cpu = time.process_time()
    for _ in range(rounds):
        await one_round(connections, request)
    cpu = time.process_time() - cpu
    stats = dataplane.statistics(ENDPOINT_MODELS.get(model, model))[0]
    dataplane.close()
    return {"requests": conns * rounds, "cpu_us_per_request": cpu / (conns * rounds) * 1e6,
            "inferences": stats.inference_count, "executions": stats.execution_count}


def open_connections(dataplane: Any, settings: Any, conns: int) -> list[tuple[Any, MemoryTransport]]:
    from inferd.server.http.protocol import HTTPConnection
    from inferd.server.runner import build_front

    front = build_front(dataplane, settings)
    connections = []
    for _ in range(conns):
        protocol = HTTPConnection(front)
        transport = MemoryTransport()
        protocol.connection_made(transport)
        connections.append((protocol, transport))
    return connections


async def one_round(connections: list[tuple[Any, MemoryTransport]], request: bytes) -> None:
    """Every connection sends the request in this turn of the loop; wait until each has its response."""
    for protocol, _ in connections:
        protocol.data_received(request)
    while any(t.writes == 0 for _, t in connections):
        await asyncio.sleep(0)
    for _, transport in connections:
        if not transport.last.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"unexpected response: {transport.last[:300]!r}")
        transport.writes = 0


def inner(args: argparse.Namespace) -> None:
    import uvloop

    model, conns, body = SCENARIOS[args.scenario]
    work = Path(args.inner)
    header = json.loads((work / "bodies.json").read_text())[body]
    request = request_bytes(model, work / header["file"], header["header_length"])
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(harness(work / "repo", work / "state", model, conns, args.rounds, request))
    print("RESULT " + json.dumps(result))


# -- the driver ---------------------------------------------------------------------------------------------------
def prepare(work: Path) -> None:
    payload = build_repository(work)
    (work / "repo" / "endpoints.toml").write_text(ENDPOINTS_TOML)
    bodies = {name: {"file": body.path.name, "header_length": body.header_length}
              for name, body in payload.bodies.items()}
    (work / "bodies.json").write_text(json.dumps(bodies))


def run_inner(work: Path, scenario: str, rounds: int, valgrind_out: Path | None,
              checkout: Path | None = None) -> dict[str, Any]:
    """One harness run; ``checkout``: another build's, with its sources first on the path."""
    script = Path(__file__) if checkout is None else checkout / "benchmarks" / "instructions.py"
    command = [sys.executable, str(script), "--inner", str(work), "--scenario", scenario, "--rounds", str(rounds)]
    if valgrind_out is not None:
        command = ["valgrind", "--tool=callgrind", "--separate-threads=yes",
                   f"--callgrind-out-file={valgrind_out}", *command]
    env = {**os.environ, "INFERD_LOG_LEVEL": "warning"}
    if checkout is not None:
        env["PYTHONPATH"] = str(checkout / "src")
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{scenario}: the harness failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(lines[-1].split(" ", 1)[1])
    return result


def by_object(path: Path) -> dict[str, int]:
    """Instructions of the event loop's thread, by the library they ran in."""
    text = subprocess.run(["callgrind_annotate", "--threshold=100", str(path)], capture_output=True, text=True,
                          check=True).stdout
    counts: dict[str, int] = {"total": 0}
    for line in text.splitlines():
        match = re.match(r"\s*([\d,]+) \([^)]*\)\s+\S.*\[(.*)\]\s*$", line)
        if match is None:
            continue
        value, obj = int(match.group(1).replace(",", "")), match.group(2)
        bucket = next((name for name, key in BUCKETS if key in obj), "other")
        counts[bucket] = counts.get(bucket, 0) + value
        counts["total"] += value
    return counts


def _scaled(rounds: tuple[int, int], connections: int) -> tuple[int, int]:
    """Rounds are given for 32 connections; fewer connections run proportionally more rounds, so that every
    scenario counts as many requests. (At one connection, 40 requests were too few: a single collection or
    timer in either run moved the figure by 10 %.)"""
    scale = max(1, 32 // connections)
    return rounds[0] * scale, rounds[1] * scale


def measure(work: Path, scenario: str, rounds: tuple[int, int], checkout: Path | None = None,
            build: str = "this") -> dict[str, Any]:
    outs = [work / f"cg.{build}.{scenario}.{r}" for r in rounds]
    with ThreadPoolExecutor(2) as pool:  # the two runs side by side: counts do not depend on the load
        results = list(pool.map(lambda r, out: run_inner(work, scenario, r, out, checkout), rounds, outs))
    counts = [by_object(Path(f"{out}-01")) for out in outs]  # thread 1: the event loop's
    requests = results[1]["requests"] - results[0]["requests"]
    per_request = {key: (counts[1].get(key, 0) - counts[0].get(key, 0)) / requests
                   for key in ("total", *(name for name, _ in BUCKETS), "other")}
    return {"build": build, "scenario": scenario, "connections": SCENARIOS[scenario][1], "rounds": list(rounds),
            "requests_counted": requests,
            "instructions_per_request": round(per_request.pop("total")),
            "by_library": {k: round(v) for k, v in per_request.items()},
            "rows_per_execution": round(results[1]["inferences"] / max(1, results[1]["executions"]), 2)}


def report(rows: list[dict[str, Any]]) -> None:
    names = [name for name, _ in BUCKETS] + ["other"]
    print("| build | scenario | instructions / request | vs baseline | rows per model call | "
          + " | ".join(names) + " |")
    print("|---|---|---|---|---|" + "---|" * len(names))
    base = {row["scenario"]: row["instructions_per_request"] for row in rows if row["build"] == "baseline"}
    for row in rows:
        parts = " | ".join(f"{row['by_library'][n]:,}" for n in names)
        ratio = base.get(row["scenario"]) if row["build"] != "baseline" else None
        versus = f"{row['instructions_per_request'] / ratio - 1:+.1%}" if ratio else ""
        print(f"| {row['build']} | {row['scenario']} | {row['instructions_per_request']:,} | {versus} | "
              f"{row['rows_per_execution']} | {parts} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", default="json-32,json-1,json-32-unbatched,binary-32")
    parser.add_argument("--rounds", default="20,60", help="two round counts, the first smaller")
    parser.add_argument("--native", type=int, default=0, help="no valgrind: time N rounds per scenario")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "instructions.json")
    parser.add_argument("--baseline", type=Path, help="another inferd checkout to count in the same run")
    parser.add_argument("--inner", help=argparse.SUPPRESS)
    parser.add_argument("--scenario", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inner:
        args.rounds = int(args.rounds)
        inner(args)
        return 0
    scenarios = args.scenarios.split(",")
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    if not args.native and shutil.which("valgrind") is None:
        print("valgrind is not on PATH (apt-get install valgrind), or use --native N", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="inferd-instructions-") as tmp:
        work = Path(tmp)
        prepare(work)
        if args.native:
            for scenario in scenarios:
                result = run_inner(work, scenario, args.native, None)
                print(f"{scenario}: {result['cpu_us_per_request']:.1f} us of CPU per request (native, noisy)")
            return 0
        low, high = (int(r) for r in args.rounds.split(","))
        rows = []
        for scenario in scenarios:
            scaled = _scaled((low, high), SCENARIOS[scenario][1])
            if args.baseline is not None:
                rows.append(measure(work, scenario, scaled, args.baseline.resolve(), "baseline"))
            rows.append(measure(work, scenario, scaled))
    report(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "rounds": [low, high], "warm_rounds": WARM_ROUNDS}, indent=2))
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
