"""POST /openai/v1/embeddings over the real ASGI app and a real DataPlane, with a small fake embeddings model
(a Python model keeping the contract: BYTES ``text`` in, FP32 ``embedding`` and INT64 ``token_count`` out)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from asgi_client import AppClient
from embedding_models import FAKE_BATCH, fake_vector, write_fake_embedder
from inferd.dataplane import DataPlane
from inferd.repository import ModelRepository
from inferd.server.openai.embeddings import CHUNKS_IN_FLIGHT, MAX_INPUT_CHARS, MAX_INPUTS
from inferd.server.rest.app import build_app
from inferd.settings import ServerSettings

URL = "/openai/v1/embeddings"


@pytest.fixture
def plane(python_repo: Path) -> Iterator[DataPlane]:
    write_fake_embedder(python_repo)
    dataplane = DataPlane(ModelRepository(python_repo))
    asyncio.run(dataplane.start())
    yield dataplane
    dataplane.close()


@pytest.fixture
def client(plane: DataPlane, python_repo: Path) -> AppClient:
    return AppClient(build_app(plane, ServerSettings(repository=python_repo)))


def refused(reply, status: int = 400) -> dict:  # type: ignore[no-untyped-def]
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def test_one_string(client: AppClient):
    reply = client.post(URL, json={"model": "embedder", "input": "hello world", "user": "someone"})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["object"] == "list"
    assert body["model"] == "embedder"
    assert body["usage"] == {"prompt_tokens": 4, "total_tokens": 4}
    [item] = body["data"]
    assert (item["object"], item["index"]) == ("embedding", 0)
    np.testing.assert_allclose(item["embedding"], fake_vector("hello world"), atol=1e-6)


def test_a_list_longer_than_the_batch_limit_comes_back_in_order(plane: DataPlane, client: AppClient):
    texts = [f"text number {i} " + "x" * i for i in range(3 * FAKE_BATCH + 1)]
    reply = client.post(URL, json={"model": "embedder", "input": texts})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert [d["index"] for d in body["data"]] == list(range(len(texts)))
    np.testing.assert_allclose([d["embedding"] for d in body["data"]], [fake_vector(t) for t in texts], atol=1e-6)
    assert body["usage"]["prompt_tokens"] == sum(len(t.split()) + 2 for t in texts)
    assert plane.statistics("embedder")[0].to_dict()["inference_count"] == len(texts)  # through the DataPlane


def test_base64_is_little_endian_float32(client: AppClient):
    reply = client.post(URL, json={"model": "embedder", "input": ["hi", "hello world"], "encoding_format": "base64"})
    rows = [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in reply.json()["data"]]
    np.testing.assert_allclose(rows, [fake_vector("hi"), fake_vector("hello world")], atol=1e-7)


def test_dimensions_equal_to_the_models_is_accepted(client: AppClient):
    assert client.post(URL, json={"model": "embedder", "input": "hi", "dimensions": 4}).status_code == 200
    error = refused(client.post(URL, json={"model": "embedder", "input": "hi", "dimensions": 2}))
    assert error["param"] == "dimensions"
    assert "the model's own, 4" in error["message"]


@pytest.mark.parametrize(("body", "param", "message"), [
    ({"model": "embedder", "input": ""}, "input", "'input' must not be an empty string"),
    ({"model": "embedder", "input": []}, "input", "'input' must not be an empty list"),
    ({"model": "embedder", "input": ["hi"] * 10_000}, "input",
     f"'input' holds 10000 items, over the limit of {MAX_INPUTS} per request"),
    ({"model": "embedder", "input": ["hi", 3.5]}, "input", "'input[1]' must be a string, not a number"),
    ({"model": "embedder", "input": ["hi", None]}, "input", "'input[1]' must be a string, not null"),
    ({"model": "embedder", "input": ["hi", ""]}, "input", "'input[1]' must not be an empty string"),
    ({"model": "embedder", "input": [1, 2, 3]}, "input", "'input' as token ids is not supported"),
    ({"model": "embedder", "input": [[1, 2], [3]]}, "input", "'input' as token ids is not supported"),
    ({"model": "embedder", "input": {"text": "hi"}}, "input", "must be a string or a list of strings, not an object"),
    ({"model": "embedder", "input": "x" * (MAX_INPUT_CHARS + 1)}, "input", f"over the limit of {MAX_INPUT_CHARS}"),
    ({"model": "embedder"}, "input", "'input' is required"),
    ({"input": "hi"}, "model", "'model' is required"),
    ({"model": 7, "input": "hi"}, "model", "'model' must be a string"),
    ({"model": "embedder", "input": "hi", "encoding_format": "hex"}, "encoding_format", "must be one of"),
    ({"model": "embedder", "input": "hi", "dimensions": 0}, "dimensions", "must be at least 1"),
    ({"model": "adder", "input": "hi"}, "model", "model 'adder' is not an embeddings model"),
])
def test_bad_requests_name_the_field(client: AppClient, body, param, message):
    error = refused(client.post(URL, json=body))
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert message in error["message"]


@pytest.mark.parametrize(("raw", "message"), [
    (b'{"model": "embedder", "input": "\xff\xfe"}', "not valid JSON"),
    (b'{"model": "embedder", "input": "\\ud800"}', "not valid"),
    (b'{"model": "embedder", ', "not valid JSON"),
    (b"", "the request body is empty"),
    (b'["hi"]', "must be a JSON object"),
])
def test_bodies_that_are_not_valid_json_text(client: AppClient, raw, message):
    error = refused(client.post(URL, content=raw, headers={"content-type": "application/json"}))
    assert message in error["message"]


def test_an_unknown_model_is_a_404(client: AppClient):
    error = refused(client.post(URL, json={"model": "nope", "input": "hi"}), 404)
    assert (error["param"], error["code"]) == ("model", "model_not_found")


def test_a_body_over_the_limit_is_a_413_in_openai_form(plane: DataPlane, python_repo: Path):
    client = AppClient(build_app(plane, ServerSettings(repository=python_repo, max_body_bytes=1024)))
    error = refused(client.post(URL, json={"model": "embedder", "input": "x" * 2000}), 413)
    assert "max_body_bytes" in error["message"]


def test_a_model_that_fails_is_a_500_and_the_server_keeps_serving(python_repo: Path, tmp_path: Path):
    from fakes import write_model

    write_model(python_repo, "crashing", """
