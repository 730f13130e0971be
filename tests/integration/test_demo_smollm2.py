"""The demo's optional chat model (skipped without the ``llm`` extra): built only when asked, and it answers its
own example request through the V2 infer route's tensor face."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from inferd.examples import smollm2

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not smollm2.available(), reason="the llm extra is not installed")]


def test_the_demo_serves_smollm2_only_when_asked(tmp_path):
    from inferd.dataplane import DataPlane
    from inferd.examples.build import _build_one
    from inferd.inference import InferenceRequest, RequestInput
    from inferd.repository import ModelRepository

    example = _build_one(smollm2, tmp_path / "models" / smollm2.NAME)
    plane = DataPlane(ModelRepository(tmp_path / "models"))
    try:
        asyncio.run(plane.start())
        text = RequestInput("text_input", "BYTES", [1], np.array([p.encode() for p in example.request["text_input"]],
                                                                 dtype=object))
        response = asyncio.run(plane.infer(InferenceRequest(smollm2.NAME, [text])))
        sentence = example.explain({"text_output": response.outputs[0].data})
        assert sentence.startswith(repr(smollm2.PROMPT))
        assert len(sentence) > len(repr(smollm2.PROMPT)) + 5
    finally:
        plane.close()


def test_the_default_demo_repository_leaves_it_out(tmp_path):
    from inferd.examples.build import EXAMPLES, OPTIONAL_EXAMPLES

    assert smollm2 in OPTIONAL_EXAMPLES
    assert smollm2 not in EXAMPLES
