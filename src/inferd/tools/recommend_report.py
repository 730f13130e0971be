"""Files of an ``inferd recommend`` run: JSON, a bar chart of each configuration's throughput and p99, HTML."""

from __future__ import annotations

import html
import json
from pathlib import Path

from inferd.tools.recommend import Recommendation
from inferd.tools.reports import bars_png, table_html, write_html

HEADER = ("rank", "configuration", "meets p99", "concurrency", "inferences/s", "p50 ms", "p99 ms", "$/1M", "error")


def rows(result: Recommendation) -> list[list[object]]:
    found: list[list[object]] = []
    for rank, trial in enumerate(result.trials, 1):
        best = trial.best
        cost = next(iter(best.cost_per_1m.values()), None) if best else None
        found.append([rank, trial.name, "yes" if trial.meets else "no", f"{best.level:g}" if best else "-",
                      round(best.inferences_per_s, 1) if best else "-", round(best.p50_us / 1e3, 3) if best else "-",
                      round(best.p99_us / 1e3, 3) if best else "-", round(cost, 4) if cost is not None else "-",
                      trial.error or ""])
    return found


def write_report(result: Recommendation, folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = {"json": folder / "recommend.json"}
    written["json"].write_text(json.dumps(result.to_dict(), indent=2), encoding="utf-8")
    measured = [t for t in result.trials if t.best]
    written["png"] = bars_png(folder / "recommend.png", [t.name for t in measured],
                              {"inferences/s (best point)": [t.best.inferences_per_s for t in measured if t.best],
                               "p99 ms": [t.best.p99_us / 1e3 for t in measured if t.best]},
                              f"{result.model}: p99 <= {result.p99_us / 1e3:g} ms")
    sections = [("Ranking", table_html(HEADER, rows(result)))]
    if result.notes:
        sections.append(("Notes", "".join(f"<p>{html.escape(n)}</p>" for n in result.notes)))
    written["html"] = write_html(folder / "recommend.html", f"inferd recommend: {result.model}", sections,
                                 [written["png"]])
    return written
