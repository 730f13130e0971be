"""Generative models off the synchronous routes, in process (the real app, DataPlane, SQLite job store and worker;
httpx over ASGI) with the echo language model: ``infer-async`` of a prompt and of a chat request answers what
``/generate`` answers, and under model control on-demand ``/openai/v1/models`` lists the models a request would
load, and a chat completion loads one; ``inferd batch run`` over an OpenAI batch input file."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from cli_runner import inferd
from generative_models import write_echo_llm
from inferd.dataplane import DataPlane
from inferd.jobs.service import AsyncConfig, AsyncService
from inferd.on_demand import DemandPolicy, ModelControl
from inferd.repository import ModelRepository
from inferd.server.rest.app import build_app
from inferd.settings import ServerSettings

Body = Callable[[httpx.AsyncClient, DataPlane], Awaitable[Any]]
CHAT = [{"role": "user", "content": "hi"}]
CHATML = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def _serve(root: Path, state: Path, body: Body, control: ModelControl | None = None) -> Any:
    async def main() -> Any:
        plane = DataPlane(ModelRepository(root), control=control)
        await plane.start()
        service = AsyncService(plane, AsyncConfig(state, retry_backoff_s=0.01))
        await service.open()
        service.start()
        app: Any = build_app(plane, ServerSettings(repository=root), service)
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://inferd") as client:
                return await body(client, plane)
        finally:
            await service.stop()
            await plane.stop()
            plane.close()

    return asyncio.run(main())


async def _result(client: httpx.AsyncClient, job_id: str) -> httpx.Response:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status = (await client.get(f"/v2/jobs/{job_id}")).json()["status"]
        if status in ("succeeded", "failed"):
            return await client.get(f"/v2/jobs/{job_id}/result")
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {job_id} did not finish")


@pytest.fixture
def root(repo_root: Path) -> Path:
    write_echo_llm(repo_root, "echo", slots=2, context=256, max_tokens=200)
    return repo_root


@pytest.mark.parametrize("request_body", [
    {"text_input": "hello there", "parameters": {"max_tokens": 5}},
    {"messages": CHAT, "parameters": {"temperature": 0}},
], ids=["prompt", "chat"])
def test_infer_async_of_a_generate_request_answers_what_generate_answers(root, tmp_path, request_body):
    async def body(client: httpx.AsyncClient, _plane: DataPlane) -> None:
        accepted = await client.post("/v2/models/echo/infer-async", json=request_body)
        assert accepted.status_code == 202, accepted.text
        result = await _result(client, accepted.json()["id"])
        synchronous = await client.post("/v2/models/echo/generate", json=request_body)
        assert result.status_code == 200, result.text
        assert result.json() == synchronous.json()
        expected = "hello" if "text_input" in request_body else CHATML
        assert result.json()["text_output"] == expected

    _serve(root, tmp_path / "state", body)


def test_infer_async_of_a_bad_generate_request_fails_with_the_reason(root, tmp_path):
    async def body(client: httpx.AsyncClient, _plane: DataPlane) -> None:
        bad = {"messages": [{"role": "robot", "content": "hi"}]}
        accepted = await client.post("/v2/models/echo/infer-async", json=bad)
        result = await _result(client, accepted.json()["id"])
        assert result.status_code == 400
        assert "role must be one of" in result.json()["error"]
        too_long = {"text_input": "x", "parameters": {"max_tokens": 1000}}
        result = await _result(client, (await client.post("/v2/models/echo/infer-async", json=too_long)).json()["id"])
        assert result.status_code == 400
        assert "context of 256" in result.json()["error"]

    _serve(root, tmp_path / "state", body)


def test_on_demand_models_are_listed_unloaded_and_a_chat_completion_loads_its_model(root, tmp_path):
    async def body(client: httpx.AsyncClient, plane: DataPlane) -> None:
        listed = await client.get("/openai/v1/models")
        assert [m["id"] for m in listed.json()["data"]] == ["echo"]
        assert plane.repository.known("echo") is None  # listing loads nothing
        assert (await client.get("/openai/v1/models/echo")).json()["id"] == "echo"
        reply = await client.post("/openai/v1/chat/completions",
                                  json={"model": "echo", "messages": CHAT, "max_tokens": 3})
        assert reply.status_code == 200, reply.text
        assert reply.json()["choices"][0]["message"]["content"] == CHATML[:3]
        version = plane.repository.get("echo", None)
        assert version.in_flight == 0  # the generation counted itself out when it ended
        assert [m["id"] for m in (await client.get("/openai/v1/models")).json()["data"]] == ["echo"]

    _serve(root, tmp_path / "state", body, ModelControl(on_demand=DemandPolicy()))


def test_inferd_batch_run_answers_an_openai_batch_file_and_says_where(root, tmp_path):
    requests = tmp_path / "requests.jsonl"
    lines = [{"custom_id": f"q{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"messages": [{"role": "user", "content": f"question {i}"}], "max_tokens": 8}}
             for i in range(5)]
    requests.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    done = inferd("batch", "run", str(root), "echo", "--input", str(requests), "--output", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr + done.stdout
    answers = tmp_path / "out" / "requests_output.jsonl"
    assert str(answers) in done.stdout.replace("\n", "")
    written = [orjson.loads(line) for line in answers.read_bytes().splitlines()]
    assert [w["custom_id"] for w in written] == [f"q{i}" for i in range(5)]
    assert {w["response"]["status_code"] for w in written} == {200}
    assert written[0]["response"]["body"]["choices"][0]["message"]["content"] == CHATML[:8]
