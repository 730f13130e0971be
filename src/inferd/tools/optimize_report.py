"""The files of an optimize run: ``optimize.json``, ``optimize.png`` (latency and throughput per candidate) and
``optimize.html``."""

from __future__ import annotations

import html
from pathlib import Path

import orjson

from inferd.tools import reports
from inferd.tools.optimize import OptimizeReport


def write_report(report: OptimizeReport, folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = {"json": folder / "optimize.json"}
    written["json"].write_bytes(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2))
    timed = [c for c in report.candidates if c.speed is not None]
    images = []
    if timed:
        images.append(reports.bars_png(folder / "optimize.png", [c.name for c in timed], {
            "p50 latency at batch 1 (us)": [c.speed.latency_p50_us for c in timed if c.speed],
            "throughput at batch 64 (rows/s)": [c.speed.throughput_rows_s for c in timed if c.speed],
        }, f"{report.model} v{report.version}"))
        written["png"] = images[0]
    header = ["candidate", report.metric, "drop", "gate", "max |diff|", "argmax agreement", "p50 us", "p99 us",
              "rows/s", "bytes", "error"]
    rows = []
    for c in report.candidates:
        s = c.speed
        rows.append([c.name, c.metric if c.metric is not None else "", c.drop if c.drop is not None else "",
                     "" if c.passed is None else ("pass" if c.passed else "FAIL"),
                     c.agreement.get("max_abs_diff", ""), c.agreement.get("argmax_agreement", ""),
                     s.latency_p50_us if s else "", s.latency_p99_us if s else "", s.throughput_rows_s if s else "",
                     c.size_bytes, c.error or ""])
    notes = "".join(f"<p>{html.escape(n)}</p>" for n in report.notes)
    verdict = f"written: {report.written}" if report.written else "written: nothing"
    sections = [("Candidates", reports.table_html(header, rows)), ("Outcome", f"<p>{verdict}</p>{notes}")]
    written["html"] = reports.write_html(folder / "optimize.html", f"inferd optimize: {report.model}", sections,
                                         images)
    return written
