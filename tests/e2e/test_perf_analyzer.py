"""Triton's own load generator, perf_analyzer, drives every demo model of a real ``inferd serve`` over HTTP and
gRPC, one row per request and a batch per request: it reads the model metadata and configuration, builds its
requests from them (a one-value-per-row input as [batch, 1]), and every request it sends must succeed.

The binary is the one in tritonclient 2.41.0's wheel (the dev extra pins that release); it links libcudart.so.12
(PyPI's nvidia-cuda-runtime-cu12, in the dev extra; no GPU is used) and libb64.so.0d (Debian's libb64-0d, which
``make test`` installs where it may). Without them the test skips and says what is missing; under CI it fails.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cli_runner import BIN, cli_env
from server_process import ServerProcess

MODELS = ("spam", "eta", "ranker", "digits")
"""Every model ``inferd demo`` builds (inferd.examples.build.EXAMPLES), checked below."""
SETUP = ("it comes with `make test`: the binary in tritonclient 2.41.0's wheel, libcudart from "
         "nvidia-cuda-runtime-cu12, libb64 from Debian's libb64-0d")


def perf_analyzer_env() -> dict[str, str]:
    env = cli_env()
    found = importlib.util.find_spec("nvidia.cuda_runtime")
    if found is not None and found.submodule_search_locations:
        lib = Path(next(iter(found.submodule_search_locations))) / "lib"
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(lib), env.get("LD_LIBRARY_PATH")) if p)
    return env


@pytest.fixture(scope="module")
def perf_analyzer() -> tuple[Path, dict[str, str]]:
    """The binary and the environment it runs in; a skip saying what is missing when it cannot run."""
    binary = BIN / "perf_analyzer"
    env = perf_analyzer_env()
    problem = None
    if not binary.is_file():
        problem = f"no {binary}"
    else:
        probe = subprocess.run([str(binary), "--version"], capture_output=True, text=True, env=env, timeout=60,
                               check=False)
        if probe.returncode != 0:
            problem = f"{binary} does not start: {(probe.stderr or probe.stdout).strip()}"
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{problem}; {SETUP}")
        pytest.skip(f"{problem}; {SETUP}")
    return binary, env


@pytest.fixture(scope="module")
def demo_server(e2e_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The demo repository alone (copied from the e2e repository, which has it and more), served."""
    from inferd.examples.build import EXAMPLES

    assert tuple(m.NAME for m in EXAMPLES) == MODELS, "a new demo model: add it to MODELS"
    root = tmp_path_factory.mktemp("perf-analyzer") / "models"
    for name in MODELS:
        shutil.copytree(e2e_repo / name, root / name)
    yield from ServerProcess(root, root.parent / "serve.log").serving(timeout=120)


def served(server: ServerProcess, model: str) -> tuple[int, int, int]:
    """The model's successful requests, failed requests and rows inferred, from the server's statistics."""
    (stats,) = httpx.get(f"{server.url}/v2/models/{model}/stats", timeout=10).json()["model_stats"]
    inference = stats["inference_stats"]
    return inference["success"]["count"], inference["fail"]["count"], stats["inference_count"]


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("model", MODELS)
def test_perf_analyzer_drives_every_demo_model(perf_analyzer, demo_server, model, protocol, batch):
    binary, env = perf_analyzer
    url = demo_server.url.removeprefix("http://") if protocol == "http" else demo_server.grpc_url
    before = served(demo_server, model)
    # three measurement windows of 200 ms at two requests in flight: a few hundred requests; stability is
    # not what is tested here, so any spread between windows passes
    command = [str(binary), "-m", model, "-u", url, "-i", protocol, "-b", str(batch),
               "--concurrency-range", "2", "-p", "200", "-s", "1000"]
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=180, check=False)
    report = run.stdout + run.stderr
    assert run.returncode == 0, report
    assert "error" not in report.lower(), report
    measured = int(re.search(r"Client: \s*Request count: (\d+)", report).group(1))  # type: ignore[union-attr]
    assert measured >= 100, report
    success, failed, rows = (after - was for after, was in zip(served(demo_server, model), before, strict=True))
    assert failed == 0, report
    assert success >= measured, report
    assert rows == success * batch, f"{rows} rows for {success} requests of {batch}"
