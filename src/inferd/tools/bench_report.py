"""Files of an ``inferd bench`` run: JSON, perf_analyzer-style CSV (one per sweep), a throughput-vs-latency PNG
and a self-contained HTML page (the shared helpers of :mod:`inferd.tools.reports`)."""

from __future__ import annotations

import csv
import html
import json
from pathlib import Path

from inferd.tools.bench import BenchReport, Point
from inferd.tools.reports import _pyplot, _save, table_html, write_html

PERF_ANALYZER_COLUMNS = ("Inferences/Second", "Client Send", "Network+Server Send/Recv", "Server Queue",
                         "Server Compute Input", "Server Compute Infer", "Server Compute Output", "Client Recv",
                         "p50 latency", "p90 latency", "p95 latency", "p99 latency", "Avg latency",
                         "request/response", "response wait")
"""The columns ``perf_analyzer -f FILE`` writes after its first (``Concurrency`` or ``Request Rate``); times in
microseconds. Client send/receive are not split out here (0); network+server is the average latency less the
server's queue and compute time."""
TABLE_HEADER = ("mode", "level", "req/s", "inferences/s", "p50 us", "p90 us", "p99 us", "max us", "errors",
                "server queue us", "server compute us", "client cores")


def perf_analyzer_rows(points: list[Point]) -> list[list[float | int]]:
    rows = []
    for p in points:
        server = p.server_us
        queue, c_in, c_infer, c_out = (server.get(k, 0.0) for k in ("queue", "compute_input", "compute_infer",
                                                                    "compute_output"))
        network = max(0.0, p.avg_us - queue - c_in - c_infer - c_out) if server else p.avg_us
        rows.append([p.level if p.mode == "rate" else int(p.level), round(p.inferences_per_s, 2), 0,
                     round(network), round(queue), round(c_in), round(c_infer), round(c_out), 0, round(p.p50_us),
                     round(p.p90_us), round(p.p95_us), round(p.p99_us), round(p.avg_us), 0, 0])
    return rows


def write_csv(path: Path, points: list[Point], first: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([first, *PERF_ANALYZER_COLUMNS])
        writer.writerows(perf_analyzer_rows(points))
    return path


def latency_png(path: Path, report: BenchReport) -> Path:
    """Throughput against p50 and p99 latency, one line per sweep, each point labelled with its level."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(8, 5))
    for mode, marker in (("concurrency", "o"), ("rate", "s")):
        points = [p for p in report.points if p.mode == mode]
        if not points:
            continue
        for stat, style in (("p50_us", "-"), ("p99_us", "--")):
            axes.plot([p.inferences_per_s for p in points], [getattr(p, stat) / 1e3 for p in points],
                      marker=marker, linestyle=style, label=f"{mode} {stat[:3]}")
        for p in points:
            axes.annotate(f"{p.level:g}", (p.inferences_per_s, p.p99_us / 1e3), textcoords="offset points",
                          xytext=(4, 4), fontsize=8)
    axes.set_xlabel("throughput (inferences/s)")
    axes.set_ylabel("latency (ms)")
    axes.set_title(f"{report.model} over {report.route}, batch {report.batch}")
    axes.grid(alpha=0.3)
    axes.legend()
    return _save(figure, path)


def table_rows(report: BenchReport) -> list[list[object]]:
    return [[p.mode, f"{p.level:g}", round(p.throughput_rps, 1), round(p.inferences_per_s, 1), round(p.p50_us),
             round(p.p90_us), round(p.p99_us), round(p.max_us), p.errors,
             round(p.server_us["queue"]) if p.server_us else "-",
             round(sum(v for k, v in p.server_us.items() if k != "queue")) if p.server_us else "-",
             round(p.client_cpu_cores, 2)] for p in report.points]


def write_report(report: BenchReport, folder: Path) -> dict[str, Path]:
    """bench.json, bench.csv (concurrency sweep), bench_rate.csv (rate sweep), bench.png and bench.html."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {"json": folder / "bench.json"}
    written["json"].write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")
    for mode, name, first in (("concurrency", "csv", "Concurrency"), ("rate", "rate_csv", "Request Rate")):
        points = [p for p in report.points if p.mode == mode]
        if points:
            written[name] = write_csv(folder / f"bench{'_rate' if mode == 'rate' else ''}.csv", points, first)
    written["png"] = latency_png(folder / "bench.png", report)
    sections = [("Points", table_html(TABLE_HEADER, table_rows(report)))]
    prices = sorted({name for p in report.points for name in p.cost_per_1m})
    if prices:
        sections.append(("Cost per 1M inferences", table_html(
            ["mode", "level", *prices],
            [[p.mode, f"{p.level:g}", *(round(p.cost_per_1m[n], 4) for n in prices)] for p in report.points])))
    if report.notes:
        sections.append(("Notes", "".join(f"<p>{html.escape(n)}</p>" for n in report.notes)))
    written["html"] = write_html(folder / "bench.html", f"inferd bench: {report.model} at {report.url}", sections,
                                 [written["png"]])
    return written
