"""docs/platforms.md runs as written: each platform's ``inferd serve`` line starts a real server (its port and
routes given through the platform's own variables), and each ``curl`` gets the answer the page shows."""

from __future__ import annotations

import math
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cli_runner import BIN, ROOT, cli_env
from server_process import free_port

DOC = ROOT / "docs" / "platforms.md"
FENCE = re.compile(r"^```console (\S+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")


def blocks() -> dict[str, str]:
    return dict(FENCE.findall(DOC.read_text(encoding="utf-8")))


def sessions(block: str) -> list[tuple[str, str]]:
    """Each ``$ command`` with the output lines shown under it."""
    found: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            found.append((line[2:], []))
        else:
            found[-1][1].append(line)
    return [(command, "\n".join(shown)) for command, shown in found]


def same_answer(got: str, shown: str) -> bool:
    """Equal text, numbers equal to 5 significant digits: a float printed in full or as its float32's shortest
    form is the same answer."""
    if NUMBER.sub("#", got.strip()) != NUMBER.sub("#", shown.strip()):
        return False
    pairs = zip(NUMBER.findall(got), NUMBER.findall(shown), strict=True)
    return all(math.isclose(float(a), float(b), rel_tol=1e-5, abs_tol=1e-9) for a, b in pairs)


@pytest.fixture(scope="module")
def demo_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from inferd.examples.build import build_demo_repository

    root = tmp_path_factory.mktemp("platforms") / "demo-models"
    build_demo_repository(root)
    return root


def serving(line: str, repo: Path, port: int, state: Path) -> subprocess.Popen[bytes]:
    """Start the page's ``VAR=... inferd serve demo-models ...`` line: the demo repository built here, the
    page's port 8080 replaced by a free one (wherever the page sets it), loopback for 0.0.0.0, no gRPC."""
    words = shlex.split(line.replace("8080", str(port)))
    env = {**cli_env(), "INFERD_GRPC_PORT": "0", "INFERD_STATE_DIR": str(state)}
    while ASSIGNMENT.match(words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    assert words[:3] == ["inferd", "serve", "demo-models"], line
    args = [str(repo) if w == "demo-models" else "127.0.0.1" if w == "0.0.0.0" else w for w in words[2:]]
    if not any(name in env for name in ("AIP_HTTP_PORT", "SAGEMAKER_BIND_TO_PORT")):
        env["INFERD_HTTP_PORT"] = str(port)
    return subprocess.Popen([str(BIN / "inferd"), "serve", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture(params=["sagemaker", "vertex", "kserve"])
def platform(request: pytest.FixtureRequest, demo_models: Path, tmp_path: Path) -> Iterator[tuple[str, int]]:
    (line,) = [command for command, _ in sessions(blocks()[f"{request.param}-serve"])]
    port = free_port()
    process = serving(line, demo_models, port, tmp_path / "state")
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.communicate()[0].decode(errors="replace")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "not ready"
            time.sleep(0.1)
        yield request.param, port
    finally:
        os.kill(process.pid, signal.SIGTERM)
        process.communicate(timeout=30)


def test_every_curl_on_the_page_answers_as_shown(platform):
    name, port = platform
    calls = sessions(blocks()[name])
    assert len(calls) >= 2
    for command, shown in calls:
        run = subprocess.run(["bash", "-c", command.replace("localhost:8080", f"127.0.0.1:{port}")],
                             capture_output=True, text=True, timeout=60, check=False)
        assert run.returncode == 0, f"{command}\n{run.stderr}"
        assert same_answer(run.stdout, shown), f"{command}\nanswered: {run.stdout}\nthe page shows: {shown}"


def test_the_page_covers_each_contract():
    page = DOC.read_text(encoding="utf-8")
    for name in ("sagemaker", "vertex", "kserve"):
        assert f"{name}-serve" in blocks()
    for needed in ("/ping", "/invocations", "X-Amzn-SageMaker-Target-Model", "text/csv", "application/jsonlines",
                   "SAGEMAKER_BIND_TO_PORT", "AIP_HTTP_PORT", "AIP_PREDICT_ROUTE", "AIP_HEALTH_ROUTE",
                   "/v1/models/{m}:predict", "variant"):
        assert needed in page, needed


def test_answers_are_compared_number_by_number():
    assert same_answer('{"p":[60.2318229675293]}', '{"p":[60.231823]}')
    assert not same_answer('{"p":[60.2]}', '{"p":[61.2]}')
    assert not same_answer('{"q":[60.2]}', '{"p":[60.2]}')
