"""``inferd recommend``: search serving configurations of one model by running real servers with ``bench``.

Each candidate is a set of ``model.toml`` tables (``[batching]``, ``[instances]``, ``[options]`` intra-op
threads) written into a copy of the model folder, served alone on free loopback ports and benched with a
closed-loop concurrency sweep. A candidate's figure is its best point meeting the p99 constraint (most
inferences/s, so the least cost per inference at one hourly price); the ranking lists those that meet it first.
The search stops when the time budget would be exceeded: candidates are tried in order, the most telling first.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from inferd.tools.bench import BenchOptions, Point, bench
from inferd.tools.bench_payload import BenchError

Settings = dict[str, dict[str, Any]]
SERVER_START_S = 6.0
"""A rough cost of starting and stopping one server, for the budget."""


@dataclass
class RecommendOptions:
    p99_us: float
    budget_s: float = 600.0
    concurrency: Sequence[int] = (1, 4, 16)
    seconds: float = 1.0
    data: Path | None = None
    ignore: Sequence[str] = ()
    batch: int = 1
    route: str = "json"
    prices: Mapping[str, float] = field(default_factory=dict)


@dataclass
class Trial:
    name: str
    settings: Settings
    meets: bool
    best: Point | None
    points: list[Point]
    error: str | None = None


@dataclass
class Recommendation:
    model: str
    p99_us: float
    trials: list[Trial]
    chosen: Trial | None
    notes: list[str]
    written: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_duration_us(text: str) -> float:
    """``20ms``, ``500us``, ``1.5s``, ``10m`` or a bare number of milliseconds, in microseconds."""
    units = {"us": 1.0, "µs": 1.0, "ms": 1e3, "m": 60e6, "s": 1e6}
    raw = text.strip().lower()
    for unit in units:
        if raw.endswith(unit):
            number, scale = raw[: -len(unit)], units[unit]
            break
    else:
        number, scale = raw, 1e3
    try:
        value = float(number) * scale
    except ValueError:
        raise BenchError(f"{text!r} is not a duration (e.g. 20ms, 500us, 2s, 10m)") from None
    if value <= 0:
        raise BenchError(f"{text!r}: a duration must be > 0")
    return value


def candidates(cores: int = 2) -> list[tuple[str, Settings]]:
    """The search space, most telling first: batching off/on, queue delays, preferred sizes, instances, threads."""
    found: list[tuple[str, Settings]] = [
        ("batching off", {"batching": {"enabled": False}}),
        ("batching on, delay 0", {"batching": {"enabled": True, "max_queue_delay_us": 0}}),
        ("batching on, delay 500us", {"batching": {"enabled": True, "max_queue_delay_us": 500}}),
        ("batching off, 2 instances", {"batching": {"enabled": False}, "instances": {"count": 2}}),
        ("batching on, delay 2ms, preferred 8,16", {"batching": {"enabled": True, "max_queue_delay_us": 2000,
                                                                 "preferred_batch_sizes": [8, 16]}}),
        ("batching off, 2 intra-op threads", {"batching": {"enabled": False}, "options": {"intra_op_threads": 2}}),
        ("batching on, delay 0, 2 instances", {"batching": {"enabled": True, "max_queue_delay_us": 0},
                                                "instances": {"count": 2}}),
        ("batching off, 2 process instances", {"batching": {"enabled": False},
                                               "instances": {"count": 2, "kind": "process"}}),
    ]
    return [(n, s) for n, s in found if s.get("instances", {}).get("count", 1) <= max(2, cores)]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def merge_model_toml(text: str, settings: Settings) -> str:
    """``text`` (a model.toml) with each table of ``settings`` merged in: keys set, the table's others kept."""
    current = tomllib.loads(text) if text.strip() else {}
    lines, skip = [], False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            skip = stripped.strip("[] ").split("#")[0].strip() in settings and not stripped.startswith("[[")
        if not skip:
            lines.append(line)
    for table, values in settings.items():
        merged = {**current.get(table, {}), **values}
        lines += ["", f"[{table}]", *(f"{k} = {_toml_value(v)}" for k, v in merged.items())]
    result = "\n".join(lines).strip() + "\n"
    tomllib.loads(result)
    return result


def _applies(settings: Settings, runtime_options: bool) -> bool:
    return runtime_options or "options" not in settings


def recommend(repo: Path, model: str, options: RecommendOptions) -> Recommendation:
    """Try :func:`candidates` on ``model`` within the budget and rank them (see the module's docstring)."""
    import os

    folder = repo / model
    if not folder.is_dir():
        raise BenchError(f"{repo}: no model folder {model!r}")
    toml_path = folder / "model.toml"
    original = toml_path.read_text(encoding="utf-8") if toml_path.exists() else ""
    onnx = any(folder.rglob("*.onnx"))
    per_trial = SERVER_START_S + len(options.concurrency) * (options.seconds + 0.3)
    began, trials, notes = time.monotonic(), list[Trial](), list[str]()
    for name, settings in candidates(os.cpu_count() or 1):
        if not _applies(settings, onnx):
            continue
        if trials and time.monotonic() - began + per_trial > options.budget_s:
            notes.append(f"the budget ({options.budget_s:g} s) ended the search after {len(trials)} configurations")
            break
        trials.append(_trial(folder, model, original, name, settings, options))
    ranked = sorted(trials, key=lambda t: (not t.meets, -(t.best.inferences_per_s if t.meets and t.best else 0),
                                           t.best.p99_us if t.best else float("inf")))
    chosen = ranked[0] if ranked and ranked[0].meets else None
    if chosen is None and ranked:
        closest = ranked[0]
        best = f"p99 {closest.best.p99_us / 1e3:.2f} ms" if closest.best else "no answer"
        notes.append(f"no configuration meets p99 <= {options.p99_us / 1e3:g} ms; the closest is "
                     f"{closest.name!r} ({best})")
    return Recommendation(model, options.p99_us, ranked, chosen, notes)


def _trial(folder: Path, model: str, original: str, name: str, settings: Settings,
           options: RecommendOptions) -> Trial:
    with tempfile.TemporaryDirectory(prefix="inferd-recommend-") as root:
        copy = Path(root) / model
        shutil.copytree(folder, copy)
        (copy / "model.toml").write_text(merge_model_toml(original, settings), encoding="utf-8")
        bench_options = BenchOptions(options.route, options.concurrency, (), options.seconds, 0.3, options.batch,
                                     options.data, 1, options.prices, ignore=options.ignore)
        try:
            report = bench(root, model, bench_options)
        except BenchError as exc:
            return Trial(name, settings, False, None, [], str(exc).splitlines()[0])
    good = [p for p in report.points if p.errors == 0 and p.p99_us <= options.p99_us]
    if good:
        return Trial(name, settings, True, max(good, key=lambda p: p.inferences_per_s), report.points)
    return Trial(name, settings, False, min(report.points, key=lambda p: p.p99_us), report.points)


def write_choice(repo: Path, model: str, chosen: Trial) -> Path:
    """Merge the chosen settings into the model's model.toml (created if absent)."""
    path = repo / model / "model.toml"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    path.write_text(merge_model_toml(text, chosen.settings), encoding="utf-8")
    return path
