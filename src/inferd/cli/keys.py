"""``inferd keys``: make API keys for ``inferd serve --api-keys-file``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from inferd.cli.common import console, errors, fail

app = typer.Typer(help="Create API keys (the server stores only their sha256).", no_args_is_help=True)


@app.command("create")
def create(
    name: Annotated[str, typer.Option(help="Who holds the key; shown in refusals and logs.")],
    scopes: Annotated[str, typer.Option(help="Comma-separated: infer, read, admin (admin implies the others).")],
    file: Annotated[Path | None, typer.Option(help="Keys file (TOML, or JSON by its suffix) to add the record "
                                                   "to; created readable by you only.")] = None,
) -> None:
    """Print a new random key once, and add its hashed record to FILE (or print the record to add)."""
    from pydantic import ValidationError

    from inferd.security.keys import ApiKey, KeysError, append_key, hash_key, new_key

    key = new_key()
    try:
        record = ApiKey.model_validate({"name": name, "sha256": hash_key(key),
                                        "scopes": [s.strip() for s in scopes.split(",") if s.strip()]})
    except ValidationError as exc:
        fail(f"invalid key: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}", code=2)
    if file is not None:
        try:
            append_key(file, record)
        except KeysError as exc:
            fail(str(exc), code=2)
        errors.print(f"added key {name!r} to {file}; it is shown only now:", highlight=False)
    else:
        errors.print("the key (shown only now), then its record for INFERD_API_KEYS or a keys file:",
                     highlight=False)
    console.print(key, highlight=False, soft_wrap=True)
    if file is None:
        console.print(json.dumps([record.to_record()]), highlight=False, soft_wrap=True, markup=False)
