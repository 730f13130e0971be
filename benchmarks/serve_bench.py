"""Benchmark ``inferd serve`` end to end: start it, load it over HTTP and gRPC, print a table, write JSON.

usage: .venv/bin/python benchmarks/serve_bench.py [--duration 5] [--conc 1,8,32] [--scenarios json,binary,...]
                                                  [--server-cmd [label=]CMD ...] [--out benchmarks/results/serve.json]

Needs only the inferd venv (scikit-learn, skl2onnx, skops, onnxruntime, tritonclient, grpcio) and ``wrk`` on PATH.

The model repository, built in a temporary folder:
  digits                  LogisticRegression(max_iter=2000) on sklearn's load_digits, converted with skl2onnx
                          (input ``input`` FP32 [-1,64]; outputs label, probabilities; zipmap off; opset 17).
                          No model.toml, so server-wide INFERD_* settings apply to it (by default: dynamic
                          batching with no queue delay, as for every ONNX model).
  digits_unbatched        the same ONNX file with dynamic batching turned off in model.toml.
  digits_sklearn          the same estimator as a skops file (inferd's sklearn runtime, about 90 us per call);
                          model.toml turns dynamic batching off explicitly.
  digits_sklearn_batched  the same skops file with dynamic batching on (max_queue_delay_us 2000, max_batch_size 64).
Every request carries one row and asks for output ``probabilities``; one check request per scenario compares
the answer with scikit-learn's before any load is applied.

What is measured, per server command (default: the venv's ``inferd serve``; ``--server-cmd`` adds others, so two
builds can be compared in one run; ``--no-default`` leaves the venv's out):
  cold start    launch until GET /v2/health/ready returns 200 (four models loaded).
  idle RSS      VmRSS summed over the server's process tree (from /proc), 1 s after ready.
  peak RSS      VmHWM summed over the tree at the end (each process's own peak; an upper bound of the true peak).
  scenarios     json     V2 JSON to /v2/models/digits/infer, at each --conc.
                json-unbatched
                         the same to digits_unbatched: what batching the requests that arrive together buys.
                binary   the same request in the binary tensor extension (JSON header with binary_data_size and
                         256 raw bytes, Inference-Header-Content-Length; the output asked for as binary).
                grpc     ModelInfer over gRPC with raw_input_contents, from a Python grpc.aio load generator in its
                         own process (tritonclient's stubs, C concurrent calls on one channel).
                sklearn-batching-off / sklearn-batching-on
                         V2 JSON to digits_sklearn and digits_sklearn_batched at --batching-conc (default 1,32):
                         what dynamic batching buys for a slow Python model.
                latency-1
                         V2 JSON at one connection; the target is p50 <= 0.2 ms.
  Each point: a --warmup (default 1 s) run, then ``wrk -t1 -cC -d{duration}s`` with a Lua script that POSTs the body
  file and prints wrk's own latency histogram percentiles (or the gRPC load generator for C concurrent calls).
  errors       non-2xx responses plus socket errors (wrk), failed RPCs (gRPC).
  server CPU   utime+stime of the server's process tree (/proc/<pid>/stat) over the measured run, per request.
  load gen CPU the load generator's CPU over the run, in % of one core. wrk or the Python gRPC generator near 100 %
               means the load generator, not the server, sets the req/s. The Python gRPC generator costs about half
               as much CPU per call as the server and competes with it for the same cores, so the grpc rows are a
               lower bound of what the server can do.

How to read it: compare ratios within one run (binary/json, grpc/json, batching on/off, or one build against
another), never absolute numbers across runs or machines. The load generator shares the machine's cores with the
server, and the machine is shared and noisy: repeated runs differ by about +-10 % in req/s, more in p99.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

FEATURES = 64
P50_TARGET_MS = 0.2
CLK_TCK = os.sysconf("SC_CLK_TCK")
READY_PATH = "/v2/health/ready"
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "serve.json"
DEFAULT_CMD = "{inferd} serve {repo} --host 127.0.0.1 --http-port {http} --grpc-port {grpc}"

# scenario -> (model, transport); which concurrencies each runs at is decided in scenario_points().
SCENARIOS: dict[str, tuple[str, str]] = {
    "json": ("digits", "json"),
    "json-unbatched": ("digits_unbatched", "json"),
    "binary": ("digits", "binary"),
    "grpc": ("digits", "grpc"),
    "sklearn-batching-off": ("digits_sklearn", "json"),
    "sklearn-batching-on": ("digits_sklearn_batched", "json"),
    "latency-1": ("digits", "json"),
}
# (name, numerator scenario, denominator scenario): req/s ratios at the largest concurrency both ran.
RATIOS = (
    ("binary/json", "binary", "json"),
    ("json batched/unbatched", "json", "json-unbatched"),
    ("grpc/json", "grpc", "json"),
    ("batching on/off", "sklearn-batching-on", "sklearn-batching-off"),
)

LUA = r"""-- POST the bytes of $BODY_FILE; print wrk's summary as one JSON line (latencies in ms).
local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = os.getenv("CONTENT_TYPE")
local header_length = os.getenv("INFER_HEADER_LEN") or ""
if header_length ~= "" then
  wrk.headers["Inference-Header-Content-Length"] = header_length
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_s":%.4f,"p50_ms":%.4f,"p90_ms":%.4f,"p99_ms":%.4f,"max_ms":%.3f,'
    .. '"non2xx":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3, latency:percentile(90) / 1e3,
    latency:percentile(99) / 1e3, latency.max / 1e3, e.status, e.connect, e.read, e.write, e.timeout))
