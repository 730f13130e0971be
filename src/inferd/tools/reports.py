"""Reports for people: PNG plots (matplotlib, headless) and one self-contained HTML page.

The HTML page embeds its PNGs as data URIs and its style inline: it loads nothing from anywhere, so it opens
offline, from a CI artifact or an e-mail. Every function here takes plain data (the JSON report's content), so
``inferd bench`` and ``inferd recommend`` can draw their own plots with the same page around them.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

PNG_DPI = 100
STYLE = """body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%;margin:1em 0}
.bad{color:#b00020;font-weight:bold}.good{color:#1b5e20}"""


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display: a file, never a window
    import matplotlib.pyplot as plt

    return plt


def confusion_png(path: Path, classes: Sequence[Any], matrix: Sequence[Sequence[int]], title: str) -> Path:
    """A confusion matrix as a heat map with the count in each cell (rows: true class, columns: predicted)."""
    plt = _pyplot()
    counts = np.asarray(matrix)
    size = max(4.0, 0.5 * len(classes) + 2)
    figure, axes = plt.subplots(figsize=(size, size))
    axes.imshow(counts, cmap="Blues")
    ticks = range(len(classes))
    axes.set_xticks(list(ticks), [str(c) for c in classes], rotation=45)
    axes.set_yticks(list(ticks), [str(c) for c in classes])
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    limit = counts.max() / 2 if counts.size else 0
    for (row, col), value in np.ndenumerate(counts):
        axes.text(col, row, str(value), ha="center", va="center", color="white" if value > limit else "black")
    return _save(figure, path)


def residuals_png(path: Path, truth: np.ndarray, predicted: np.ndarray, title: str) -> Path:
    """Residual (truth - prediction) against prediction, with the zero line."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 4.5))
    axes.scatter(predicted, truth - predicted, s=8, alpha=0.5)
    axes.axhline(0.0, color="black", linewidth=1)
    axes.set_xlabel("prediction")
    axes.set_ylabel("residual (truth - prediction)")
    axes.set_title(title)
    return _save(figure, path)


def bars_png(path: Path, labels: Sequence[str], series: Mapping[str, Sequence[float]], title: str) -> Path:
    """One horizontal bar chart per named series (e.g. latency and throughput of each candidate), side by side."""
    plt = _pyplot()
    figure, axes_list = plt.subplots(1, len(series), figsize=(5 * len(series), 0.5 * len(labels) + 1.8),
                                     squeeze=False)
    for axes, (name, values) in zip(axes_list[0], series.items(), strict=True):
        axes.barh(list(labels), list(values))
        axes.set_title(name)
        axes.invert_yaxis()
    figure.suptitle(title)
    return _save(figure, path)


def _save(figure: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=PNG_DPI, format="png")
    _pyplot().close(figure)
    return path


def table_html(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return html.escape(str(value))


def write_html(path: Path, title: str, sections: Sequence[tuple[str, str]], images: Sequence[Path] = ()) -> Path:
    """A page with a title, ``(heading, html)`` sections and the PNGs embedded: no file or network is loaded."""
    parts = [f"<h1>{html.escape(title)}</h1>"]
    for heading, content in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>{content}")
    for image in images:
        data = base64.b64encode(image.read_bytes()).decode("ascii")
        parts.append(f'<img alt="{html.escape(image.stem)}" src="data:image/png;base64,{data}">')
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
