"""``inferd recommend``: the serving configuration with the most throughput under a p99 latency constraint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from inferd.cli.common import console, fail, show_report

BAD_INPUT = 2


def recommend(  # noqa: PLR0913, PLR0917 - one parameter per command-line option
    repo: Annotated[Path, typer.Argument(metavar="REPO", help="Model repository folder.")],
    model: Annotated[str, typer.Argument(metavar="MODEL", help="Model name (its folder in REPO).")],
    p99: Annotated[str, typer.Option(help="Latency constraint on p99: 20ms, 500us, 1s.")],
    budget: Annotated[str, typer.Option(help="Time for the whole search: 10m, 90s.")] = "10m",
    data: Annotated[Path | None, typer.Option(help="Request inputs from this file (else from the metadata).")]
    = None,
    ignore: Annotated[str | None, typer.Option(help="Comma-separated columns of DATA that are not inputs.")] = None,
    concurrency: Annotated[str, typer.Option(help="Concurrency levels benched for each configuration.")] = "1,4,16",
    seconds: Annotated[float, typer.Option(help="Measured time per level.")] = 1.0,
    batch: Annotated[int, typer.Option(help="Rows per request.")] = 1,
    price_per_hour: Annotated[str | None, typer.Option(help="Hourly price, for the cost per 1M inferences.")]
    = None,
    write: Annotated[bool, typer.Option("--write", help="Write the chosen settings into MODEL's model.toml.")]
    = False,
    report: Annotated[Path | None, typer.Option(help="Write recommend.json, .png and .html here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Serve MODEL under several configurations (dynamic batching, queue delay, preferred batch sizes,
    instances, intra-op threads), bench each, and rank those meeting the p99 constraint by throughput."""
    from inferd.tools.bench import parse_price
    from inferd.tools.recommend import RecommendOptions, parse_duration_us, write_choice
    from inferd.tools.recommend import recommend as run

    try:
        levels = [int(c) for c in concurrency.split(",") if c.strip()]
        prices = {"price_per_hour": parse_price(price_per_hour)} if price_per_hour is not None else {}
        options = RecommendOptions(parse_duration_us(p99), parse_duration_us(budget) / 1e6, levels, seconds, data,
                                   [c.strip() for c in ignore.split(",")] if ignore else [], batch, prices=prices)
        result = run(repo, model, options)
    except ValueError as exc:  # BenchError, and a level that is not an integer
        fail(str(exc), code=BAD_INPUT)
    if write and result.chosen is not None:
        result.written = str(write_choice(repo, model, result.chosen))
    show_report(result, report, as_json, "inferd.tools.recommend_report", _print)
    if result.chosen is None:
        raise typer.Exit(1)


def _print(result: object, written: dict[str, Path]) -> None:
    from rich.table import Table

    from inferd.tools.recommend import Recommendation
    from inferd.tools.recommend_report import HEADER, rows

    assert isinstance(result, Recommendation)
    table = Table(title=f"{result.model}: configurations ranked, p99 <= {result.p99_us / 1e3:g} ms")
    for heading in HEADER:
        table.add_column(heading, justify="right")
    for row in rows(result):
        table.add_row(*map(str, row))
    console.print(table)
    for note in result.notes:
        console.print(f"note: {note}", highlight=False, soft_wrap=True)
    if result.chosen is not None:
        console.print(f"chosen: {result.chosen.name} {json.dumps(result.chosen.settings)}", highlight=False)
    console.print(f"written: {result.written}" if result.written else "written: nothing", highlight=False)
    for kind, path in written.items():
        console.print(f"{kind}: {path}", highlight=False, soft_wrap=True)