end
"""


class BenchError(Exception):
    """Something that stops one server or one scenario from being measured; recorded, then the run goes on."""


# ---------------------------------------------------------------------------------------------------------------
# Model repository and request bodies


@dataclass(frozen=True)
class HttpBody:
    path: Path
    content_type: str
    header_length: int | None = None  # Inference-Header-Content-Length, for the binary extension


@dataclass(frozen=True)
class Payload:
    row: list[float]
    expected: list[float]  # scikit-learn's predict_proba for the row
    bodies: dict[str, HttpBody]  # transport -> body


def build_repository(root: Path) -> Payload:
    """Train the digits model, write the three model folders under ``root/repo`` and the bodies under ``root``."""
    import skops.io as sio
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    x, y = load_digits(return_X_y=True)
    x = x.astype(np.float32)
    clf = LogisticRegression(max_iter=2000).fit(x, y)
    onx = convert_sklearn(clf, initial_types=[("input", FloatTensorType([None, FEATURES]))],
                          options={id(clf): {"zipmap": False}}, target_opset=17)
    repo = root / "repo"
    _write(repo / "digits" / "1" / "model.onnx", onx.SerializeToString())
    _write(repo / "digits_unbatched" / "1" / "model.onnx", onx.SerializeToString())
    _write(repo / "digits_unbatched" / "model.toml", b"[batching]\nenabled = false\n")
    inputs = f'[[inputs]]\nname = "input"\ndatatype = "FP32"\nshape = [-1, {FEATURES}]\n'
    tomls = {
        "digits_sklearn": "[batching]\nenabled = false\n",
        "digits_sklearn_batched": "max_batch_size = 64\n\n[batching]\nenabled = true\nmax_queue_delay_us = 2000\n",
    }
    for name, toml in tomls.items():
        (repo / name / "1").mkdir(parents=True)
        sio.dump(clf, repo / name / "1" / "model.skops")
        _write(repo / name / "model.toml", f"{toml}\n{inputs}".encode())

    row = x[0]
    v2_input: dict[str, Any] = {"name": "input", "shape": [1, FEATURES], "datatype": "FP32"}
    json_body = {"inputs": [{**v2_input, "data": row.tolist()}], "outputs": [{"name": "probabilities"}]}
    raw = row.astype("<f4").tobytes()
    header = json.dumps({"inputs": [{**v2_input, "parameters": {"binary_data_size": len(raw)}}],
                         "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}]}).encode()
    _write(root / "req.json", json.dumps(json_body).encode())
    _write(root / "req.bin", header + raw)
    return Payload(row=row.tolist(), expected=clf.predict_proba(x[:1])[0].tolist(), bodies={
        "json": HttpBody(root / "req.json", "application/json"),
        "binary": HttpBody(root / "req.bin", "application/octet-stream", len(header)),
    })


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


# ---------------------------------------------------------------------------------------------------------------
# /proc: process tree, CPU time, memory


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name: [0] is the state (field 3), [1] the ppid."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def _children(pid: int) -> list[int]:
    tasks = Path(f"/proc/{pid}/task")
    files = list(tasks.glob("*/children")) if tasks.is_dir() else []
    if files:
        found: list[int] = []
        for f in files:
            with contextlib.suppress(OSError):
                found += [int(p) for p in f.read_text().split()]
        return found
    # Kernels built without CONFIG_PROC_CHILDREN have no children files: find the children by their ppid.
    return [int(p.name) for p in Path("/proc").iterdir()
            if p.name.isdigit() and (st := _stat(int(p.name))) is not None and st[1] == str(pid)]


def process_tree(pid: int) -> list[int]:
    seen: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        if p not in seen and _stat(p) is not None:
            seen.append(p)
            todo += _children(p)
    return seen


def tree_cpu_s(pid: int) -> float:
    """utime + stime of every live process in the tree, in seconds."""
    ticks = 0
    for p in process_tree(pid):
        if (st := _stat(p)) is not None:
            ticks += int(st[11]) + int(st[12])
    return ticks / CLK_TCK


def tree_memory_mib(pid: int, key: str = "VmRSS") -> float:
    total_kib = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    total_kib += int(line.split()[1])
    return round(total_kib / 1024, 1)


def children_cpu_s() -> float:
    """CPU of this process's waited-for children (wrk), in seconds."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


