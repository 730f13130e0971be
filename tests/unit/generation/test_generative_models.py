"""Generative model folders in the repository: detection, model.toml limits, the DataPlane's generate path and
the tensor face (text_input -> text_output) that the V2, gRPC, async and batch routes reach."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from generative_models import write_echo_llm
from inferd.artifacts import resolve_artifact
from inferd.config import ModelConfig
from inferd.dataplane import DataPlane
from inferd.errors import ErrorCode, InferError
from inferd.generation.request import GenerationRequest
from inferd.inference import InferenceRequest, RequestInput
from inferd.repository import ModelRepository


def test_a_gguf_file_under_its_published_name_is_a_llama_cpp_model(tmp_path):
    (tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"GGUF")
    source = resolve_artifact(1, tmp_path, ModelConfig())
    assert source.runtime.name == "llama_cpp"
    assert source.runtime.generative
    assert source.artifact.name == "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture
def plane(repo_root):
    write_echo_llm(repo_root, "echo", slots=2, context=64, max_tokens=8)
    dataplane = DataPlane(ModelRepository(repo_root))
    asyncio.run(dataplane.start())
    yield dataplane
    dataplane.close()


async def _generate(plane, **fields):
    events = await plane.generate(GenerationRequest("echo", **fields))
    return [event async for event in events]


def test_generate_streams_events_and_the_model_toml_limits_apply(plane):
    events = asyncio.run(_generate(plane, prompt="abcdefghijkl"))
    assert "".join(e.text for e in events) == "abcdefgh"  # max_tokens = 8 from model.toml
    assert events[-1].finish_reason == "length"
    generator = plane.generator("echo")
    assert (generator.engine.slots, generator.context) == (2, 64)


def test_generate_refuses_what_does_not_fit_before_anything_runs(plane):
    with pytest.raises(InferError, match="context of 64"):
        asyncio.run(_generate(plane, prompt="x" * 60, max_tokens=10))
    with pytest.raises(InferError, match="role"):
        asyncio.run(_generate(plane, messages=[{"role": "tool", "content": "x"}]))


def test_a_tensor_model_is_not_generative(plane, repo_root):
    from fakes import ADDER, write_model

    write_model(repo_root, "adder", ADDER)
    asyncio.run(plane.load("adder"))
    with pytest.raises(InferError) as info:
        asyncio.run(plane.generate(GenerationRequest("adder", prompt="x")))
    assert info.value.code is ErrorCode.INVALID_ARGUMENT
    assert "not a generative model" in info.value.message


def test_the_tensor_face_answers_v2_infer_through_the_one_path(plane):
    text = RequestInput("text_input", "BYTES", [1], np.array([b"hello"], dtype=object))
    response = asyncio.run(plane.infer(InferenceRequest("echo", [text])))
    assert response.outputs[0].data.tolist() == [b"hello"]


def test_unloading_stops_the_generation_scheduler(plane):
    generator = plane.generator("echo")
    asyncio.run(plane.unload("echo"))
    with pytest.raises(InferError) as info:
        generator.submit([1, 2], 2, generator.limits.sampling, (), lambda _: None)
    assert info.value.code is ErrorCode.UNAVAILABLE


def test_the_tensor_face_generates_each_row_side_by_side(plane):
    prompts = [f"row {i}".encode() for i in range(5)]
    text = RequestInput("text_input", "BYTES", [5], np.array(prompts, dtype=object))
    response = asyncio.run(plane.infer(InferenceRequest("echo", [text])))
    assert response.outputs[0].data.tolist() == prompts


def test_a_batch_job_over_json_lines_of_prompts(repo_root, tmp_path):
    import json

    from inferd.batch import BatchOptions, run_batch

    write_echo_llm(repo_root, "echo", slots=2, context=64)
    source = tmp_path / "prompts.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text_input": f"prompt {i}"}) + "\n" for i in range(7)))
    run_batch(repo_root, "echo", source, tmp_path / "out", BatchOptions(key="id"))
    lines = [json.loads(line) for line in (tmp_path / "out" / "prompts.jsonl").read_text().splitlines()]
    assert lines == [{"id": i, "text_output": f"prompt {i}"} for i in range(7)]


def test_the_model_toml_default_sampling_applies_to_requests_that_set_none(repo_root):
    """At temperature 2 the echo model repeats each byte with p ≈ 0.61, so 60 echoed bytes in a row do not happen
    by chance; top_p 0.5 keeps only that token; a request's own temperature 0 overrides the model's default."""
    write_echo_llm(repo_root, "hot", context=128, max_tokens=64, temperature=2.0)
    write_echo_llm(repo_root, "nucleus", context=128, max_tokens=64, temperature=2.0, top_p=0.5)
    prompt = "".join(chr(65 + i % 26) for i in range(60))

    async def text(model: str, **fields: object) -> str:
        events = await plane.generate(GenerationRequest(model, prompt=prompt, seed=7, **fields))
        return "".join([event.text async for event in events])

    plane = DataPlane(ModelRepository(repo_root))
    try:
        asyncio.run(plane.start())
        assert asyncio.run(text("hot")) != prompt, "the model's temperature 2 applies"
        assert asyncio.run(text("hot", temperature=0.0)) == prompt, "the request's temperature wins"
        assert asyncio.run(text("nucleus")) == prompt, "the model's top_p 0.5 applies"
        assert asyncio.run(text("nucleus", top_p=1.0)) != prompt, "the request's top_p wins"
    finally:
        plane.close()


def test_a_generative_model_is_cached_only_when_greedy(repo_root):
    """Sampled text (temperature above 0: the tensor face sets no seed) is never cached: such a model.toml is a
    clear error at load; a greedy one is cached, and its repeated prompt is a cache hit."""
    from inferd.response_cache import ResponseCache

    sampled = write_echo_llm(repo_root, "sampled", temperature=0.7)
    (sampled / "model.toml").write_text((sampled / "model.toml").read_text() + "\n[cache]\nenabled = true\n")
    greedy = write_echo_llm(repo_root, "greedy", max_tokens=4)
    (greedy / "model.toml").write_text((greedy / "model.toml").read_text() + "\n[cache]\nenabled = true\n")
    plane = DataPlane(ModelRepository(repo_root))
    plane.cache = ResponseCache(1 << 20, 0.0)
    asyncio.run(plane.start())
    try:
        reasons = {entry.name: entry.reason for entry in plane.repository_index()}
        assert "[cache] enabled = true needs [generation] temperature = 0" in reasons["sampled"]
        assert "its temperature is 0.7" in reasons["sampled"]
        text = RequestInput("text_input", "BYTES", [1], np.array([b"hello"], dtype=object))
        for _ in range(2):
            response = asyncio.run(plane.infer(InferenceRequest("greedy", [text])))
            assert response.outputs[0].data.tolist() == [b"hell"]
        stats = plane.repository.get("greedy", None).stats
        assert (stats.cache_hit.count, stats.cache_miss.count) == (1, 1)
    finally:
        plane.close()
