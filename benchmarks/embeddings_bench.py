"""Benchmark sentence embeddings: all-MiniLM-L6-v2 served by ``inferd serve`` and called with the stock ``openai``
client, against the same model run directly on onnxruntime (the floor), in one run.

usage: .venv/bin/python benchmarks/embeddings_bench.py [--batches 1,8,64] [--seconds 5] [--rounds 2] [--torch]
                                                       [--cache DIR] [--out benchmarks/results/embeddings.json]

Needs the ``embeddings`` and ``dev`` extras (``pip install -e '.[all,dev]'``). The model folder is built once
into ``--cache`` (default: the system temp folder), as ``inferd demo`` builds it: the encoder exported to ONNX.

For each batch size B, each round runs, for ``--seconds`` each:
  server     one client calling ``client.embeddings.create(model="minilm", input=B sentences)`` in a loop
             (the client's default encoding, base64), against ``inferd serve`` on loopback;
  serial     the same against model ``minilm-serial`` of the same server: the same files with
             ``[options] encoder_threads = 1``, one encoder call at a time (inferd before encoder calls ran side
             by side);
  direct     the same B sentences tokenized with ``tokenizers`` and run on an ``onnxruntime`` session with
             inferd's options (1 intra-op thread), 16 per call sorted by length as the runtime does, one call
             at a time, mean-pooled and normalised in numpy: no server at all (the floor of ``serial``);
  torch      with ``--torch``, the same tokens through the transformers model on torch (1 thread): why the
             server runs the ONNX export.
The table shows the best round of each in sentences/s, the server's share of the floor and of the serial
server, its median latency,
and sentences per CPU second of the process that did the work (the server's, read from /proc, for the server
rows): on a shared machine that figure says what one free core would do.
The sentences are 8 to 24 words (12-30 tokens). The machine is shared and noisy: compare within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "embeddings.json"
SUB_BATCH = 16
"""Texts per encoder call, as inferd.runtimes.embeddings.SUB_BATCH."""
TARGET = 150.0
"""Sentences/s through the server at batch 64 (issue 17)."""
VOCABULARY = ("the quick brown fox jumps over a lazy dog while semantic search engines rank passages by meaning "
         "rather than exact keywords so that users find answers to questions about tax law history science "
         "music cooking travel and sports")
WORDS = VOCABULARY.split()


def sentences(count: int) -> list[str]:
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(8, 25)))) + "." for _ in range(count)]


SERIAL = "minilm-serial"
"""The same model with one encoder call at a time."""


def build_model(cache: Path) -> Path:
    """The repository holding ``minilm`` (built unless the cache has it) and ``minilm-serial`` (its version folder,
    linked, with ``encoder_threads = 1``)."""
    from inferd.examples import minilm

    root = cache / "inferd-embeddings-bench"
    folder = root / minilm.NAME
    if not (folder / "model.toml").is_file():
        (folder / "1").mkdir(parents=True, exist_ok=True)
        minilm.build(folder)
    serial = root / SERIAL
    if not (serial / "model.toml").is_file():
        serial.mkdir(exist_ok=True)
        (serial / "1").symlink_to(folder / "1", target_is_directory=True)
        toml = (folder / "model.toml").read_text(encoding="utf-8")
        (serial / "model.toml").write_text(toml + "\n[options]\nencoder_threads = 1\n", encoding="utf-8")
    return root


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(repo: Path, logs: Path) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    http, grpc = free_port(), free_port()
    command = [str(Path(sys.executable).parent / "inferd"), "serve", str(repo), "--host", "127.0.0.1",
               "--http-port", str(http), "--grpc-port", str(grpc), "--state-dir", str(logs / "state")]
    with (logs / "serve.log").open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "INFERD_LOG_LEVEL": "warning"})
    url = f"http://127.0.0.1:{http}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"inferd serve exited with {process.returncode}; see {logs / 'serve.log'}")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.terminate()
    raise TimeoutError("inferd serve was not ready within 120 s")


def cpu_seconds(pid: int | None) -> float:
    """CPU time (user + system) of process ``pid`` so far, or of this process when None (Linux /proc)."""
    if pid is None:
        return time.process_time()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(call: Any, batch: list[str], seconds: float, pid: int | None) -> dict[str, float]:
    """Call ``call(batch)`` for ``seconds`` (after one warm-up call): sentences/s, the median latency, and sentences
    per CPU second of the process doing the work (``pid``, or this one): what one free core would do, a figure
    the other programs on a shared machine move less than the wall-clock rate."""
    call(batch)
    latencies = []
    cpu = cpu_seconds(pid)
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        begin = time.perf_counter()
        call(batch)
        latencies.append(time.perf_counter() - begin)
    elapsed = time.perf_counter() - started
    count = len(batch) * len(latencies)
    return {"sentences_per_s": count / elapsed, "p50_ms": 1000 * float(np.median(latencies)),
            "sentences_per_cpu_s": count / max(cpu_seconds(pid) - cpu, 1e-9), "calls": len(latencies)}


def direct_runner(version: Path) -> Any:
    """Plain tokenizers + onnxruntime + numpy pooling, with inferd's session options, sorted by length and run
    SUB_BATCH texts per call as the embeddings runtime does."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(version / "tokenizer.json"))
    tokenizer.enable_truncation(256)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(version / "model.onnx"), options, providers=["CPUExecutionProvider"])

    def call(batch: list[str]) -> np.ndarray:
        encodings = tokenizer.encode_batch(batch)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        tokens = session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0]
        keep = mask[..., None].astype(np.float32)
        vectors = (tokens * keep).sum(1) / keep.sum(1)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def run(batch: list[str]) -> np.ndarray:
        order = sorted(range(len(batch)), key=lambda i: len(batch[i]))
        vectors = np.empty((len(batch), 384), dtype=np.float32)
        for start in range(0, len(order), SUB_BATCH):
            rows = order[start:start + SUB_BATCH]
            vectors[rows] = call([batch[i] for i in rows])
        return vectors

    return run


