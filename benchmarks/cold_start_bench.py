"""Benchmark process cold start: ``inferd serve`` of one ONNX model until ready, against the bare reference server.

usage: .venv/bin/python benchmarks/cold_start_bench.py [--runs 10] [--server-cmd [label=]CMD ...] [--no-importtime]
                                                       [--out benchmarks/results/cold_start.json]

The repository holds one model, ``digits`` (LogisticRegression on sklearn's digits as ONNX, as in serve_bench.py).
Servers, launched one after another in alternation (inferd, floor, inferd, floor, ...) so that both see the same
machine:
  inferd   the venv's ``inferd serve REPO --http-port H --grpc-port G`` (HTTP and gRPC, as a user starts it).
  floor    ``benchmarks/floor_server.py REPO H G``: uvloop + httptools + onnxruntime + grpc.aio and nothing else,
           the least a Python V2 server over HTTP and gRPC does before it answers.
  others   ``--server-cmd [label=]CMD`` (placeholders {python} {repo} {http} {grpc}; leading VAR=value words go to
           its environment), e.g. another checkout: ``base=PYTHONPATH=/tmp/base/src {python} -m inferd serve ...``.

Per launch: **wall** seconds from the launch until ``GET /v2/health/ready`` returns 200 (polled every 5 ms), and
**CPU** seconds the server's process tree used by then (utime + stime from /proc). Reported per server: the median
and the minimum of each over ``--runs`` launches, and the ratio of each median to the floor's. On a shared machine
the wall time moves with the other load (a busy machine stretches every launch alike, so read the ratio); the CPU
time moves far less, and shows what the server itself does before it is ready. The servers run without
PYTHONDONTWRITEBYTECODE, so that after the warm-up launch they import from cached bytecode, as an installed package
does (a checkout run with it set compiles inferd's ~110 modules at every start: about half a second more).

Then, unless ``--no-importtime``, one launch of each under ``python -X importtime``, stopped the moment it is ready:
the import time before ready, by top-level package (self time summed), to show where the time goes. These are wall
times under the import tracer, so compare their shares, not their sum with the table above.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

from serve_bench import ServerSpec, build_repository, free_ports, parse_server, process_tree, tree_cpu_s

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
INFERD_CMD = "{python} -m inferd serve {repo} --http-port {http} --grpc-port {grpc}"
FLOOR_CMD = f"{{python}} {HERE / 'floor_server.py'} {{repo}} {{http}} {{grpc}}"
READY = "/v2/health/ready"
DEFAULT_OUT = HERE / "results" / "cold_start.json"


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{READY}", timeout=1) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def launch(spec: ServerSpec, repo: Path, state: Path, timeout: float, importtime: Path | None = None
           ) -> dict[str, float]:
    """Start one server, wait until it is ready, stop it; its wall and CPU seconds until ready."""
    http, grpc = free_ports(2)
    argv = spec.command(repo, http, grpc)
    if importtime is not None:
        argv = [argv[0], "-X", "importtime", *argv[1:]]
    env = {**os.environ, **spec.env, "INFERD_STATE_DIR": str(state / str(http))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # bytecode cached as an installed package has it (see --warmup)
    err = importtime.open("w") if importtime is not None else subprocess.DEVNULL
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                            start_new_session=True)
    try:
        while not _ready(http):
            if proc.poll() is not None:
                raise RuntimeError(f"{spec.label} exited with {proc.returncode} before it was ready: {argv}")
            if time.perf_counter() - started > timeout:
                raise RuntimeError(f"{spec.label} not ready after {timeout:.0f} s")
            time.sleep(0.005)
        wall = time.perf_counter() - started
        cpu = tree_cpu_s(proc.pid)
    finally:
        _stop(proc, kill=importtime is not None)
        if importtime is not None:
            err.close()  # type: ignore[union-attr]
    return {"wall_s": wall, "cpu_s": cpu}


def _stop(proc: subprocess.Popen[bytes], kill: bool) -> None:
    """SIGTERM (SIGKILL for an importtime run: what it imports after ready is not wanted), then the whole group."""
    tree = process_tree(proc.pid)
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for pid in tree[1:]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def import_shares(trace: Path, top: int) -> dict[str, Any]:
    """``-X importtime`` output: total import time and the self time summed by top-level package (ms)."""
    by_package: dict[str, int] = defaultdict(int)
    total = 0
    for line in trace.read_text(errors="replace").splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _, name = line.removeprefix("import time:").split("|", 2)
        package = name.strip().split(".")[0]
        if package == "inferd":  # inferd's own subpackages apart: which of them starts what
            package = ".".join(name.strip().split(".")[:2])
        by_package[package] += int(self_us)
        total += int(self_us)
    ranked = sorted(by_package.items(), key=lambda kv: -kv[1])
    return {"total_ms": round(total / 1000), "modules": sum(1 for _ in trace.read_text().splitlines()) - 1,
            "top": [(name, round(us / 1000)) for name, us in ranked[:top]]}


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def run(specs: list[ServerSpec], args: argparse.Namespace, work: Path) -> dict[str, Any]:
    repo = work / "repo"
    built = build_repository(work / "build")
    del built
    (repo / "digits" / "1").mkdir(parents=True)
    (work / "build" / "repo" / "digits" / "1" / "model.onnx").rename(repo / "digits" / "1" / "model.onnx")
    runs: dict[str, list[dict[str, float]]] = {spec.label: [] for spec in specs}
    for _ in range(args.warmup):  # the page cache and the .pyc files, for every server alike
        for spec in specs:
            launch(spec, repo, work / "state", args.timeout)
    for i in range(args.runs):
        order = specs if i % 2 == 0 else specs[::-1]  # alternate which goes first
        for spec in order:
            runs[spec.label].append(launch(spec, repo, work / "state", args.timeout))
            print(f"# run {i + 1} {spec.label}: {runs[spec.label][-1]}", file=sys.stderr, flush=True)
    summary = {label: {"wall_median_s": _median([r["wall_s"] for r in rs]),
                       "wall_min_s": round(min(r["wall_s"] for r in rs), 3),
                       "cpu_median_s": _median([r["cpu_s"] for r in rs]),
                       "cpu_min_s": round(min(r["cpu_s"] for r in rs), 3)} for label, rs in runs.items()}
    floor = summary.get("floor")
    for entry in summary.values():
        if floor:
            entry["wall_ratio"] = round(entry["wall_median_s"] / floor["wall_median_s"], 2)
            entry["cpu_ratio"] = round(entry["cpu_median_s"] / floor["cpu_median_s"], 2)
    imports = {}
    if args.importtime:
        for spec in specs:
            trace = work / f"importtime-{spec.label}.txt"
            launch(spec, repo, work / "state", args.timeout, importtime=trace)
            imports[spec.label] = import_shares(trace, args.top)
    return {"runs": runs, "summary": summary, "imports": imports}


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"\n## Cold start: launch until {READY} is 200, one ONNX model, median of {args.runs} alternating runs\n")
    print("| server | wall median s | wall min s | x floor (wall) | CPU median s | CPU min s | x floor (CPU) |")
    print("|---|---|---|---|---|---|---|")
    for label, s in result["summary"].items():
        print(f"| {label} | {s['wall_median_s']:.3f} | {s['wall_min_s']:.3f} | {s.get('wall_ratio', '-')} | "
              f"{s['cpu_median_s']:.3f} | {s['cpu_min_s']:.3f} | {s.get('cpu_ratio', '-')} |")
    for label, found in result["imports"].items():
        shares = ", ".join(f"{name} {ms}" for name, ms in found["top"])
        print(f"\n**{label}** imports before ready (`-X importtime`, self ms by package): {found['total_ms']} ms "
              f"over {found['modules']} modules; {shares}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10, help="launches of each server (default 10)")
    ap.add_argument("--warmup", type=int, default=1,
                    help="untimed launches of each first (default 1): page cache, and .pyc files written")
    ap.add_argument("--server-cmd", action="append", default=[], metavar="[label=]CMD",
                    help="another server to launch in the alternation")
    ap.add_argument("--no-importtime", dest="importtime", action="store_false",
                    help="skip the -X importtime launches")
    ap.add_argument("--top", type=int, default=14, help="packages listed per import trace (default 14)")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    texts = [f"inferd={INFERD_CMD}", f"floor={FLOOR_CMD}", *args.server_cmd]
    specs = [parse_server(text.replace("{python}", shlex.quote(PYTHON)), i) for i, text in enumerate(texts)]
    with tempfile.TemporaryDirectory(prefix="inferd-cold-") as tmp:
        result = run(specs, args, Path(tmp))
    result["meta"] = {"when": datetime.now().isoformat(timespec="seconds"), "python": PYTHON,
                      "runs": args.runs, "cmds": {s.label: list(s.argv) for s in specs},
                      "loadavg": os.getloadavg(), "cpus": os.cpu_count()}
    report(result, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"\nraw results: {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
