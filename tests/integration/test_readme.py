"""Every README code block that is meant to run, runs: the two commands, the usage session and the
Python model example."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import httpx
import pytest

from cli_runner import ROOT, cli_env, inferd
from server_process import free_port

FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks(kind: str, label: str = "") -> list[str]:
    text = (ROOT / "README.md").read_text()
    return [body for lang, info, body in FENCE.findall(text) if lang == kind and info.strip() == label]


def commands(block: str) -> list[str]:
    return [line[2:] for line in block.splitlines() if line.startswith("$ ")]


def console_blocks() -> list[list[str]]:
    return [commands(b) for b in blocks("console")]


def test_readme_opens_with_the_two_commands():
    first, second = console_blocks()[:2]
    assert first == ["make demo"]
    assert second == ["make test"]


def test_ci_runs_exactly_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    steps = [line.strip() for line in ci if line.strip() and not line.lstrip().startswith("#")]
    assert steps[-1] == console_blocks()[1][0]


@pytest.mark.slow
def test_make_demo_serves_until_ctrl_c_and_the_usage_session_works(tmp_path):
    """``make demo`` for real (with this test run's environment as its venv): it trains, serves, predicts
    over HTTP and keeps serving; the usage block runs meanwhile; Ctrl-C stops it cleanly."""
    env = cli_env()
    env.update(VENV=sys.prefix, INFERD_HTTP_PORT=str(free_port()), INFERD_GRPC_PORT=str(free_port()),
               INFERD_STATE_DIR=str(tmp_path / "state"))  # not the checkout's .inferd/: each run starts empty
    checkout_before = set(os.listdir(ROOT))
    demo = subprocess.Popen(["bash", "-c", console_blocks()[0][0]], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        seen = read_until(demo, "Ctrl-C to stop", timeout=600)
        for expected in ("spam (p=", "ETA ", "ranking: item", "digit "):
            assert expected in seen
        assert "over HTTP" in seen
        assert httpx.get(f"http://127.0.0.1:{env['INFERD_HTTP_PORT']}/v2/health/ready").status_code == 200
        port = env["INFERD_HTTP_PORT"]
        for command in console_blocks()[2]:
            call = subprocess.run(["bash", "-c", command.replace("localhost:8080", f"127.0.0.1:{port}")],
                                  capture_output=True, text=True, timeout=60, check=False)
            assert call.returncode == 0, call.stderr
            assert '"error"' not in call.stdout, call.stdout
            assert call.stdout.startswith("{"), call.stdout
        usage = console_blocks()[3]
        assert usage[0] == "source .venv/bin/activate"
        script = "set -euo pipefail\n" + "\n".join(usage[1:])  # the venv's bin is already first on PATH
        session = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                                 timeout=300, check=False)
        assert session.returncode == 0, session.stdout + session.stderr
        assert session.stdout.count("READY") >= 4
        assert '"spam"' in session.stdout
        assert '"model_name":"eta"' in session.stdout.replace(" ", "")
        run_async_block(console_blocks()[4], port, env)
        run_batch_block(console_blocks()[5], env)
        run_production_block(console_blocks()[6], port, env)
        # what the commands wrote is in scratch/ (and the demo's own folders), none of it elsewhere in the checkout
        assert set(os.listdir(ROOT)) - checkout_before <= {"scratch", "demo-models", ".inferd", ".venv"}
    finally:
        shutil.rmtree(ROOT / "scratch", ignore_errors=True)
        os.killpg(demo.pid, signal.SIGINT)  # what Ctrl-C in the terminal does: the whole foreground group
        rest, _ = demo.communicate(timeout=60)
    assert "Stopped." in rest


def run_async_block(block: list[str], port: str, env: dict[str, str]) -> None:
    """Submit, status, result (polled until the job has run: the README shows it right after), list."""
    submit, status, result, listing = (c.replace("localhost:8080", f"127.0.0.1:{port}") for c in block)

    def run(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=60,
                              check=False)

    accepted = run(submit)
    assert '"status_url"' in accepted.stdout, accepted.stdout
    deadline = time.monotonic() + 30
    while True:
        state = run(status)
        if '"succeeded"' in state.stdout or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert '"succeeded"' in state.stdout, state.stdout
    answer = run(result)
    assert '"model_name":"eta"' in answer.stdout, answer.stdout
    jobs = run(listing)
    assert jobs.returncode == 0, jobs.stderr
    assert "trip-42" in jobs.stdout


def run_batch_block(block: list[str], env: dict[str, str]) -> None:
    script = "set -euo pipefail\n" + "\n".join(block)
    session = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=300, check=False)
    assert session.returncode == 0, session.stdout + session.stderr
    lines = session.stdout.strip().splitlines()[-3:]
    assert lines[0] == '"trip","prediction"', session.stdout
    assert [line.split(",")[0] for line in lines[1:]] == ["1", "2"]


def run_production_block(block: list[str], port: str, env: dict[str, str]) -> None:
    metrics, *keys = (c.replace("localhost:8080", f"127.0.0.1:{port}") for c in block)
    scraped = subprocess.run(["bash", "-c", metrics], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert 'inferd_request_success_total{model="eta"' in scraped.stdout, scraped.stdout
    made = subprocess.run(["bash", "-c", "set -euo pipefail\n" + "\n".join(keys)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert made.returncode == 0, made.stderr
    assert "[[keys]]" in (ROOT / "scratch" / "keys.toml").read_text()


def read_until(process: subprocess.Popen[str], marker: str, timeout: float) -> str:
    """Everything the process printed up to the line holding ``marker``."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            raise AssertionError(f"exited with {process.returncode} before {marker!r}:\n{''.join(seen)}")
        seen.append(line)
        if marker in line:
            return "".join(seen)
    raise AssertionError(f"no {marker!r} after {timeout} s:\n{''.join(seen)}")


WRITES = re.compile(r"(?:>|--output|--file|-o)\s+(\S+)")


def test_readme_commands_write_only_into_scratch():
    """Every file a README command writes (``> FILE``, ``--output``, ``--file``) is under the git-ignored
    ``scratch/``, so that following the README leaves the checkout as it was."""
    written = [target for block in console_blocks() for command in block for target in WRITES.findall(command)]
    assert len(written) >= 4
    assert [t for t in written if not t.startswith("scratch/")] == []
    for path in ("scratch/msg.json", "keys.toml", "somewhere/keys.toml"):
        ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT, check=False)
        assert ignored.returncode == 0, f"git does not ignore {path}"


def test_python_model_example(tmp_path):
    (python_source,) = blocks("python", "model.py")
    (toml_source,) = blocks("toml", "model.toml")
    folder = tmp_path / "models" / "mine"
    (folder / "1").mkdir(parents=True)
    (folder / "1" / "model.py").write_text(python_source)
    (folder / "model.toml").write_text(toml_source)
    result = inferd("predict", str(tmp_path / "models"), "mine", "--input", "-", stdin='{"x": [[1, 2], [3, 4]]}')
    assert result.returncode == 0, result.stderr
    assert '"data":[2.0,4.0,6.0,8.0]' in result.stdout.replace(" ", "").replace("\n", "")
    assert os.path.exists(folder / "model.toml")


def test_every_model_toml_example_is_valid():
    import tomllib

    from inferd.config import ModelConfig

    examples = blocks("toml") + blocks("toml", "model.toml")
    assert len(examples) >= 2
    for text in examples:
        ModelConfig.model_validate(tomllib.loads(text))
