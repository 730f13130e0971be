"""``inferd demo``: train the example models, serve them, and show one real prediction per model, made
through the HTTP server exactly as a client would."""

from __future__ import annotations

import asyncio
import importlib.util
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from inferd.cli.common import configure_logging, console, fail
from inferd.cli.serve import make_settings

if TYPE_CHECKING:
    import numpy as np
    from rich.table import Table

    from inferd.dataplane import DataPlane
    from inferd.settings import ServerSettings

DEMO_NEEDS = ("sklearn", "skops", "onnx", "skl2onnx", "onnxruntime", "xgboost", "lightgbm")


def demo(
    repo: Annotated[Path, typer.Option(help="Where to write the demo model repository.")] = Path("demo-models"),
    once: Annotated[bool, typer.Option(help="Exit after showing the predictions instead of serving on.")] = False,
    http_port: Annotated[int | None, typer.Option(help="HTTP port [default: 8080].")] = None,
    grpc_port: Annotated[int | None, typer.Option(help="gRPC port [default: 8081].")] = None,
) -> None:
    """Build the demo model repository (spam filter, ETA regressor, ranker, digits classifier; sentence
    embeddings with the embeddings extra and the SmolLM2 chat model with the llm extra), serve it, and predict with
    each model over HTTP. Serves until Ctrl-C unless --once."""
    missing = [m for m in DEMO_NEEDS if importlib.util.find_spec(m) is None]
    if missing:
        fail(f"the demo needs {', '.join(missing)}; install them with: pip install 'inferd[demo]'", code=2)
    from inferd.examples.build import OPTIONAL_EXAMPLES, build_demo_repository, installed

    repo.mkdir(parents=True, exist_ok=True)
    settings = make_settings(repo, http_port=http_port, grpc_port=grpc_port)  # wrong ports: said before training
    for note in skip_notes(OPTIONAL_EXAMPLES, installed):
        console.print(note, markup=False)
    started = time.perf_counter()
    with console.status("training the example models"):
        examples = build_demo_repository(repo, optional=True)
    console.print(f"Wrote {len(examples)} models to [bold]{repo}[/] in {time.perf_counter() - started:.1f} s")
    configure_logging("warning")
    from inferd.server.runner import run_until_stopped, serve

    stop = asyncio.Event()

    async def show_predictions(dataplane: DataPlane) -> None:
        console.print(await _predict_all(dataplane, settings, examples))
        _print_next_steps(settings, repo, once, [e.name for e in examples])
        if once:
            stop.set()

    try:
        run_until_stopped(serve(settings, on_ready=show_predictions, stop=stop))
        if not once:
            console.print("Stopped.")
    except OSError as exc:  # a port in use says which option chooses another
        fail(f"cannot serve: {exc}")


def skip_notes(modules: Sequence[Any], is_installed: Callable[[Any], bool]) -> list[str]:
    """One line for each optional example that will not be built, naming the extra that builds it."""
    return [f"Skipping {m.NAME} ({m.DESCRIPTION}): install it with pip install 'inferd[{m.EXTRA}]'"
            for m in modules if not is_installed(m)]


async def _predict_all(dataplane: DataPlane, settings: ServerSettings, examples: list[Any]) -> Table:
    import httpx  # only the demo needs an HTTP client: keep it off `inferd serve`'s start-up
    from rich.table import Table

    base = f"http://{settings.host}:{settings.http_port}"
    table = Table("model", "what it does", "prediction (over HTTP)", "ms", title=f"inferd serving {base}")
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        for example in examples:
            table.add_row(example.name, example.description, *await _predict_one(client, dataplane, example))
    return table


async def _predict_one(client: Any, dataplane: DataPlane, example: Any) -> tuple[str, str]:
    from inferd.codecs import v2_json

    body = v2_body(dataplane, example.name, example.request)
    started = time.perf_counter()
    response = await client.post(f"/v2/models/{example.name}/infer", content=v2_json.dumps(body))
    elapsed = f"{(time.perf_counter() - started) * 1000:.1f}"
    if response.status_code != 200:
        return f"[red]HTTP {response.status_code}: {escape(response.text)}[/]", elapsed
    outputs = {
        o["name"]: _as_array(o) for o in response.json()["outputs"]
    }
    return example.explain(outputs), elapsed


def v2_body(dataplane: DataPlane, model: str, mapping: dict[str, Any]) -> dict[str, Any]:
    """A V2 JSON request body for a plain ``{input: values}`` mapping, typed from the model's signature."""
    from inferd.codecs import v2_json

    request = v2_json.decode_mapping(mapping, model, dataplane.signature(model))
    return {"inputs": [
        {"name": i.name, "datatype": i.datatype, "shape": i.shape, "data": i.data} for i in request.inputs
    ]}


def _as_array(output: dict[str, Any]) -> np.ndarray:
    import numpy as np

    from inferd.tensors import numpy_dtype

    if output["datatype"] == "BYTES":
        values = [v.encode() for v in output["data"]]
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return array.reshape(output["shape"])
    return np.asarray(output["data"], dtype=numpy_dtype(output["datatype"])).reshape(output["shape"])


def _print_next_steps(settings: ServerSettings, repo: Path, once: bool, names: list[str]) -> None:
    base = f"http://{settings.host}:{settings.http_port}"
    console.print(f"Try: [bold]curl {base}/v2/models/digits[/]  ·  [bold]inferd models list {repo}[/]")
    if "minilm" in names:
        body = '{"model": "minilm", "input": "hello world"}'
        console.print(f"Embeddings (OpenAI-compatible): curl {base}/openai/v1/embeddings "
                      f"-H 'content-type: application/json' -d '{body}'", markup=False, soft_wrap=True)
    if not once:
        console.print(f"Serving {repo} on {base} (gRPC {settings.host}:{settings.grpc_port}); Ctrl-C to stop.")
