"""Benchmark batch jobs: ``run_batch`` (local engine) against a plain pyarrow + onnxruntime loop over the
same Parquet file, in the same run, each in its own process.

usage: .venv/bin/python benchmarks/batch_bench.py [--rows 1000000] [--batch-size 4096] [--rounds 2]
                                                  [--cache DIR] [--out benchmarks/results/batch.json]

The data: ``--rows`` rows x 64 FP32 columns (p0..p63, pixel values 0-16), Parquet with row groups of 65,536
rows, cached under ``--cache`` (default: the system temp folder) so later runs skip making it. The model: the
digits example (an MLP on sklearn's 8x8 digits, ONNX; input FP32 [-1, 64]; outputs label and probabilities),
built once into the cache.

Both sides do the same work: read the Parquet file in mini-batches of ``--batch-size`` rows, stack the 64
columns into an FP32 matrix, run the model, write label and probabilities to a Parquet file.
  plain    pyarrow ``iter_batches`` -> numpy -> ``InferenceSession.run`` -> ``ParquetWriter``, one thread of
           Python; onnxruntime with the same session options as inferd's onnx runtime (1 intra-op thread).
  inferd   ``inferd.batch.run_batch`` with the local engine (concurrency 2): the DataPlane, the journal, part
           files and the final assembly included.
Each round runs plain then inferd, each in a fresh process; the table shows the best round of each (rows/s)
and the peak RSS (the child's ``ru_maxrss``). The machine is shared and noisy: compare within one run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

FEATURES = 64
ROW_GROUP = 65_536
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "batch.json"


def make_data(path: Path, rows: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.exists():
        return
    rng = np.random.default_rng(0)
    schema = pa.schema([(f"p{i}", pa.float32()) for i in range(FEATURES)])
    temporary = path.with_suffix(".tmp")
    with pq.ParquetWriter(temporary, schema) as writer:
        for start in range(0, rows, ROW_GROUP):
            n = min(ROW_GROUP, rows - start)
            x = rng.integers(0, 17, size=(n, FEATURES)).astype(np.float32)
            writer.write_table(pa.table([x[:, i] for i in range(FEATURES)], schema=schema), row_group_size=ROW_GROUP)
    temporary.rename(path)


def make_model(repo: Path) -> None:
    if (repo / "digits" / "1" / "model.onnx").exists():
        return
    from inferd.examples import digits

    folder = repo / "digits"
    (folder / "1").mkdir(parents=True, exist_ok=True)
    digits.build(folder)


def plain(data: Path, repo: Path, out: Path, batch_size: int) -> None:
    import numpy as np
    import onnxruntime as ort
    import pyarrow as pa
    import pyarrow.parquet as pq

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(repo / "digits" / "1" / "model.onnx"), options,
                                   providers=["CPUExecutionProvider"])
    schema = pa.schema([("label", pa.int64()), ("probabilities", pa.list_(pa.float32(), 10))])
    with pq.ParquetWriter(out / "plain.parquet", schema) as writer:
        for batch in pq.ParquetFile(data).iter_batches(batch_size=batch_size):
            x = np.empty((batch.num_rows, FEATURES), dtype=np.float32)
            for j in range(FEATURES):
                x[:, j] = batch.column(j).to_numpy()
            label, probabilities = session.run(["label", "probabilities"], {"input": x})
            writer.write_table(pa.table([pa.array(label), pa.FixedSizeListArray.from_arrays(
                pa.array(probabilities.ravel()), 10)], schema=schema))


def inferd(data: Path, repo: Path, out: Path, batch_size: int) -> None:
    from inferd.batch import BatchOptions, run_batch

    run_batch(repo, "digits", data, out, BatchOptions(batch_size=batch_size, concurrency=2, restart=True))


def child(kind: str, data: Path, repo: Path, out: Path, batch_size: int) -> dict[str, Any]:
    """Run one side in a fresh process; its wall time and peak RSS."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    command = [sys.executable, __file__, "--child", kind, "--data", str(data), "--repo", str(repo), "--out",
               str(out), "--batch-size", str(batch_size)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    output = process.stdout.read() if process.stdout else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{kind} failed:\n{output}")
    result = json.loads(output.strip().splitlines()[-1])
    result["peak_rss_mib"] = usage.ru_maxrss / 1024
    return result


def child_main(args: argparse.Namespace) -> None:
    imports_started = time.perf_counter()
    import onnxruntime  # noqa: F401 - both sides: libraries imported before the clock starts
    import pyarrow.parquet as pq

    if args.child == "inferd":
        importlib.import_module("inferd.batch")
    imports_s = time.perf_counter() - imports_started
    rows = pq.ParquetFile(args.data).metadata.num_rows
    started = time.perf_counter()
    (plain if args.child == "plain" else inferd)(args.data, args.repo, args.out, args.batch_size)
    seconds = time.perf_counter() - started
    print(json.dumps({"kind": args.child, "rows": rows, "seconds": seconds, "rows_per_s": rows / seconds,
                      "imports_s": imports_s}))


def check_same_predictions(out: Path) -> bool:
    import pyarrow.parquet as pq

    a = pq.read_table(out / "plain" / "plain.parquet")
    b = pq.read_table(out / "inferd" / "data.parquet")
    return bool(a.column("label").equals(b.column("label")))


def report(results: dict[str, list[dict[str, Any]]], same: bool, args: argparse.Namespace) -> dict[str, Any]:
    from rich.console import Console
    from rich.table import Table

    best = {k: max(v, key=lambda r: r["rows_per_s"]) for k, v in results.items()}
    ratio = best["inferd"]["rows_per_s"] / best["plain"]["rows_per_s"]
    table = Table(title=f"batch: {best['plain']['rows']:,} rows x {FEATURES} FP32, Parquet, digits ONNX, "
                        f"mini-batch {args.batch_size}")
    for column in ("side", "rows/s (best)", "rows/s (each round)", "seconds (best)", "peak RSS MiB (max)"):
        table.add_column(column, justify="right")
    for kind in ("plain", "inferd"):
        rounds = results[kind]
        table.add_row(kind, f"{best[kind]['rows_per_s']:,.0f}", ", ".join(f"{r['rows_per_s']:,.0f}" for r in rounds),
                      f"{best[kind]['seconds']:.2f}", f"{max(r['peak_rss_mib'] for r in rounds):,.0f}")
    console = Console()
    console.print(table)
    console.print(f"inferd / plain = {ratio:.2f} (target >= 0.90); same labels: {same}")
    return {"rows": best["plain"]["rows"], "batch_size": args.batch_size, "ratio": ratio, "same_labels": same,
            "rounds": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "inferd-batch-bench")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--child", choices=["plain", "inferd"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--repo", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args)
        return
    args.cache.mkdir(parents=True, exist_ok=True)
    data = args.cache / f"data-{args.rows}" / "data.parquet"
    data.parent.mkdir(exist_ok=True)
    repo = args.cache / "models"
    make_data(data, args.rows)
    make_model(repo)
    results: dict[str, list[dict[str, Any]]] = {"plain": [], "inferd": []}
    for _ in range(args.rounds):
        for kind in ("plain", "inferd"):
            results[kind].append(child(kind, data, repo, args.cache / "out" / kind, args.batch_size))
    summary = report(results, check_same_predictions(args.cache / "out"), args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
