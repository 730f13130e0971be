"""``inferd endpoints list|show|set|rollout|history``: the endpoints of a running server (docs/endpoints.md).

Changes are made against the version the command read, so a change someone else made meanwhile fails with
409 rather than being overwritten.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from inferd.cli.common import console, fail
from inferd.cli.jobs import UrlOption, _request, _url

app = typer.Typer(help="Endpoints of a running server: variants and weights, shadows, staged rollouts (an API "
                       "key, if it needs one, comes from $INFERD_API_KEY).", no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(metavar="ENDPOINT", help="The endpoint's name.")]


@app.command("list")
def list_endpoints(url: UrlOption = "") -> None:
    """Every endpoint: its version, variants, traffic shares and rollout state."""
    found = _request("GET", f"{_url(url)}/v2/endpoints").json()["endpoints"]
    if not found:
        console.print("No endpoints.", markup=False)
        return
    table = Table("endpoint", "version", "variants", "rollout")
    for endpoint in found:
        rollout = endpoint.get("rollout")
        table.add_row(Text(endpoint["name"]), str(endpoint["version"]), Text(_variants(endpoint)),
                      Text(rollout["state"] if rollout else "-"))
    console.print(table)


def _variants(endpoint: dict[str, Any]) -> str:
    parts = []
    for v in endpoint["variants"]:
        target = v["model"] + (f":{v['version']}" if "version" in v else "")
        share = f"shadow {v['sample']:g}%" if v.get("shadow") else f"{v.get('traffic_percent', 0):g}%"
        parts.append(f"{v['name']}={target} ({share})")
    return ", ".join(parts)


@app.command("show")
def show(name: NameArg, url: UrlOption = "") -> None:
    """An endpoint as JSON: spec, per-variant requests and errors, shadow comparisons, rollout."""
    console.print_json(json.dumps(_request("GET", f"{_url(url)}/v2/endpoints/{name}").json()))


def _target(text: str, option: str) -> tuple[str, dict[str, Any]]:
    name, sep, target = text.partition("=")
    if not sep or not name or not target:
        fail(f"{option} takes NAME=MODEL or NAME=MODEL:VERSION, got {text!r}")
    model, _, version = target.partition(":")
    spec: dict[str, Any] = {"name": name, "model": model}
    if version:
        spec["version"] = int(version) if version.isdigit() else version
    return name, spec


@app.command("set")
def set_endpoint(
    name: NameArg,
    url: UrlOption = "",
    variant: Annotated[list[str] | None, typer.Option(
        "--variant", help="A live variant NAME=MODEL[:VERSION] (repeat; replaces a variant of that name).")] = None,
    shadow: Annotated[list[str] | None, typer.Option(
        "--shadow", help="A shadow variant NAME=MODEL[:VERSION] (repeat).")] = None,
    traffic: Annotated[str, typer.Option(help='Weights, Azure style: "blue=90 green=10".')] = "",
    mirror_traffic: Annotated[float, typer.Option(help="Percent of requests copied to the shadows.")] = 100.0,
    remove: Annotated[list[str] | None, typer.Option("--remove", help="Remove this variant (repeat).")] = None,
) -> None:
    """Create or change an endpoint (against the version read: a concurrent change makes this fail with 409)."""
    base = f"{_url(url)}/v2/endpoints/{name}"
    current = _request("GET", base, missing_ok=True)
    spec = current.json() if current is not None else {"variants": []}
    variants = {v["name"]: {k: v[k] for k in ("name", "model", "version", "weight", "shadow", "sample") if k in v}
                for v in spec["variants"]}
    for text in variant or []:
        key, entry = _target(text, "--variant")
        variants[key] = {**entry, "weight": variants.get(key, {}).get("weight", 0)}
    for text in shadow or []:
        key, entry = _target(text, "--shadow")
        variants[key] = {**entry, "shadow": True, "sample": mirror_traffic}
    for item in traffic.split():
        key, _, weight = item.partition("=")
        if key not in variants:
            fail(f"--traffic names {key!r}, not a variant of {name!r} (variants: {', '.join(variants) or 'none'})")
        variants[key]["weight"] = float(weight.removesuffix("%"))
    for key in remove or []:
        variants.pop(key, None)
    body: dict[str, Any] = {"variants": list(variants.values())}
    if current is not None:
        body["version"] = spec["version"]  # the version read: a change made meanwhile makes this one 409
    changed = _request("PUT", base, json=body).json()
    console.print(f"endpoint {name} is at version {changed['version']}", markup=False)


@app.command("rollout")
def rollout(  # noqa: PLR0913, PLR0917 - one parameter per command-line option
    name: NameArg,
    to: Annotated[str, typer.Option("--to", help="MODEL:VERSION to move traffic to.")],
    url: UrlOption = "",
    canary: Annotated[str, typer.Option(help="The first step's share.")] = "10%",
    bake: Annotated[str, typer.Option(help="How long each step bakes (30s, 5m).")] = "5m",
    steps: Annotated[str, typer.Option(help="linear:N% or a comma list of percentages.")] = "linear:25%",
    max_error_rate: Annotated[str, typer.Option(help="Alarm above this error rate.")] = "5%",
    max_p99: Annotated[str | None, typer.Option(help="Alarm above this p99 latency (250ms, 1s).")] = None,
    p99_factor: Annotated[float | None, typer.Option(help="Alarm above k x the old variants' p99.")] = None,
    variant: Annotated[str | None, typer.Option(help="The new variant's name [default: MODEL-VERSION].")] = None,
) -> None:
    """Start a staged rollout; alarms on the new variant's metrics roll it back automatically."""
    body: dict[str, Any] = {"to": to, "canary": canary, "bake": bake, "max_error_rate": max_error_rate,
                            "steps": steps if steps.startswith("linear:") else [s.strip() for s in steps.split(",")]}
    for key, value in (("max_p99", max_p99), ("p99_factor", p99_factor), ("variant", variant)):
        if value is not None:
            body[key] = value
    started = _request("POST", f"{_url(url)}/v2/endpoints/{name}/rollout", json=body).json()
    shown = ", ".join(f"{s:g}%" for s in started["steps"])
    console.print(f"rollout of {name} to {to} started: {shown}, {started['bake_s']:g} s bake each "
                  f"(follow it with `inferd endpoints history {name}`)", markup=False)


@app.command("history")
def history(name: NameArg, url: UrlOption = "") -> None:
    """Every change, rollout step and decision of an endpoint, oldest first."""
    found = _request("GET", f"{_url(url)}/v2/endpoints/{name}/history").json()["events"]
    table = Table("time (UTC)", "event", "detail")
    for event in found:
        detail = {k: v for k, v in event["detail"].items() if k != "spec"}
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(event["at"])) + f".{int(event['at'] * 1000) % 1000:03d}"
        table.add_row(at, Text(event["kind"]), Text(json.dumps(detail) if detail else ""))
    console.print(table)
