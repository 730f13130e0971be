"""``inferd bench`` against real servers: a repository it serves itself (files: CSV with perf_analyzer's columns,
PNG, HTML rendered in headless Chromium), a running server over every route (BYTES inputs generated from the
metadata, rows from a data file, the generate and OpenAI routes of the echo model), and bad input."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import matplotlib.image
import pytest

from cli_runner import inferd
from generative_models import write_echo_llm
from inferd.examples import digits, held_out, spam
from inferd.tools.bench_report import PERF_ANALYZER_COLUMNS
from server_process import ServerProcess

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bench") / "repo"
    for example, name in ((digits, "digits"), (spam, "spam")):
        (root / name / "1").mkdir(parents=True)
        example.build(root / name)
    write_echo_llm(root, "echo")
    return root


@pytest.fixture(scope="module")
def server(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from ServerProcess(repo, tmp_path_factory.mktemp("bench-server") / "server.log").serving()


def test_bench_on_a_repository_writes_csv_png_and_html(repo, tmp_path):
    report = tmp_path / "report"
    ran = inferd("bench", str(repo), "digits", "--concurrency", "1,4", "--rates", "50", "--seconds", "0.5",
                 "--warmup", "0.2", "--price-per-hour", "0.5", "--report", str(report), "--json", timeout=180)
    assert ran.returncode == 0, ran.stderr
    found = json.loads(ran.stdout)
    assert [(p["mode"], p["level"]) for p in found["points"]] == [("concurrency", 1), ("concurrency", 4),
                                                                   ("rate", 50)]
    for point in found["points"]:
        assert point["errors"] == 0
        assert point["requests"] > 0
        assert 0 < point["p50_us"] <= point["p90_us"] <= point["p99_us"] <= point["max_us"]
        assert point["server_us"]["compute_infer"] > 0
        assert point["cost_per_1m"]["price_per_hour"] == pytest.approx(
            0.5 / (point["inferences_per_s"] * 3600) * 1e6)
        assert 0 < point["client_cpu_cores"] < 2
    rate = found["points"][2]
    assert rate["throughput_rps"] == pytest.approx(50, rel=0.3)
    with (report / "bench.csv").open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["Concurrency", *PERF_ANALYZER_COLUMNS]
    assert [r[0] for r in rows[1:]] == ["1", "4"]
    assert float(rows[1][1]) > 0
    with (report / "bench_rate.csv").open() as handle:
        assert next(csv.reader(handle))[0] == "Request Rate"
    image = matplotlib.image.imread(report / "bench.png")
    assert image.shape[0] >= 400
    assert image.shape[1] >= 600
    assert (report / "bench.png").stat().st_size > 10_000
    page = (report / "bench.html").read_text()
    assert "data:image/png;base64," in page
    assert "http://" not in page.replace(found["url"], "")  # nothing loaded from anywhere
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("chromium is missing under CI: install the chromium Debian package")
        pytest.skip("/usr/bin/chromium is not installed (apt-get install chromium)")
    shot = tmp_path / "shot.png"
    subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
                    "--window-size=1000,1200", (report / "bench.html").as_uri()],
                   capture_output=True, timeout=120, check=False)
    assert shot.exists()
    assert shot.stat().st_size > 10_000
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)


@pytest.mark.parametrize(("model", "route"), [("spam", "json"), ("spam", "binary"), ("spam", "grpc"),
                                              ("digits", "binary"), ("digits", "grpc"), ("echo", "generate"),
                                              ("echo", "openai")])
def test_every_route_of_a_running_server(server, model, route):
    ran = inferd("bench", server.url, model, "--route", route, "--grpc-port", str(server.grpc_port),
                 "--concurrency", "2", "--seconds", "0.3", "--warmup", "0", "--batch", "1" if model == "echo" else "3",
                 "--json")
    assert ran.returncode == 0, ran.stderr
    (point,) = json.loads(ran.stdout)["points"]
    assert point["errors"] == 0, point["first_error"]
    assert point["requests"] > 0
    assert point["inferences_per_s"] == pytest.approx(point["throughput_rps"] * (1 if model == "echo" else 3))


def test_inputs_from_a_data_file_with_a_price_table(server, tmp_path):
    data = held_out.write(tmp_path / "data")
    prices = tmp_path / "prices.toml"
    prices.write_text('"c7g.large" = 0.0725\n"m7i.xlarge" = 0.2016\n')
    for model, ignore in (("spam", "id,label"), ("digits", "id,digit")):
        ran = inferd("bench", server.url, model, "--data", str(tmp_path / "data" / f"{model}.csv"), "--ignore",
                     ignore, "--batch", "8", "--concurrency", "1", "--rates", "40", "--seconds", "0.3", "--prices",
                     str(prices))
        assert ran.returncode == 0, ran.stderr
        assert "$/1M c7g.large" in ran.stdout
        assert "$/1M m7i.xlarge" in ran.stdout
    assert data


def test_bad_input(server, tmp_path):
    ran = inferd("bench", "http://127.0.0.1:9", "digits")
    assert ran.returncode == 2
    assert "does not answer" in ran.stderr
    ran = inferd("bench", server.url, "digits", "--price-per-hour", "cheap")
    assert ran.returncode == 2
    assert "'cheap' is not a number" in ran.stderr
    prices = tmp_path / "prices.json"
    prices.write_text('{"big": "lots"}')
    ran = inferd("bench", server.url, "digits", "--prices", str(prices))
    assert ran.returncode == 2
    assert "'big'" in ran.stderr
    ran = inferd("bench", server.url, "digits", "--data", str(tmp_path / "data.csv"))
    assert ran.returncode == 2
    assert "no such file" in ran.stderr
    ran = inferd("bench", server.url, "nosuch")
    assert ran.returncode == 2
    assert "HTTP 404" in ran.stderr
    ran = inferd("bench", server.url, "digits", "--route", "generate")
    assert ran.returncode == 2
    assert "not a generative model" in ran.stderr
    ran = inferd("bench", server.url, "digits", "--concurrency", "1,x")
    assert ran.returncode == 2
