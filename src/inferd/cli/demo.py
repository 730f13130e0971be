"""``inferd demo``: train the example models, serve them, and show one real prediction per model."""

from __future__ import annotations

import asyncio
import importlib.util
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.table import Table

from inferd.cli.common import console, fail
from inferd.codecs import v2_json
from inferd.dataplane import DataPlane
from inferd.errors import InferError
from inferd.repository import ModelRepository

DEMO_NEEDS = ("sklearn", "skops", "onnx", "skl2onnx", "onnxruntime", "xgboost", "lightgbm")


def demo(
    repo: Annotated[Path, typer.Option(help="Where to write the demo model repository.")] = Path("demo-models"),
    once: Annotated[bool, typer.Option(help="Exit after showing the predictions.")] = False,
) -> None:
    """Build the demo model repository (spam filter, ETA regressor, ranker, digits classifier) and predict."""
    missing = [m for m in DEMO_NEEDS if importlib.util.find_spec(m) is None]
    if missing:
        fail(f"the demo needs {', '.join(missing)}; install them with: pip install 'inferd[demo]'", code=2)
    from inferd.examples.build import build_demo_repository

    started = time.perf_counter()
    with console.status("training the example models"):
        examples = build_demo_repository(repo)
    console.print(f"Wrote {len(examples)} models to [bold]{repo}[/] in {time.perf_counter() - started:.1f} s")
    table = asyncio.run(_predict_all(repo, examples))
    console.print(table)
    console.print(f"Try: [bold]inferd models list {repo}[/]  ·  [bold]inferd predict {repo} digits --input row.json[/]")
    if not once:
        console.print("(The HTTP server that keeps serving these models arrives with `inferd serve`.)")


async def _predict_all(repo: Path, examples: list[Any]) -> Table:
    dataplane = DataPlane(ModelRepository(repo))
    await dataplane.start()
    table = Table("model", "what it does", "prediction", "ms")
    try:
        for example in examples:
            table.add_row(example.name, example.description, *await _predict_one(dataplane, example))
    finally:
        dataplane.close()
    return table


async def _predict_one(dataplane: DataPlane, example: Any) -> tuple[str, str]:
    try:
        request = v2_json.decode_mapping(example.request, example.name, dataplane.signature(example.name))
        started = time.perf_counter()
        response = await dataplane.infer(request)
        elapsed = (time.perf_counter() - started) * 1000
    except InferError as exc:
        return f"[red]{exc.code.value}: {exc.message}[/]", "-"
    outputs: dict[str, np.ndarray] = {o.name: o.data for o in response.outputs}
    return example.explain(outputs), f"{elapsed:.2f}"
