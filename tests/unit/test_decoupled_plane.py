"""The DataPlane's one streaming entry (inferd.decoupled) over real python model folders: a decoupled model's
responses and final flag, its failures mid-stream, cancellation, the bounded queue, the refusal of unary calls,
and the other models (one response; a generative model's text) on the same entry."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest

from fakes import ADDER, DECOUPLED, STREAMER, write_model
from generative_models import write_echo_llm
from inferd.codecs.v2_body import V2Body
from inferd.config import ModelConfig
from inferd.dataplane import DataPlane
from inferd.decoupled import StreamResponse
from inferd.errors import ErrorCode, InferError
from inferd.inference import InferenceRequest, RequestInput
from inferd.repository import ModelRepository
from inferd.server.triton import config_to_json


@pytest.fixture
def plane(repo_root: Path) -> Iterator[DataPlane]:
    write_model(repo_root, "streamer", STREAMER, DECOUPLED)
    write_model(repo_root, "narrow", STREAMER, DECOUPLED + "\n[queue]\nmax_size = 1\n")
    write_model(repo_root, "adder", ADDER)
    write_echo_llm(repo_root, "echo")
    dataplane = DataPlane(ModelRepository(repo_root))
    asyncio.run(dataplane.start())
    yield dataplane
    dataplane.close()


def streamer(n: int, model: str = "streamer") -> InferenceRequest:
    return InferenceRequest(model, [RequestInput("n", "INT32", [1], [n])], id=f"req-{n}")


async def collect(plane: DataPlane, request: InferenceRequest) -> list[StreamResponse]:
    return [item async for item in plane.stream(request)]


def values(items: list[StreamResponse]) -> list[int]:
    return [int(item.response.outputs[0].data[0]) for item in items if item.response is not None]


def test_a_decoupled_model_sends_each_response_then_the_final_flag_alone(plane):
    items = asyncio.run(collect(plane, streamer(3)))
    assert values(items) == [0, 1, 2]
    assert [item.final for item in items] == [False, False, False, True]
    assert items[-1].response is None
    first = items[0].response
    assert (first.model_name, first.model_version, first.id) == ("streamer", "1", "req-3")
    assert (first.outputs[0].datatype, first.outputs[0].shape) == ("INT32", [1])
    stats = plane.statistics("streamer")[0].to_dict()
    assert stats["inference_stats"]["success"]["count"] == 1


def test_zero_responses_is_only_the_final_flag(plane):
    items = asyncio.run(collect(plane, streamer(0)))
    assert [(item.response, item.final) for item in items] == [(None, True)]


async def _fails_then_serves(plane: DataPlane, n: int) -> tuple[list[int], InferError, list[int]]:
    got: list[StreamResponse] = []

    async def gather() -> None:
        async for item in plane.stream(streamer(n)):
            got.append(item)

    with pytest.raises(InferError) as info:
        await gather()
    after = await collect(plane, streamer(2))
    return values(got), info.value, values(after)


def test_a_model_that_raises_mid_stream_fails_its_request_after_its_responses_and_the_model_serves_on(plane):
    sent, error, after = asyncio.run(_fails_then_serves(plane, -2))
    assert sent == [0, 1]
    assert error.code is ErrorCode.INTERNAL
    assert "broke after two responses" in error.message
    assert after == [0, 1]


def test_a_response_that_breaks_the_signature_is_an_internal_error(plane):
    sent, error, after = asyncio.run(_fails_then_serves(plane, -3))
    assert sent == []
    assert error.code is ErrorCode.INTERNAL
    assert "model output 'i' has shape [2, 2]" in error.message
    assert after == [0, 1]


def _closed_count(folder: Path) -> int:
    marker = folder / "1" / "closed"
    for _ in range(500):  # the model's thread closes its generator at its next response
        if marker.exists():
            return int(marker.read_text())
        time.sleep(0.01)
    raise AssertionError("the model's generator was never closed")


async def _take(plane: DataPlane, request: InferenceRequest, count: int) -> list[int]:
    taken = []
    responses = plane.stream(request)
    async for item in responses:
        taken.append(int(item.response.outputs[0].data[0]))
        if len(taken) == count:
            break
    await responses.aclose()
    return taken


def test_closing_the_stream_stops_the_model(plane, repo_root):
    assert asyncio.run(_take(plane, streamer(-1), 3)) == [0, 1, 2]
    assert _closed_count(repo_root / "streamer") >= 3
    assert values(asyncio.run(collect(plane, streamer(1)))) == [0]  # the instance is free again


async def _queue_full(plane: DataPlane) -> tuple[InferError, list[int]]:
    running = plane.stream(streamer(-1, "narrow"))
    await running.__anext__()  # runs: the one instance is busy
    waiting = asyncio.ensure_future(collect(plane, streamer(1, "narrow")))  # queued: the queue holds one
    await asyncio.sleep(0.05)
    with pytest.raises(InferError) as refused:
        await collect(plane, streamer(1, "narrow"))
    await running.aclose()
    return refused.value, values(await waiting)


def test_a_decoupled_model_is_under_the_bounded_queue(plane):
    refused, queued = asyncio.run(_queue_full(plane))
    assert refused.code is ErrorCode.UNAVAILABLE
    assert "queue is full" in refused.message
    assert queued == [0]


def test_unary_calls_of_a_decoupled_model_get_tritons_refusal(plane):
    with pytest.raises(InferError) as general:
        asyncio.run(plane.infer(streamer(1)))
    assert general.value.code is ErrorCode.UNIMPLEMENTED
    assert "doesn't support models with decoupled transaction policy" in general.value.message
    body = orjson.dumps({"inputs": [{"name": "n", "datatype": "INT32", "shape": [1], "data": [1]}]})
    with pytest.raises(InferError) as http:
        asyncio.run(plane.infer(V2Body(body, None, "streamer", None)))
    assert http.value.message.startswith("HTTP end point doesn't support models with decoupled transaction policy")


def test_any_other_model_answers_the_stream_once_final(plane):
    a = RequestInput("a", "FP32", [1, 3], [1, 2, 3])
    items = asyncio.run(collect(plane, InferenceRequest("adder", [a, RequestInput("b", "FP32", [1, 3], [1, 1, 1])])))
    assert [item.final for item in items] == [True]
    np.testing.assert_array_equal(items[0].response.outputs[0].data, [[2, 3, 4]])


def test_a_generative_model_streams_its_text_as_text_output_responses(plane):
    prompt = np.array([b"hello"], dtype=object)
    request = InferenceRequest("echo", [RequestInput("text_input", "BYTES", [1], prompt)],
                               parameters={"max_tokens": 5, "sequence_id": 0})
    items = asyncio.run(collect(plane, request))
    text = b"".join(item.response.outputs[0].data[0] for item in items)
    assert text == b"hello"
    assert [item.final for item in items][-1] is True
    assert not any(item.final for item in items[:-1])
    assert items[-1].response.parameters["finish_reason"] == "length"


def test_a_generative_stream_refuses_an_unknown_input(plane):
    request = InferenceRequest("echo", [RequestInput("prompt", "BYTES", [1], np.array([b"x"], dtype=object))])
    with pytest.raises(InferError, match="unknown input 'prompt'"):
        asyncio.run(collect(plane, request))


def test_model_config_reports_the_transaction_policy(plane):
    assert config_to_json(plane.model_config("streamer"))["model_transaction_policy"] == {"decoupled": True}
    assert config_to_json(plane.model_config("adder"))["model_transaction_policy"] == {"decoupled": False}


@pytest.mark.parametrize("extra", ['[batching]\nenabled = true', '[instances]\nkind = "process"',
                                   '[cache]\nenabled = true'])
def test_what_a_decoupled_model_cannot_have(extra):
    import tomllib

    with pytest.raises(ValueError, match="decoupled = true"):
        ModelConfig.model_validate(tomllib.loads(DECOUPLED + extra))


def test_a_decoupled_model_whose_predict_is_no_generator_fails_its_requests(repo_root):
    write_model(repo_root, "plain", ADDER, DECOUPLED)
    dataplane = DataPlane(ModelRepository(repo_root))
    asyncio.run(dataplane.start())
    try:
        a = RequestInput("a", "FP32", [1, 3], [1, 2, 3])
        request = InferenceRequest("plain", [a, RequestInput("b", "FP32", [1, 3], [1, 1, 1])])
        with pytest.raises(InferError, match="a decoupled model's predict must be a generator"):
            asyncio.run(collect(dataplane, request))
    finally:
        dataplane.close()