import numpy as np

class Model:
    inputs = [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    outputs = [{"name": "embedding", "datatype": "FP32", "shape": [-1, 2]}]

    def predict(self, inputs):
        if any(t == b"boom" for t in inputs["text"]):
            raise RuntimeError("kaboom")
        return {"embedding": np.ones((len(inputs["text"]), 2), dtype=np.float32)}
""")
    plane = DataPlane(ModelRepository(python_repo))
    asyncio.run(plane.start())
    try:
        client = AppClient(build_app(plane, ServerSettings(repository=python_repo)))
        error = refused(client.post(URL, json={"model": "crashing", "input": ["fine", "boom"]}), 500)
        assert error["type"] == "server_error"
        assert "kaboom" in error["message"]
        fine = client.post(URL, json={"model": "crashing", "input": ["fine"]})
        assert fine.status_code == 200
        assert fine.json()["usage"] == {"prompt_tokens": 0, "total_tokens": 0}  # no token_count output
    finally:
        plane.close()


SLOW_ONE_AT_A_TIME = """
import time
import numpy as np

class Model:
    inputs = [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    outputs = [{"name": "embedding", "datatype": "FP32", "shape": [-1, 2]}]

    def predict(self, inputs):
        time.sleep(0.01)
        return {"embedding": np.full((len(inputs["text"]), 2), len(inputs["text"][0]), dtype=np.float32)}
"""


@pytest.mark.parametrize(("queue", "status"), [(4, 200), (1, 503)])
def test_a_request_of_many_batches_keeps_within_the_queue(python_repo: Path, queue: int, status: int):
    """12 texts on a model taking one per batch: at most CHUNKS_IN_FLIGHT of them queue at once, so a queue of
    that size holds them all; a smaller queue refuses in OpenAI's form with Retry-After."""
    from fakes import write_model

    assert CHUNKS_IN_FLIGHT <= 4
    write_model(python_repo, "one", SLOW_ONE_AT_A_TIME,
                toml=f"max_batch_size = 1\n[batching]\nenabled = false\n[queue]\nmax_size = {queue}\n")
    plane = DataPlane(ModelRepository(python_repo))
    asyncio.run(plane.start())
    try:
        client = AppClient(build_app(plane, ServerSettings(repository=python_repo)))
        texts = ["x" * (i + 1) for i in range(12)]
        reply = client.post(URL, json={"model": "one", "input": texts})
        assert reply.status_code == status, reply.text
        if status == 200:
            assert [d["embedding"][0] for d in reply.json()["data"]] == [len(t) for t in texts]
        else:
            assert int(reply.headers["retry-after"]) >= 1
            error = refused(reply, 503)
            assert error["type"] == "server_error"
            assert "queue" in error["message"]
    finally:
        plane.close()