# ---------------------------------------------------------------------------------------------------------------
# The server


@dataclass(frozen=True)
class ServerSpec:
    label: str
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)

    def command(self, repo: Path, http: int, grpc: int) -> list[str]:
        subst = {"{repo}": str(repo), "{http}": str(http), "{grpc}": str(grpc)}
        return [_fill(token, subst) for token in self.argv]


def _fill(text: str, subst: Mapping[str, str]) -> str:
    for key, value in subst.items():
        text = text.replace(key, value)
    return text


def parse_server(text: str, index: int) -> ServerSpec:
    """``[label=]CMD``: a lower-case label names it; leading ``VAR=value`` words set the server's environment."""
    label, cmd = f"cmd{index}", text
    if m := re.match(r"([a-z][a-z0-9_.-]*)=(.+)", text, re.DOTALL):
        label, cmd = m[1], m[2]
    words = shlex.split(cmd)
    env: dict[str, str] = {}
    while words and re.match(r"[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    if not words or "{http}" not in cmd:
        raise ValueError(f"--server-cmd {text!r}: needs a command with the {{http}} placeholder")
    return ServerSpec(label, tuple(words), env)


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class RunningServer:
    """One launched server: its own process group (so that stop() also reaches workers it started)."""

    def __init__(self, spec: ServerSpec, repo: Path, log: IO[bytes]) -> None:
        self.http, self.grpc = free_ports(2)
        self.argv = spec.command(repo, self.http, self.grpc)
        self.base = f"http://127.0.0.1:{self.http}"
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(self.argv, env={**os.environ, **spec.env}, stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float) -> float:
        """Seconds from launch until the ready endpoint said 200."""
        while True:
            if http_get(self.base + READY_PATH) == 200:
                return time.perf_counter() - self.started
            if self.proc.poll() is not None:
                raise BenchError(f"server exited with {self.proc.returncode} before it was ready")
            if time.perf_counter() - self.started > timeout:
                raise BenchError(f"server not ready after {timeout:.0f} s")
            time.sleep(0.01)

    def ensure_alive(self) -> None:
        if self.proc.poll() is not None:
            raise BenchError(f"server exited with {self.proc.returncode}")

    def stop(self, grace: float = 10.0) -> str:
        """SIGTERM, then SIGKILL after ``grace`` seconds; then SIGKILL whatever is left in its process group."""
        proc = self.proc
        if proc.poll() is not None:
            outcome = f"had already exited with {proc.returncode}"
        else:
            t0 = time.perf_counter()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
                outcome = f"SIGTERM: exited with {proc.returncode} after {time.perf_counter() - t0:.2f} s"
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                outcome = f"still running {grace:.0f} s after SIGTERM: SIGKILL"
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # the group the server leads (start_new_session): stragglers
        return outcome


def http_get(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def http_post(url: str, body: HttpBody) -> tuple[int, Mapping[str, str], bytes]:
    headers = {"Content-Type": body.content_type}
    if body.header_length is not None:
        headers["Inference-Header-Content-Length"] = str(body.header_length)
    req = urllib.request.Request(url, data=body.path.read_bytes(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10.0) as reply:
            return int(reply.status), dict(reply.headers), reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()
    except OSError as exc:
        raise BenchError(f"POST {url}: {exc}") from exc


def probabilities_of(headers: Mapping[str, str], data: bytes) -> np.ndarray:
    """Output ``probabilities`` of a V2 reply, JSON or binary extension."""
    length = {k.lower(): v for k, v in headers.items()}.get("inference-header-content-length")
    head = json.loads(data[: int(length)] if length else data)
    offset = int(length or 0)
    for out in head["outputs"]:
        size = int(out.get("parameters", {}).get("binary_data_size", 0))
        if out["name"] == "probabilities":
            if "data" in out:
                return np.asarray(out["data"], dtype=np.float64)
            dtype = {"FP32": "<f4", "FP64": "<f8"}[out["datatype"]]
            return np.frombuffer(data[offset: offset + size], dtype=dtype).astype(np.float64)
        offset += size
    raise ValueError("no output 'probabilities' in the reply")


def check_http(url: str, body: HttpBody, expected: list[float]) -> None:
    status, headers, data = http_post(url, body)
    if status != 200:
        raise BenchError(f"check request: HTTP {status}: {data[:200].decode(errors='replace')}")
    try:
        got = probabilities_of(headers, data)
    except (ValueError, KeyError, TypeError) as exc:
        raise BenchError(f"check request: cannot read the reply ({exc}): {data[:200]!r}") from exc
    if got.shape != (len(expected),) or not np.allclose(got, expected, atol=1e-4):
        raise BenchError(f"check request: probabilities {got.tolist()} differ from scikit-learn's {expected}")


# ---------------------------------------------------------------------------------------------------------------
# Load: wrk over HTTP, a grpc.aio subprocess over gRPC


@dataclass(frozen=True)
class Point:
    scenario: str
    model: str
    transport: str
    c: int


@dataclass(frozen=True)
class Context:
    args: argparse.Namespace
    repo: Path
    lua: Path
    payload: Payload


def run_wrk(url: str, body: HttpBody, c: int, seconds: int, lua: Path) -> dict[str, Any]:
    env = {**os.environ, "BODY_FILE": str(body.path), "CONTENT_TYPE": body.content_type,
           "INFER_HEADER_LEN": "" if body.header_length is None else str(body.header_length)}
    cmd = ["wrk", "-t1", f"-c{c}", f"-d{seconds}s", "--timeout", "5s", "-s", str(lua), url]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 60, check=False)
    for line in reversed(out.stdout.splitlines()):
        if line.startswith("BENCHJSON "):
            result: dict[str, Any] = json.loads(line.removeprefix("BENCHJSON "))
            return result
    raise BenchError(f"wrk exited with {out.returncode}: {(out.stderr or out.stdout).strip()[-300:]}")


def measure_http(server: RunningServer, ctx: Context, point: Point) -> dict[str, Any]:
    url = f"{server.base}/v2/models/{point.model}/infer"
    body = ctx.payload.bodies[point.transport]
    run_wrk(url, body, point.c, ctx.args.warmup, ctx.lua)
    cpu0, gen0 = tree_cpu_s(server.pid), children_cpu_s()
    run = run_wrk(url, body, point.c, ctx.args.duration, ctx.lua)
    cpu, gen = tree_cpu_s(server.pid) - cpu0, children_cpu_s() - gen0
    errors = {k: run.pop(k) for k in ("non2xx", "connect", "read", "write", "timeout")}
    return {**run, "errors": sum(errors.values()), "error_kinds": {k: v for k, v in errors.items() if v},
            "server_cpu_s": cpu, "loadgen_cpu_s": gen, "loadgen": "wrk -t1"}


def measure_grpc(server: RunningServer, ctx: Context, point: Point) -> dict[str, Any]:
    """Run the load generator in its own process; sample the server's CPU when it says its warm-up is over."""
    cfg = {"target": f"127.0.0.1:{server.grpc}", "model": point.model, "c": point.c, "warmup": ctx.args.warmup,
           "duration": ctx.args.duration, "row": ctx.payload.row, "expected": ctx.payload.expected}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--grpc-loadgen", json.dumps(cfg)]
    gen = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert gen.stdout is not None
        first = gen.stdout.readline().strip()
        cpu0 = tree_cpu_s(server.pid)
        out, err = gen.communicate(timeout=ctx.args.warmup + ctx.args.duration + 60)
        cpu = tree_cpu_s(server.pid) - cpu0
    finally:
        if gen.poll() is None:
            gen.kill()
            gen.wait()
    lines = [ln for ln in (first, *out.splitlines()) if ln.startswith("{")]
    if not lines:
        raise BenchError(f"gRPC load generator exited with {gen.returncode}: {err.strip()[-300:]}")
    run: dict[str, Any] = json.loads(lines[-1])
    if "error" in run:
        raise BenchError(run["error"])
    return {**run, "server_cpu_s": cpu, "loadgen": "python grpc.aio, 1 channel"}


def measure(server: RunningServer, ctx: Context, point: Point) -> dict[str, Any]:
    row: dict[str, Any] = {"scenario": point.scenario, "model": point.model, "transport": point.transport,
                           "c": point.c}
    try:
        server.ensure_alive()
        run = (measure_grpc if point.transport == "grpc" else measure_http)(server, ctx, point)
    except (BenchError, subprocess.TimeoutExpired) as exc:
        return {**row, "error": str(exc)}
    requests, seconds = run["requests"], run["duration_s"]
    run.update(rps=round(requests / seconds, 1) if seconds else None,
               server_cpu_ms_per_req=round(1000 * run["server_cpu_s"] / requests, 4) if requests else None,
               loadgen_cpu_pct=round(100 * run.pop("loadgen_cpu_s") / seconds) if seconds else None,
               server_cpu_s=round(run["server_cpu_s"], 2))
    return {**row, **run}


# ---------------------------------------------------------------------------------------------------------------
# The gRPC load generator (runs in its own process: `serve_bench.py --grpc-loadgen JSON`)


async def grpc_load(cfg: dict[str, Any]) -> dict[str, Any]:
    """One check call, ``warmup`` seconds of load, print WARM, then ``duration`` seconds measured."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    request = service_pb2.ModelInferRequest(model_name=cfg["model"])
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = "input", "FP32"
    tensor.shape.extend([1, FEATURES])
    request.outputs.add().name = "probabilities"
    request.raw_input_contents.append(np.asarray(cfg["row"], dtype="<f4").tobytes())
    async with grpc.aio.insecure_channel(cfg["target"]) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        try:
            reply = await stub.ModelInfer(request, timeout=10)
        except grpc.aio.AioRpcError as exc:
            return {"error": f"check ModelInfer: {exc.code().name}: {exc.details()}"}
        got = np.frombuffer(reply.raw_output_contents[0], dtype="<f4") if reply.raw_output_contents else None
        if got is None or got.shape != (len(cfg["expected"]),) or not np.allclose(got, cfg["expected"], atol=1e-4):
            return {"error": f"check ModelInfer: unexpected reply {reply}"[:300]}
        await _hammer(stub.ModelInfer, request, cfg["c"], cfg["warmup"])
        print("WARM", flush=True)
        cpu0, t0 = sum(os.times()[:2]), time.perf_counter()
        latencies, errors = await _hammer(stub.ModelInfer, request, cfg["c"], cfg["duration"])
        seconds, cpu = time.perf_counter() - t0, sum(os.times()[:2]) - cpu0
    p50, p90, p99 = np.percentile(latencies, [50, 90, 99]) * 1000 if latencies else (None, None, None)
    kinds: dict[str, int] = {}
    for name in errors:
        kinds[name] = kinds.get(name, 0) + 1
    return {"requests": len(latencies) + len(errors), "duration_s": round(seconds, 4),
            "p50_ms": _round(p50), "p90_ms": _round(p90), "p99_ms": _round(p99),
            "max_ms": _round(max(latencies, default=0) * 1000), "errors": len(errors), "error_kinds": kinds,
            "loadgen_cpu_s": cpu}


async def _hammer(call: Any, request: Any, conc: int, seconds: float) -> tuple[list[float], list[str]]:
    import grpc

    deadline = time.perf_counter() + seconds
    latencies: list[float] = []
    errors: list[str] = []

    async def loop() -> None:
        while (start := time.perf_counter()) < deadline:
            try:
                await call(request, timeout=10)
            except grpc.aio.AioRpcError as exc:
                errors.append(exc.code().name)
            else:
                latencies.append(time.perf_counter() - start)

    await asyncio.gather(*(loop() for _ in range(conc)))
    return latencies, errors


def _round(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(float(x), digits)


# ---------------------------------------------------------------------------------------------------------------
# One server, all scenarios


def scenario_points(args: argparse.Namespace) -> list[Point]:
    points = []
    for name in args.scenarios:
        model, transport = SCENARIOS[name]
        concs = [1] if name == "latency-1" else args.batching_conc if name.startswith("sklearn-") else args.conc
        points += [Point(name, model, transport, c) for c in concs]
    return points


def bench_server(spec: ServerSpec, ctx: Context, logdir: Path) -> dict[str, Any]:
    res: dict[str, Any] = {"label": spec.label, "env": spec.env, "runs": []}
    log_path = logdir / f"{spec.label}.log"
    with log_path.open("wb") as log:
        server = RunningServer(spec, ctx.repo, log)
        res["cmd"] = shlex.join(server.argv)
        try:
            res["cold_start_s"] = round(server.wait_ready(ctx.args.start_timeout), 3)
            time.sleep(1.0)
            res["idle_rss_mib"], res["processes"] = tree_memory_mib(server.pid), len(process_tree(server.pid))
            note(f"{spec.label}: ready in {res['cold_start_s']} s, idle RSS {res['idle_rss_mib']} MiB "
                 f"({res['processes']} processes); {res['cmd']}")
            res["runs"] = run_scenarios(server, ctx)
            res["peak_rss_mib"] = tree_memory_mib(server.pid, "VmHWM")
        except BenchError as exc:
            res["error"] = f"{exc}; log: {log_path}"
            note(f"{spec.label} FAILED: {res['error']}")
        finally:
            res["stop"] = server.stop()
    res["ratios"] = ratios(res["runs"])
    return res


def run_scenarios(server: RunningServer, ctx: Context) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    checked: dict[tuple[str, str], str | None] = {}
    for point in scenario_points(ctx.args):
        key = (point.model, point.transport)
        if key not in checked and point.transport != "grpc":  # the gRPC generator checks its own first reply
            try:
                check_http(f"{server.base}/v2/models/{point.model}/infer", ctx.payload.bodies[point.transport],
                           ctx.payload.expected)
                checked[key] = None
            except BenchError as exc:
                checked[key] = str(exc)
        row = ({"scenario": point.scenario, "model": point.model, "transport": point.transport, "c": point.c,
                "error": checked[key]} if checked.get(key) else measure(server, ctx, point))
        note(f"  {point.scenario} C={point.c}: " + ", ".join(f"{k}={v}" for k, v in row.items()
                                                               if k not in ("scenario", "model", "transport", "c")))
        runs.append(row)
    return runs


def ratios(runs: Iterable[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """req/s of one scenario over another's, at the largest concurrency both measured."""
    rps: dict[tuple[str, int], float] = {(r["scenario"], r["c"]): r["rps"] for r in runs if r.get("rps")}
    found = {}
    for name, top, bottom in RATIOS:
        common = [c for (s, c) in rps if s == top and (bottom, c) in rps]
        if common:
            c = max(common)
            found[name] = {"c": c, "ratio": round(rps[(top, c)] / rps[(bottom, c)], 2)}
    return found


def note(text: str) -> None:
    print(f"# {text}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------------
# Report


def fmt(x: float | None, spec: str = ",.0f") -> str:
    return "-" if x is None else format(x, spec)


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    several = len(results) > 1
    base = {(r["scenario"], r["c"]): r.get("rps") for r in results[0]["runs"]} if results else {}
    print(f"\n## inferd serve: wrk -t1, {args.duration} s per point after {args.warmup} s warm-up\n")
    print(("| server " if several else "") + "| scenario | model | C | req/s | p50 ms | p99 ms | errors | "
          "server CPU ms/req | load gen CPU % |" + (f" x {results[0]['label']} |" if several else ""))
    print("|---" * (9 + 2 * several) + "|")
    for res in results:
        for r in res["runs"]:
            cells = [r["scenario"], r["model"], str(r["c"]), fmt(r.get("rps")), fmt(r.get("p50_ms"), ".3f"),
                     fmt(r.get("p99_ms"), ".3f"), str(r.get("errors", "FAILED: " + str(r.get("error")))),
                     fmt(r.get("server_cpu_ms_per_req"), ".3f"), fmt(r.get("loadgen_cpu_pct"))]
            if several:
                b = base.get((r["scenario"], r["c"]))
                cells = [res["label"], *cells, fmt(r["rps"] / b if r.get("rps") and b else None, ".2f")]
            print("| " + " | ".join(cells) + " |")
    print("\nload gen CPU % is of one core; near 100 % the load generator, not the server, limits req/s. The grpc "
          "rows come from a Python grpc.aio generator, which costs about half as much CPU per call as the server and "
          "competes with it for the cores: read them as a lower bound.\n")
    for res in results:
        summary(res)


def summary(res: dict[str, Any]) -> None:
    print(f"**{res['label']}**: cold start {fmt(res.get('cold_start_s'), '.2f')} s, idle RSS "
          f"{fmt(res.get('idle_rss_mib'), '.0f')} MiB, peak RSS (sum of VmHWM) {fmt(res.get('peak_rss_mib'), '.0f')} "
          f"MiB; stop: {res.get('stop')}")
    if res.get("error"):
        print(f"- FAILED: {res['error']}")
    for name, r in res["ratios"].items():
        print(f"- {name} req/s at C={r['c']}: {r['ratio']:.2f}")
    lat = next((r for r in res["runs"] if r["scenario"] == "latency-1" and r.get("p50_ms") is not None), None)
    if lat:
        verdict = "met" if lat["p50_ms"] <= P50_TARGET_MS else "missed"
        print(f"- latency-1 p50 {lat['p50_ms']:.3f} ms (target <= {P50_TARGET_MS} ms: {verdict})")
    print()


# ---------------------------------------------------------------------------------------------------------------
# Command line


def _ints(text: str) -> list[int]:
    values = [int(x) for x in text.split(",") if x.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return values


def _scenarios(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown scenario(s) {unknown}; choose from {', '.join(SCENARIOS)}")
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=5, help="seconds measured per point [5]")
    ap.add_argument("--warmup", type=int, default=1, help="seconds of warm-up load before each point [1]")
    ap.add_argument("--conc", type=_ints, default=[1, 8, 32], help="concurrencies for json, binary, grpc [1,8,32]")
    ap.add_argument("--batching-conc", type=_ints, default=[1, 32], help="concurrencies for sklearn-* [1,32]")
    ap.add_argument("--scenarios", type=_scenarios, default=list(SCENARIOS),
                    help=f"comma-separated subset of {','.join(SCENARIOS)} [all]")
    ap.add_argument("--server-cmd", action="append", default=[], metavar="[label=]CMD",
                    help="also benchmark this command (repeatable). Placeholders {repo} {http} {grpc}; leading "
                         "VAR=value words go to its environment; a lower-case 'label=' prefix names it.")
    ap.add_argument("--no-default", action="store_true", help="skip the venv's own `inferd serve`")
    ap.add_argument("--start-timeout", type=float, default=120, help="seconds to wait for ready [120]")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results [benchmarks/results/serve.json]")
    ap.add_argument("--grpc-loadgen", help=argparse.SUPPRESS)  # internal: the gRPC load generator's process
    return ap.parse_args(argv)


def server_specs(args: argparse.Namespace) -> list[ServerSpec]:
    specs = []
    if not args.no_default:
        inferd = Path(sys.executable).parent / "inferd"
        specs.append(parse_server("inferd=" + DEFAULT_CMD.replace("{inferd}", shlex.quote(str(inferd))), 0))
    specs += [parse_server(text, i) for i, text in enumerate(args.server_cmd, start=1)]
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"server labels must differ, got {labels}")
    return specs


def wrk_version() -> str:
    out = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    return (out.stdout or out.stderr).splitlines()[0].strip() if (out.stdout or out.stderr) else "?"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.grpc_loadgen:
        print(json.dumps(asyncio.run(grpc_load(json.loads(args.grpc_loadgen)))), flush=True)
        return 0
    if shutil.which("wrk") is None:
        print("serve_bench: wrk is not installed or not on PATH (apt-get install wrk)", file=sys.stderr)
        return 2
    try:
        specs = server_specs(args)
    except ValueError as exc:
        print(f"serve_bench: {exc}", file=sys.stderr)
        return 2
    if not specs:
        print("serve_bench: nothing to run (--no-default without --server-cmd)", file=sys.stderr)
        return 2
    logdir = args.out.parent / f"{args.out.stem}-logs"
    logdir.mkdir(parents=True, exist_ok=True)
    meta = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cpus": os.cpu_count(), "loadavg": os.getloadavg(),
            "python": sys.version.split()[0], "wrk": wrk_version(), "argv": sys.argv[1:],
            "inferd_env": {k: v for k, v in os.environ.items() if k.startswith("INFERD_")},
            "units": "latencies in ms; cpu in s; rss in MiB"}
    with tempfile.TemporaryDirectory(prefix="inferd-bench-") as tmp:
        root = Path(tmp)
        note("building the model repository")
        payload = build_repository(root)
        lua = root / "post.lua"
        lua.write_text(LUA)
        ctx = Context(args, root / "repo", lua, payload)
        results = [bench_server(spec, ctx, logdir) for spec in specs]
    args.out.write_text(json.dumps({"meta": meta, "servers": results}, indent=1) + "\n")
    report(results, args)
    print(f"results: {args.out}; server logs: {logdir}")
    return 1 if any(r.get("error") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