def torch_runner(version: Path) -> Any:
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel

    from inferd.examples.minilm import source_folder

    torch.set_num_threads(1)
    tokenizer = Tokenizer.from_file(str(version / "tokenizer.json"))
    tokenizer.enable_truncation(256)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    model = AutoModel.from_pretrained(str(source_folder()), local_files_only=True).eval()

    def call(batch: list[str]) -> np.ndarray:
        encodings = tokenizer.encode_batch(batch)
        ids = torch.tensor([e.ids for e in encodings])
        mask = torch.tensor([e.attention_mask for e in encodings])
        with torch.inference_mode():
            tokens = model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)).last_hidden_state
        keep = mask[..., None].float()
        return torch.nn.functional.normalize((tokens * keep).sum(1) / keep.sum(1), dim=1).numpy()

    def run(batch: list[str]) -> np.ndarray:  # the same sub-batches, sorted by length, as onnxruntime gets
        order = sorted(range(len(batch)), key=lambda i: len(batch[i]))
        vectors = np.empty((len(batch), 384), dtype=np.float32)
        for start in range(0, len(order), SUB_BATCH):
            rows = order[start:start + SUB_BATCH]
            vectors[rows] = call([batch[i] for i in rows])
        return vectors

    return run


def measure(args: argparse.Namespace, url: str, version: Path,
            server_pid: int) -> dict[str, dict[int, list[dict[str, float]]]]:
    from openai import OpenAI

    client = OpenAI(base_url=f"{url}/openai/v1", api_key="unused", max_retries=0, timeout=120)

    def server(batch: list[str]) -> Any:
        return client.embeddings.create(model="minilm", input=batch)

    def serial(batch: list[str]) -> Any:
        return client.embeddings.create(model=SERIAL, input=batch)

    runners: dict[str, Any] = {"server": server, "serial": serial, "direct": direct_runner(version)}
    if args.torch:
        runners["torch"] = torch_runner(version)
    texts = sentences(max(args.batches))
    check = np.stack([np.asarray(d.embedding) for d in server(texts[:8]).data])
    difference = float(np.abs(check - runners["direct"](texts[:8])).max())
    if difference >= 1e-4:
        raise AssertionError(f"the server and onnxruntime disagree by {difference:.2e}")
    results: dict[str, dict[int, list[dict[str, float]]]] = {name: {} for name in runners}
    for size in args.batches:
        for round_number in range(args.rounds):
            for name, run in runners.items():
                point = timed(run, texts[:size], args.seconds, server_pid if name in ("server", "serial") else None)
                results[name].setdefault(size, []).append(point)
                print(f"round {round_number + 1} batch {size:3d} {name:6s} {point['sentences_per_s']:8.1f} "
                      f"sentences/s  {point['sentences_per_cpu_s']:8.1f} per CPU s  p50 {point['p50_ms']:7.1f} ms",
                      file=sys.stderr)
    return results


