"""``inferd bench``: a concurrency sweep and a request-rate sweep against a server, with a table and files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from inferd.cli.common import console, fail, show_report

BAD_INPUT = 2


def _numbers(text: str, kind: type[int] | type[float], option: str) -> list[float]:
    try:
        found = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        fail(f"{option} {text!r}: give comma-separated numbers, e.g. 1,4,16", code=BAD_INPUT)
    if any(v <= 0 for v in found):
        fail(f"{option} {text!r}: every level must be > 0", code=BAD_INPUT)
    return [float(v) for v in found]


def bench(  # noqa: PLR0913, PLR0917 - one parameter per command-line option
    target: Annotated[str, typer.Argument(metavar="URL|REPO", help="A server's http://HOST:PORT, or a model "
                                          "repository folder to serve on free loopback ports for the run.")],
    model: Annotated[str, typer.Argument(metavar="MODEL", help="Model name.")],
    route: Annotated[str, typer.Option(help="json, binary, grpc, generate (/v2/models/M/generate) or openai "
                                       "(/openai/v1/chat/completions).")] = "json",
    concurrency: Annotated[str, typer.Option(help="Closed-loop sweep: requests in flight, comma-separated; "
                                             "'' for none.")] = "1,4,16",
    rates: Annotated[str, typer.Option(help="Open-loop sweep: requests per second, comma-separated.")] = "",
    seconds: Annotated[float, typer.Option(help="Measured time per point.")] = 2.0,
    warmup: Annotated[float, typer.Option(help="Unmeasured time before each point.")] = 0.5,
    batch: Annotated[int, typer.Option(help="Rows per request.")] = 1,
    data: Annotated[Path | None, typer.Option(help="Inputs from this CSV, JSON Lines or Parquet file (first "
                                              "BATCH rows); default: generated from the model's metadata.")] = None,
    ignore: Annotated[str | None, typer.Option(help="Comma-separated columns of DATA that are not inputs "
                                               "(an id, a label).")] = None,
    grpc_port: Annotated[int | None, typer.Option(help="The server's gRPC port (URL targets; default 8001).")] = None,
    processes: Annotated[int, typer.Option(help="Client processes sharing each point's load.")] = 1,
    price_per_hour: Annotated[str | None, typer.Option(help="Hourly price of the machine, for the cost per 1M "
                                                       "inferences.")] = None,
    prices: Annotated[Path | None, typer.Option(help="Price table (TOML/JSON name = price per hour, or CSV "
                                                "name,price): a cost column per entry.")] = None,
    report: Annotated[Path | None, typer.Option(help="Write bench.json, bench.csv, bench.png, bench.html here.")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Measure MODEL's latency, throughput, errors, server-side queue and compute time, and cost, under a
    closed-loop concurrency sweep and an open-loop request-rate sweep."""
    from inferd.tools.bench import BenchError, BenchOptions, parse_price, read_prices
    from inferd.tools.bench import bench as run

    try:
        table = read_prices(prices) if prices else {}
        if price_per_hour is not None:
            table["price_per_hour"] = parse_price(price_per_hour)
        levels = _numbers(concurrency, int, "--concurrency")
        options = BenchOptions(route, [int(c) for c in levels], _numbers(rates, float, "--rates"), seconds, warmup,
                               batch, data, processes, table, grpc_port,
                               ignore=[c.strip() for c in ignore.split(",")] if ignore else [])
        if not options.concurrency and not options.rates:
            fail("nothing to measure: give --concurrency or --rates", code=BAD_INPUT)
        result = run(target, model, options)
    except BenchError as exc:
        fail(str(exc), code=BAD_INPUT)
    show_report(result, report, as_json, "inferd.tools.bench_report", _print)


def _print(result: object, written: dict[str, Path]) -> None:
    from rich.table import Table

    from inferd.tools.bench import BenchReport
    from inferd.tools.bench_report import TABLE_HEADER, table_rows

    assert isinstance(result, BenchReport)
    table = Table(title=f"{result.model} at {result.url} over {result.route}, batch {result.batch}, "
                  f"{result.seconds:g} s a point")
    prices = sorted({n for p in result.points for n in p.cost_per_1m})
    for heading in (*TABLE_HEADER, *(f"$/1M {n}" for n in prices)):
        table.add_column(heading, justify="right")
    for point, row in zip(result.points, table_rows(result), strict=True):
        table.add_row(*map(str, row), *(f"{point.cost_per_1m[n]:.4g}" for n in prices))
    console.print(table)
    for note in result.notes:
        console.print(f"note: {note}", highlight=False, soft_wrap=True)
    for kind, path in written.items():
        console.print(f"{kind}: {path}", highlight=False, soft_wrap=True)
