"""``inferd predict``: one prediction from a model in a repository, no server."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated

import typer

from inferd.cli.common import console, fail, fail_on, open_repository


def predict(
    repo: Annotated[Path, typer.Argument(metavar="REPO", help="Model repository folder.")],
    model: Annotated[str, typer.Argument(metavar="MODEL", help="Model name.")],
    input_file: Annotated[
        str,
        typer.Option("--input", "-i", help="JSON file, or - for standard input: a V2 request "
                     "({\"inputs\": [...]}) or a plain mapping {\"input_name\": [[...]]}."),
    ],
    version: Annotated[str | None, typer.Option(help="Model version; default the newest ready one.")] = None,
) -> None:
    """Load MODEL from REPO, run one request through it and print the V2 JSON response."""
    import orjson

    from inferd.codecs import v2_json
    from inferd.dataplane import DataPlane
    from inferd.errors import InferError

    body = sys.stdin.buffer.read() if input_file == "-" else _read(Path(input_file))
    repository = open_repository(repo)
    if model not in repository.names():
        fail(f"no model {model!r} in {repo}; models there: {', '.join(repository.names()) or 'none'}")
    repository.load(model)
    dataplane = DataPlane(repository)
    try:
        payload = v2_json.loads(body)
        if v2_json.is_v2_request(payload):
            request = v2_json.decode_request(payload, model, version)
        else:
            request = v2_json.decode_mapping(payload, model, dataplane.signature(model, version), version)
        response = asyncio.run(dataplane.infer(request))
        text = orjson.dumps(v2_json.encode_response(response), option=orjson.OPT_INDENT_2).decode()
    except InferError as exc:
        fail_on(exc)
    finally:
        dataplane.close()
    if sys.stdout.isatty():
        console.print_json(text)
    else:
        print(text)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        fail(f"cannot read input file: {exc}", code=2)
