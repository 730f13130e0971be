"""``inferd models list|show``: what a repository holds and whether it loads."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from inferd.cli.common import console, fail, open_repository

if TYPE_CHECKING:
    from inferd.repository import Model, ModelVersion, State

app = typer.Typer(help="Inspect the models in a repository folder.", no_args_is_help=True)

RepoArg = Annotated[Path, typer.Argument(metavar="REPO", help="Model repository folder.")]


@app.command("list")
def list_models(
    repo: Annotated[Path | None, typer.Argument(metavar="[REPO]", help="Model repository folder.")] = None,
    url: Annotated[str | None, typer.Option("--url", help="Ask the running server at this HTTP address instead "
                                                          "(or INFERD_URL, with no REPO): which models are "
                                                          "loaded, their size and when last used.")] = None,
) -> None:
    """Load every model in REPO and list its versions, runtime and state; or, with --url (or no REPO), list a
    running server's models: loaded or not, memory held, load time, last used."""
    if url is not None or repo is None:
        from inferd.cli.server_models import list_served

        list_served(url or "")
        return
    repository = open_repository(repo)
    models = repository.load_all()
    if not models:
        console.print(f"No models in {repo}. A model is a subfolder holding an artifact such as model.onnx.",
                      markup=False)
        return
    table = Table("model", "version", "runtime", "state", "inputs", "reason")
    for model in models:
        for row in _rows(model):
            table.add_row(*row)
    console.print(table)
    if any(not _ok(m) for m in models):
        raise typer.Exit(1)


@app.command("show")
def show_model(
    repo: RepoArg,
    model: Annotated[str, typer.Argument(metavar="MODEL", help="Model name (its folder name).")],
    version: Annotated[int | None, typer.Option(help="Version to show; default the newest ready one.")] = None,
) -> None:
    """Load one model and show its versions, artifact and signature."""
    from inferd.repository import State

    repository = open_repository(repo)
    if model not in repository.names():
        fail(f"no model {model!r} in {repo}; models there: {', '.join(repository.names()) or 'none'}")
    loaded = repository.load(model)
    console.print(f"[bold]{escape(loaded.name)}[/]  {escape(loaded.config.description)}")
    for number, entry in sorted(loaded.versions.items()):
        where = entry.source.artifact if entry.source else "-"
        console.print(f"  version {number}: {entry.state.value}  {entry.runtime_name}  {where}", markup=False)
        if entry.sha256:
            console.print(f"    sha256 {entry.sha256}", highlight=False)
        if entry.reason:
            console.print(Text(f"    {entry.reason}", style="red"), highlight=False)
    if loaded.reason:
        fail(loaded.reason)
    ready = [v for v in loaded.versions.values() if v.state is State.READY]
    chosen = next((v for v in ready if v.version == version), None) if version else loaded.latest_ready()
    if chosen is None:
        fail(f"model {model!r} has no ready version{f' {version}' if version else ''}")
    _print_signature(chosen)


def _print_signature(chosen: ModelVersion) -> None:
    table = Table("", "name", "datatype", "shape", title=f"signature of version {chosen.version}")
    for kind, specs in (("input", chosen.signature.inputs), ("output", chosen.signature.outputs)):
        for spec in specs:
            table.add_row(kind, Text(spec.name), spec.datatype, Text(str(list(spec.shape))))
    console.print(table)


def _ok(model: Model) -> bool:
    from inferd.repository import State

    return not model.reason and all(v.state is State.READY for v in model.versions.values())


def _rows(model: Model) -> list[tuple[Text, ...]]:
    """Table cells as plain Text: a reason such as ``pip install 'inferd[onnx]'`` is not Rich markup."""
    from inferd.repository import State

    if model.reason or not model.versions:
        return [(Text(model.name), Text("-"), Text("-"), _state(State.UNAVAILABLE), Text(""), Text(model.reason))]
    rows: list[tuple[Text, ...]] = []
    for number, version in sorted(model.versions.items()):
        inputs = ""
        if version.runtime is not None:
            inputs = ", ".join(f"{s.name} {s.datatype}{list(s.shape)}" for s in version.signature.inputs)
        rows.append((Text(model.name), Text(str(number)), Text(version.runtime_name or "-"), _state(version.state),
                     Text(inputs), Text(version.reason)))
    return rows


def _state(state: State) -> Text:
    colour = {"READY": "green", "UNAVAILABLE": "red"}.get(state.value, "yellow")
    return Text(state.value, style=colour)
