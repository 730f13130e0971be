"""Endpoints in front of generative and embeddings models on a real ``inferd serve``: the OpenAI routes (stock
``openai`` client) and Triton's generate and generate_stream resolve an endpoint name, honour a forced variant
and a route key, answer with ``x-inferd-variant``, and count each request in its variant's statistics."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from embedding_models import fake_vector, write_fake_embedder
from generative_models import write_echo_llm
from server_process import ServerProcess

ENDPOINTS = """
[talk]
variants = [{name = "a", model = "echo-a", weight = 1}, {name = "b", model = "echo-b", weight = 1}]

[embed]
variants = [{name = "small", model = "emb-a", weight = 1}, {name = "large", model = "emb-b", weight = 1}]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("gen") / "models"
    write_echo_llm(root, "echo-a", slots=2, delay_ms=1)
    write_echo_llm(root, "echo-b", slots=2, delay_ms=1)
    write_fake_embedder(root, "emb-a")
    write_fake_embedder(root, "emb-b")
    (root / "endpoints.toml").write_text(ENDPOINTS, encoding="utf-8")
    yield from ServerProcess(root, tmp_path_factory.mktemp("logs") / "serve.log").serving(timeout=120)


@pytest.fixture
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/openai/v1", api_key="none", max_retries=0, timeout=60)


def requests_of(server: ServerProcess, endpoint: str) -> dict[str, int]:
    shown = httpx.get(f"{server.url}/v2/endpoints/{endpoint}", timeout=10).json()
    return {v["name"]: v["requests"] for v in shown["variants"]}


def wait_counted(server: ServerProcess, endpoint: str, expected: dict[str, int]) -> None:
    """The counts reach ``expected`` (a generation is counted as it ends, on the server's event loop)."""
    deadline = time.monotonic() + 10
    while (got := requests_of(server, endpoint)) != expected:
        assert time.monotonic() < deadline, (got, expected)
        time.sleep(0.02)


def test_chat_completions_split_over_the_variants_and_say_which_answered(client, server):
    before = requests_of(server, "talk")
    seen = Counter()
    for _ in range(40):
        raw = client.chat.completions.with_raw_response.create(
            model="talk", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        assert raw.parse().choices[0].message.content == "<|im"
        assert raw.parse().model == "talk"
        seen[raw.headers["x-inferd-variant"]] += 1
    assert set(seen) == {"a", "b"}, seen  # 50/50: one variant missing 40 times in a row is 2 ** -39
    wait_counted(server, "talk", {name: before[name] + seen[name] for name in before})


@pytest.mark.parametrize("header", ["x-inferd-variant", "X-Amzn-SageMaker-Target-Variant",
                                    "azureml-model-deployment"])
def test_a_forced_variant_always_wins_on_completions_streamed_or_not(client, header):
    for _ in range(10):
        raw = client.completions.with_raw_response.create(model="talk", prompt="abc", max_tokens=2,
                                                          extra_headers={header: "b"})
        assert raw.headers["x-inferd-variant"] == "b"
        assert raw.parse().choices[0].text == "ab"
    with client.chat.completions.with_streaming_response.create(
            model="talk", messages=[{"role": "user", "content": "x"}], stream=True,
            extra_headers={header: "a"}) as stream:
        assert stream.headers["x-inferd-variant"] == "a"
        assert "data: [DONE]" in stream.read().decode()


def test_a_route_key_is_sticky_on_chat_completions(client):
    for user in range(6):
        landed = {client.chat.completions.with_raw_response.create(
            model="talk", messages=[{"role": "user", "content": "x"}], max_tokens=1,
            extra_headers={"x-inferd-route-key": f"user-{user}"}).headers["x-inferd-variant"] for _ in range(8)}
        assert len(landed) == 1, (user, landed)


def test_a_forced_variant_that_does_not_exist_is_404_naming_the_variants(client, server):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="talk", messages=[{"role": "user", "content": "x"}],
                                       extra_headers={"x-inferd-variant": "c"})
    assert "endpoint 'talk' has no variant 'c'; its variants: 'a', 'b'" in str(caught.value)
    generate = httpx.post(f"{server.url}/v2/models/talk/generate", json={"text_input": "x"},
                          headers={"x-inferd-variant": "c"}, timeout=10)
    assert generate.status_code == 404
    assert "'a', 'b'" in generate.json()["error"]
    assert httpx.get(f"{server.url}/v2/health/ready", timeout=10).status_code == 200