def report(results: dict[str, dict[int, list[dict[str, float]]]], batches: list[int]) -> dict[str, Any]:
    best = {name: {size: max(points[size], key=lambda p: p["sentences_per_s"]) for size in batches}
            for name, points in results.items()}
    header = "| batch | server (openai client) sentences/s | per server CPU s | server p50 ms | " \
             "serial server sentences/s | per server CPU s | onnxruntime direct sentences/s | per CPU s | " \
             "server / direct | server / serial |"
    rule = "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    if "torch" in best:
        header += " torch direct sentences/s | onnxruntime / torch |"
        rule += "---:|---:|"
    print(header)
    print(rule)
    for size in batches:
        served, serial, direct = best["server"][size], best["serial"][size], best["direct"][size]
        row = (f"| {size} | {served['sentences_per_s']:.1f} | {served['sentences_per_cpu_s']:.1f} | "
               f"{served['p50_ms']:.1f} | {serial['sentences_per_s']:.1f} | {serial['sentences_per_cpu_s']:.1f} | "
               f"{direct['sentences_per_s']:.1f} | {direct['sentences_per_cpu_s']:.1f} | "
               f"{served['sentences_per_s'] / direct['sentences_per_s']:.2f} | "
               f"{served['sentences_per_s'] / serial['sentences_per_s']:.2f} |")
        if "torch" in best:
            torch_rate = best["torch"][size]["sentences_per_s"]
            row += f" {torch_rate:.1f} | {direct['sentences_per_s'] / torch_rate:.2f} |"
        print(row)
    largest = max(batches)
    rate = best["server"][largest]["sentences_per_s"]
    per_cpu = best["server"][largest]["sentences_per_cpu_s"]
    verdict = "meets" if rate >= TARGET else "misses"
    print(f"\nserver at batch {largest}: {rate:.1f} sentences/s, {verdict} the target of {TARGET:.0f}; "
          f"{per_cpu:.1f} per CPU second of the server (load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores)")
    return {"best": {name: {str(k): v for k, v in points.items()} for name, points in best.items()},
            "rounds": {name: {str(k): v for k, v in points.items()} for name, points in results.items()},
            "target_sentences_per_s": TARGET, "meets_target": rate >= TARGET}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", default="1,8,64", help="batch sizes, comma-separated")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per point")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--torch", action="store_true", help="also run the model on torch directly")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    args.batches = [int(b) for b in args.batches.split(",")]
    repo = build_model(args.cache)
    logs = args.out.parent / "embeddings-logs"
    logs.mkdir(parents=True, exist_ok=True)
    process, url = start_server(repo, logs)
    try:
        results = measure(args, url, repo / "minilm" / "1", process.pid)
    finally:
        process.terminate()
        process.wait(30)
    summary = report(results, args.batches)
    summary["settings"] = {"batches": args.batches, "seconds": args.seconds, "rounds": args.rounds,
                           "cpus": os.cpu_count(), "load_average": os.getloadavg()}
    args.out.write_text(json.dumps(summary, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
