"""``inferd models list --url``: a running server's models, loaded or not (models on demand, docs/models.md)."""

from __future__ import annotations

import time
from typing import Any

from rich.table import Table
from rich.text import Text

from inferd.cli.common import console
from inferd.cli.jobs import _request, _url


def list_served(given_url: str) -> None:
    """One row per model version the server knows: state, memory held, load time, last used, reason."""
    base = _url(given_url)
    index: list[dict[str, Any]] = _request("POST", f"{base}/v2/repository/index", json={}).json()
    stats = {(s["name"], s["version"]): s for s in _request("GET", f"{base}/v2/models/stats").json()["model_stats"]}
    if not index:
        console.print(f"The server at {base} has no models.", markup=False)
        return
    table = Table("model", "version", "state", "memory", "load time", "last used", "reason")
    now_ms = time.time_ns() // 1_000_000
    for row in index:
        found = stats.get((row["name"], row.get("version", "")), {})
        table.add_row(Text(row["name"]), Text(row.get("version") or "-"), _state(row["state"]),
                      _memory(found), _load_time(found), _last_used(found, now_ms), Text(row.get("reason", "")))
    console.print(table)


def _state(state: str) -> Text:
    return Text(state, style={"READY": "green", "UNAVAILABLE": "red"}.get(state, "yellow"))


def _memory(stats: dict[str, Any]) -> Text:
    from pydantic import ByteSize

    held = sum(int(m.get("byte_size", 0)) for m in stats.get("memory_usage", []))
    return Text(ByteSize(held).human_readable() if held else "-")


def _load_time(stats: dict[str, Any]) -> Text:
    load_ns = int(stats.get("load_ns", 0))
    return Text(f"{load_ns / 1e9:.2f} s" if load_ns else "-")


def _last_used(stats: dict[str, Any], now_ms: int) -> Text:
    last = int(stats.get("last_inference", 0))
    return Text(f"{(now_ms - last) / 1000:.0f} s ago" if last else "never" if stats else "-")