def test_triton_generate_and_generate_stream_name_the_endpoint(server):
    before = requests_of(server, "talk")
    with httpx.Client(base_url=server.url, timeout=30) as http:
        whole = http.post("/v2/models/talk/generate", json={"text_input": "hello", "parameters": {"max_tokens": 3}},
                          headers={"x-inferd-variant": "a"})
        assert whole.status_code == 200, whole.text
        assert whole.headers["x-inferd-variant"] == "a"
        assert whole.json()["text_output"] == "hel"
        with http.stream("POST", "/v2/models/talk/generate_stream", json={"text_input": "hello"},
                         headers={"x-inferd-variant": "b"}) as stream:
            assert stream.status_code == 200
            assert stream.headers["x-inferd-variant"] == "b"
            assert "text_output" in stream.read().decode()
        free = Counter(http.post("/v2/models/talk/generate", json={"text_input": "x"}).headers["x-inferd-variant"]
                       for _ in range(30))
        assert set(free) == {"a", "b"}, free
    wait_counted(server, "talk", {"a": before["a"] + 1 + free["a"], "b": before["b"] + 1 + free["b"]})


def test_embeddings_through_an_endpoint_come_from_one_variant(client, server):
    texts = [f"text number {i}" for i in range(10)]  # three V2 requests of 4 rows: all to the same variant
    before = requests_of(server, "embed")
    raw = client.embeddings.with_raw_response.create(model="embed", input=texts,
                                                     extra_headers={"x-inferd-variant": "large"})
    assert raw.headers["x-inferd-variant"] == "large"
    got = np.array([d.embedding for d in raw.parse().data], dtype=np.float32)
    np.testing.assert_allclose(got, np.stack([fake_vector(t) for t in texts]), rtol=1e-6)
    after = requests_of(server, "embed")
    assert after == {"small": before["small"], "large": before["large"] + 3}
    free = Counter(client.embeddings.with_raw_response.create(model="embed", input="x").headers["x-inferd-variant"]
                   for _ in range(30))
    assert set(free) == {"small", "large"}
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="embed", input="x", extra_headers={"x-inferd-variant": "medium"})


def test_generate_counts_errors_in_the_variant(tmp_path: Path):
    root = tmp_path / "models"
    write_echo_llm(root, "good", slots=2)
    write_echo_llm(root, "breaks", slots=2, fail_after=2)
    (root / "endpoints.toml").write_text(
        '[mixed]\nvariants = [{name = "ok", model = "good", weight = 1}, {name = "bad", model = "breaks", '
        'weight = 1}]\n', encoding="utf-8")
    with_server = ServerProcess(root, tmp_path / "serve.log")
    try:
        with_server.start(timeout=120)
        with httpx.Client(base_url=with_server.url, timeout=30) as http:
            failed = http.post("/v2/models/mixed/generate", json={"text_input": "long enough to fail"},
                               headers={"x-inferd-variant": "bad"})
            assert failed.status_code >= 400
            assert http.post("/v2/models/mixed/generate", json={"text_input": "fine"},
                             headers={"x-inferd-variant": "ok"}).status_code == 200
            deadline = time.monotonic() + 10
            while True:
                shown = {v["name"]: v for v in http.get("/v2/endpoints/mixed").json()["variants"]}
                if shown["bad"]["requests"] == 1 and shown["ok"]["requests"] == 1:
                    break
                assert time.monotonic() < deadline, shown
                time.sleep(0.02)
            assert shown["bad"]["errors"] == 1
            assert shown["ok"]["errors"] == 0
    finally:
        assert with_server.stop() == 0, with_server.log()
